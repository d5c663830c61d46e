"""Review findings on the demo plumbing, each proved against the real clients and the stub server."""

from __future__ import annotations

import pytest

from agentmeter.demo import open_clients


@pytest.mark.usefixtures("no_live_keys")
def test_offline_clients_release_their_loopback_connections() -> None:
    # open_clients gives the TavilyClient its own requests.Session; TavilyClient.close() never closes a
    # session it was given, so open_clients must, or every demo leaks its pooled sockets.
    with open_clients(offline=True, seed=1) as clients:
        session = clients.tavily.session
        clients.tavily.search("Acme Corp latest news")
        assert session.adapters["http://"].poolmanager.pools  # a pooled connection is open
    assert not session.adapters["http://"].poolmanager.pools
