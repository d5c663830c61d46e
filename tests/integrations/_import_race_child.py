"""Run in a fresh interpreter by test_import_race.py: threads build OpenAI clients in a tight loop while
the exporter starts and prices its first runs; prints one JSON line with what happened.

``python _import_race_child.py MODE`` where MODE says how the program sets agentmeter up:

* ``instrument``: ``agentmeter.integrations.openai.instrument()`` at start-up, then real requests to the
  loopback stub server;
* ``configure``: ``agentmeter.configure()`` at start-up, then calls recorded by hand with ``track_call``;
* ``nothing``: zero setup, calls recorded by hand;
* ``alone``: zero setup, calls recorded by hand, and no other thread (no client builders, no stub server).

Every module imported while the threads run is logged with the thread that imported it (a ``sys.meta_path``
finder that only watches), so the parent can check that agentmeter's own threads imported nothing.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

_imports: list[tuple[str, str]] = []


class _Watch:
    """A meta-path finder that records who imports what, then lets the real finders do the work."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        _imports.append((threading.current_thread().name, name))
        return None


def main(mode: str) -> dict[str, Any]:
    import openai  # what the user's program imports at the top

    import agentmeter
    from agentmeter.stubs import StubServer

    server = StubServer(seed=1)
    base_url = server.start().openai if mode != "alone" else "http://127.0.0.1:9/v1"
    if mode == "instrument":
        import agentmeter.integrations.openai as am_openai

        am_openai.instrument()
    elif mode == "configure":
        agentmeter.configure()

    sys.meta_path.insert(0, _Watch())
    errors: list[str] = []
    stop = threading.Event()
    builders = 0 if mode == "alone" else 4
    start = threading.Barrier(builders + 1)

    def build_clients() -> None:
        start.wait()
        while not stop.is_set():
            try:
                openai.OpenAI(api_key="sk-stub", base_url=base_url)
                openai.AsyncOpenAI(api_key="sk-stub", base_url=base_url)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return

    threads = [threading.Thread(target=build_clients, name=f"user-{i}") for i in range(builders)]
    for t in threads:
        t.start()
    start.wait()
    try:
        for i in range(3):
            with agentmeter.track_run(f"run-{i}"):
                if mode == "instrument":
                    client = openai.OpenAI(api_key="sk-stub", base_url=base_url)
                    client.chat.completions.create(model="gpt-4o-mini",
                                                   messages=[{"role": "user", "content": "hi"}])
                else:
                    with agentmeter.track_call("openai", "chat.completions", model="gpt-4o-mini") as call:
                        call.record_usage(input_tokens=1200, output_tokens=80)
            flushed = agentmeter.flush(timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Watch)]
    store = agentmeter.flush(timeout=60)
    import sqlite3

    db = sqlite3.connect(os.environ["AGENTMETER_DB"])  # the parent points the local store there
    priced = [row[0] for row in db.execute("SELECT priced FROM api_calls ORDER BY started_at")]
    if mode != "alone":
        server.stop()
    return {
        "errors": errors,
        "background_imports": sorted({name for thread, name in _imports if thread.startswith("agentmeter-")}),
        "flushed": bool(flushed.ok and store.ok),
        "priced": priced,
        "openai": openai.__version__,
        "stats": {k: v for k, v in agentmeter.stats().as_dict().items() if k.startswith("unpriced")},
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
