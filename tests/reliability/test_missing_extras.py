"""Sinks, sources and commands without their optional library (issue 14, attack 11).

Tried for real: a fresh interpreter whose ``sys.path`` holds a copy of this environment's site-packages
(symbolic links, one per entry) from which the library and its distribution metadata are left out, started
with ``-S`` so the real site-packages is not added back. To that interpreter the library is simply not
installed: ``importlib.util.find_spec`` finds nothing and ``import`` raises ModuleNotFoundError, exactly as
on a machine where ``pip install agentmeter`` was run without the extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
Run = Callable[..., "subprocess.CompletedProcess[str]"]
Without = Callable[..., Run]

#: what leaving out an extra removes: the import names and the distributions that provide them
EXTRAS = {
    "mongodb": {"pymongo", "bson", "gridfs"},
    "firehose": {"boto3", "botocore", "s3transfer"},
    "snowflake": {"snowflake", "snowflake_connector_python"},
    "dashboard": {"streamlit"},
    "tavily": {"tavily", "tavily_python"},
}


def _site_without(names: set[str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for lib in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(lib).iterdir():
            top = entry.name.split("-")[0].split(".")[0]
            if top.lower() in names or entry.suffix == ".pth":  # .pth: the editable install points elsewhere
                continue
            target = folder / entry.name
            if not target.exists():
                target.symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def without(tmp_path_factory: pytest.TempPathFactory) -> Without:
    """``without("mongodb", ...)(args)``: run Python with those extras not installed."""
    sites: dict[tuple[str, ...], Path] = {}

    def make(*extras: str) -> Run:
        key = tuple(sorted(extras))
        if key not in sites:
            names = set().union(*(EXTRAS[e] for e in extras))
            sites[key] = _site_without(names, tmp_path_factory.mktemp("site-without-" + "-".join(key)))
        site = sites[key]

        def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                ) -> subprocess.CompletedProcess[str]:
            child = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMETER_")}
            child.update(PYTHONPATH=f"{ROOT}{os.pathsep}{site}", AGENTMETER_RAISE_INTERNAL="1",
                         PYTHONNOUSERSITE="1", **(env or {}))
            return subprocess.run([sys.executable, "-S", *args], capture_output=True, text=True, timeout=120,
                                  env=child, cwd=cwd or ROOT)

        return run

    return make


def test_the_site_really_lacks_the_library(without: Without) -> None:
    out = without("mongodb")("-c", "import importlib.util, attrs, structlog, agentmeter;"
                                   "print(importlib.util.find_spec('pymongo'), importlib.util.find_spec('bson'));"
                                   "import pymongo")
    assert "None None" in out.stdout
    assert "ModuleNotFoundError: No module named 'pymongo'" in out.stderr


@pytest.mark.parametrize(
    ("extra", "code"),
    [("mongodb", "from agentmeter.sinks import MongoDBSink; MongoDBSink(uri='mongodb://localhost:27017')"),
     ("firehose", "from agentmeter.sinks import FirehoseSink; FirehoseSink(stream_name='agent-runs')")],
)
def test_a_sink_without_its_library_fails_at_construction_naming_the_extra(without: Without, record_fault: Any,
                                                                          extra: str,
                                                                          code: str) -> None:
    script = (f"try:\n    {code}\nexcept ValueError as exc:\n"
              "    print('VALUEERROR', isinstance(exc, ImportError), exc)\nelse:\n    print('ACCEPTED')\n")
    out = without(extra)("-c", script)
    ok = out.returncode == 0 and "VALUEERROR True" in out.stdout and f"pip install 'agentmeter[{extra}]'" in out.stdout
    record_fault(case=f"attack 11: {code.split('; ')[1].split('(')[0]} built without the {extra} extra",
                 agent="sync", runs="-", user_exceptions="-", lost="-", duplicates="-", redeliveries="-",
                 spooled=0, dropped=0, result="pass: ValueError naming the extra at construction" if ok
                 else "FAIL: accepted (runs would be spooled forever)")
    assert out.returncode == 0, out.stderr
    assert "VALUEERROR True" in out.stdout, out.stdout  # a ValueError (configure's contract) and an ImportError
    assert f"pip install 'agentmeter[{extra}]'" in out.stdout


_ENV_CONFIGURED = r"""
import agentmeter
from agentmeter import track_run
with track_run("r"):
    pass
s = agentmeter._state.settings()
print("SINKS", [type(x).__name__ for x in s.sinks or []], agentmeter.flush(timeout=30).sinks["sqlite"].delivered)
try:
    agentmeter.configure()
except ValueError as exc:
    print("CONFIGURE", exc)
