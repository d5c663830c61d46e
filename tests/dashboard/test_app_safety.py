"""What users and their agents wrote is shown as text, never as markdown or HTML; a failing view shows a
one-line cause in the error panel, never a traceback; an unreachable source shows a one-line cause, the
details in an expander and a retry."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from agentmeter.queries.local import LocalSource
from agentmeter.queries.mongodb import MongoSource

from .._servers import free_port
from ._apptest import SECTIONS, VIEWS, app, metrics, open_section
from .conftest import USER_STRINGS, mongo_of, payload, seed_hostile, seed_runs

#: Streamlit's markdown is CommonMark plus GitHub extensions and its own directives
_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def markdown_bodies(at: AppTest) -> list[str]:
    """Every text the page hands to Streamlit's markdown renderer."""
    bodies: list[str] = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader"):
        bodies += [str(e.value) for e in at.get(kind)]
    for m in at.metric:
        bodies += [str(m.label), str(m.value)]
    bodies += [str(e.proto.label) for e in at.get("expander")] + [str(t.label) for t in at.tabs]
    return bodies


def literal_texts(at: AppTest) -> str:
    """Everything the page shows as plain text: code blocks, tables, option lists."""
    parts = [str(c.value) for c in at.code] + [str(t.value) for t in at.text]
    for df in at.dataframe:
        parts += [str(v) for v in df.value.astype(str).to_numpy().ravel()] + [str(c) for c in df.value.columns]
    for box in (*at.selectbox, *at.multiselect):
        parts += [str(o) for o in box.options]
    return "\n".join(parts)


def check_page_is_literal(at: AppTest, port: int = 9) -> None:
    for body in markdown_bodies(at):
        rendered = _MD.render(body)
        assert "<img" not in rendered and "<strong>bold-" not in rendered, body
        assert f"127.0.0.1:{port}" not in re.findall(r'href="([^"]*)"', rendered), body
        if "beacon-" in body:  # a user string in markdown must read exactly as written
            text = html.unescape(re.sub(r"<[^>]+>", "", rendered))
            assert any(payload(w, port) in text for w in USER_STRINGS), (body, text)
        assert ":red[red-" not in body or "\\:red\\[red-" in body, body  # no Streamlit colour directive


def stored_scores(db: Path) -> list[dict[str, Any]]:
    """The score rows of the local store ``db``."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM run_scores")]


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    db = tmp_path / "hostile.db"
    return db, seed_hostile(db)


@pytest.mark.parametrize("kind", ["local", "mongodb"])
def test_every_user_string_is_shown_as_literal_text(kind: str, hostile: tuple[Path, list[dict[str, Any]]]) -> None:
    db, docs = hostile
    source = LocalSource(db) if kind == "local" else MongoSource(mongo_of(docs, stored_scores(db)))
    at = app(source).run()
    shown: list[str] = []

    def every_section(view: str) -> None:  # each tab of the view open in turn (a closed one draws nothing)
        for label in SECTIONS[view][1]:
            open_section(at, label)
            assert not at.exception, (view, label, [e.value for e in at.exception])
            check_page_is_literal(at)
            shown.append(literal_texts(at))

    for view in VIEWS:
        at.sidebar.radio(key="view").set_value(view).run()
        if view != "Run explorer":
            every_section(view)
            continue
        for doc in docs:
            at.selectbox(key="run_pick").set_value(doc["run_id"]).run()
            every_section(view)
    everything = "\n".join(shown)
    # inside JSON (metadata, captured values) a string reads as JSON writes it: quotes escaped
    missing = [w for w in USER_STRINGS if payload(w) not in everything and json.dumps(payload(w)) not in everything]
    assert missing == [], f"user strings not shown literally anywhere: {missing}"


class _Broken(LocalSource):
    """A source whose Performance and Cost queries fail the way a bug or a driver would."""

    def latency_over_time(self, f: Any, bucket: str = "day") -> Any:
        raise RuntimeError("the disk is on fire\n  File \"x.py\", line 3, in latency_over_time")

    def cost_over_time(self, f: Any, bucket: str = "day") -> Any:
        raise KeyError("cost_usd")


@pytest.mark.parametrize(("view", "cause"), [("Performance", "RuntimeError: the disk is on fire"),
                                             ("Cost", "KeyError: 'cost_usd'")])
def test_an_exception_inside_a_view_is_a_one_line_cause_in_the_error_panel(
    view: str, cause: str, seeded: tuple[Path, list[dict[str, Any]]]
) -> None:
    at = app(_Broken(seeded[0])).run()
    at.sidebar.radio(key="view").set_value(view).run()
    assert not at.exception, [e.value for e in at.exception]  # no traceback element
    (panel,) = at.error
    assert panel.value.splitlines()[0].endswith(cause), panel.value
    assert "\n" not in panel.value.strip()
    page = " ".join([*markdown_bodies(at), literal_texts(at)])
    assert "Traceback" not in page and "line 3" not in page
    at.sidebar.radio(key="view").set_value("Health").run()  # the other views still work
    assert not at.error and int(metrics(at)["Runs"]) == len(seeded[1])


def test_unreachable_mongodb_shows_a_one_line_cause_details_and_a_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nobody listens here
    monkeypatch.setenv("AGENTMETER_DASHBOARD_SOURCE", "mongodb")
    monkeypatch.setenv("AGENTMETER_MONGODB_URI", f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300")
    at = app().run()  # the real pymongo driver, failing server selection
    assert not at.exception
    (panel,) = at.error
    first = panel.value.strip().splitlines()[0]
    assert "Cannot reach the mongodb source" in first and "Connection refused" in panel.value, panel.value
    assert "Topology Description" not in panel.value and len(panel.value) < 400, panel.value
    (details,) = at.expander
    assert "Topology" in " ".join(c.value for c in details.code)  # pymongo's whole story, behind a click
    assert at.button(key="retry")


def test_retry_reads_the_source_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "later.db"
    db.write_bytes(b"not a database yet " * 100)
    monkeypatch.setenv("AGENTMETER_DB", str(db))
    at = app().run()
    assert any("Cannot reach the local source" in e.value for e in at.error)
    db.unlink()
    docs = seed_runs(db, n=4)
    at.button(key="retry").click().run()
    assert not at.error and not at.exception
    assert int(metrics(at)["Runs"]) == len(docs)