"""


@pytest.mark.parametrize(("extra", "env"), [
    ("mongodb", {"AGENTMETER_SINKS": "sqlite,mongodb", "AGENTMETER_MONGODB_URI": "mongodb://localhost:27017"}),
    ("firehose", {"AGENTMETER_SINKS": "sqlite,firehose", "AGENTMETER_FIREHOSE_STREAM": "agent-runs"}),
])
def test_sinks_named_in_the_environment_without_their_library(without: Without, tmp_path: Path, extra: str,
                                                               env: dict[str, str]) -> None:
    out = without(extra)("-c", _ENV_CONFIGURED, env={**env, "AGENTMETER_DB": str(tmp_path / "a.db"),
                                                     "AGENTMETER_SPOOL_DIR": str(tmp_path / "spool")})
    assert out.returncode == 0, out.stderr
    # lazily: the bad variable fails only itself (the default local store still records), named, loudly
    assert "SINKS [] 1" in out.stdout, out.stdout + out.stderr
    assert "AGENTMETER_SINKS" in out.stderr and f"pip install 'agentmeter[{extra}]'" in out.stderr
    assert "Traceback" not in out.stderr
    # configure(): a ValueError naming the extra, before anything is exported
    assert "CONFIGURE " in out.stdout and f"pip install 'agentmeter[{extra}]'" in out.stdout


def _one_line(out: subprocess.CompletedProcess[str], extra: str) -> None:
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"pip install 'agentmeter[{extra}]'" in lines[0], lines[0]


@pytest.mark.parametrize(("missing", "extra"), [("mongodb", "mongodb"), ("firehose", "firehose")])
def test_agentmeter_stream_without_its_library_prints_one_line(without: Without, record_fault: Any, missing: str,
                                                               extra: str) -> None:
    env = {"AGENTMETER_MONGODB_URI": "mongodb://127.0.0.1:9", "AGENTMETER_FIREHOSE_STREAM": "agent-runs",
           "AWS_REGION": "us-east-1"}
    out = without(missing)("-m", "agentmeter", "stream", "--since", "1h", "--no-checkpoint", env=env)
    lines = out.stderr.strip().splitlines()
    record_fault(case=f"attack 11: agentmeter stream without the {extra} extra", agent="cli", runs="-",
                 user_exceptions="-", lost="-", duplicates="-", redeliveries="-", spooled="-", dropped="-",
                 result=f"pass: one line, exit {out.returncode}" if out.returncode and len(lines) == 1
                 and "Traceback" not in out.stderr else "FAIL: traceback")
    _one_line(out, extra)


@pytest.mark.parametrize(("source", "missing"), [("mongodb", "mongodb"), ("snowflake", "snowflake")])
def test_agentmeter_dashboard_without_the_source_library_prints_one_line(without: Without, source: str,
                                                                         missing: str) -> None:
    # Streamlit is there; the source's driver is not: nothing is started
    out = without(missing)("-m", "agentmeter", "dashboard", "--source", source, "--headless", "--port", "9")
    _one_line(out, missing)
    assert "http://" not in out.stdout  # no "dashboard on http://..." line: the server was not started


def test_agentmeter_dashboard_without_streamlit_prints_one_line(without: Without) -> None:
    _one_line(without("dashboard")("-m", "agentmeter", "dashboard", "--headless"), "dashboard")


def test_agentmeter_demo_without_tavily_prints_one_line(without: Without, tmp_path: Path) -> None:
    out = without("tavily")("-m", "agentmeter", "demo", "--offline", "--runs", "1", "--db", str(tmp_path / "d.db"))
    _one_line(out, "tavily,openai")


def test_the_dashboard_source_without_its_driver_is_unavailable_naming_the_extra(without: Without) -> None:
    code = ("from agentmeter.queries import open_source, SourceUnavailable\ntry:\n    open_source('mongodb')\n"
            "except SourceUnavailable as exc:\n    print('UNAVAILABLE', exc, '|', exc.hint)\n")
    out = without("mongodb")("-c", code, env={"AGENTMETER_MONGODB_URI": "mongodb://127.0.0.1:9"})
    assert out.returncode == 0, out.stderr
    assert "UNAVAILABLE" in out.stdout and "agentmeter[mongodb" in out.stdout, out.stdout


def test_commands_that_need_no_extra_run_without_any(without: Without, tmp_path: Path) -> None:
    run = without("mongodb", "firehose", "snowflake", "dashboard", "tavily")
    sql = run("-m", "agentmeter", "sql", "--bucket", "my-bucket")
    assert sql.returncode == 0 and "CREATE" in sql.stdout, sql.stderr
    report = run("-m", "agentmeter", "report", "--db", str(tmp_path / "none.db"))
    assert "Traceback" not in report.stderr, report.stderr
