"""Bad configuration (issue 14, attacks 6 and 7).

Attack 6: ``AGENTMETER_DISABLED`` always wins, and one bad environment variable fails only itself: it is
named in a warning on stderr and the other variables still apply. Tried in real processes configured only by
their environment, as an operator does it.

Attack 7: booleans are real booleans from Python and ``true/false/1/0/yes/no/on/off`` from the environment;
paths are paths; durations are finite; every other setting refuses values of the wrong type.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import agentmeter
import agentmeter.testing
from agentmeter import _state
from agentmeter._config import BOOL_FIELDS, Settings, load_settings, settings_from_env

from .conftest import run_python

_TRACK_AND_REPORT = r"""
import json
import agentmeter
from agentmeter import track_run, track_step

@track_run
def agent():
    with track_step("s"):
        return 1

agent()
s = agentmeter._state.settings()
result = agentmeter.flush(timeout=30)
print("SETTINGS " + json.dumps({"enabled": s.enabled, "batch_size": s.batch_size, "capture": s.capture,
                                "sample_rate": s.sample_rate, "exit_timeout": s.exit_timeout,
                                "propagate_threads": s.propagate_threads,
                                "delivered": sum(r.delivered for r in result.sinks.values())}))
"""


def _run(tmp_path: Path, **env: str) -> tuple[dict[str, Any], str, Path]:
    db = tmp_path / "store.db"
    out = run_python(_TRACK_AND_REPORT, env={"AGENTMETER_DB": str(db), "AGENTMETER_SPOOL_DIR": str(tmp_path / "sp"),
                                             **env})
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("SETTINGS "))
    assert out.stdout.strip() == line, "agentmeter printed on stdout"
    return json.loads(line[9:]), out.stderr, db


def _stored_runs(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM agent_runs").fetchone()[0])


# -- attack 6 ---------------------------------------------------------------------------------------------
def test_the_kill_switch_wins_over_a_typo_in_another_variable(tmp_path: Path, record_fault: Any) -> None:
    got, err, db = _run(tmp_path, AGENTMETER_DISABLED="1", AGENTMETER_BATCH_SIZE="1O0")  # letter O
    stored = _stored_runs(db)
    record_fault(case="attack 6: AGENTMETER_DISABLED=1 with AGENTMETER_BATCH_SIZE=1O0", agent="sync", runs=1,
                 user_exceptions=0, lost=0, duplicates=0, redeliveries=0, spooled=0, dropped=0,
                 result="pass: disabled, nothing stored, the typo named" if not got["enabled"] and stored == 0
                 and "AGENTMETER_BATCH_SIZE" in err else f"FAIL: enabled={got['enabled']}, {stored} runs stored")
    assert got["enabled"] is False
    assert stored == 0 and got["delivered"] == 0
    assert "AGENTMETER_BATCH_SIZE" in err and "1O0" in err


def test_one_bad_variable_fails_only_itself_and_is_named(tmp_path: Path) -> None:
    got, err, db = _run(tmp_path, AGENTMETER_BATCH_SIZE="1O0", AGENTMETER_CAPTURE="yes",
                        AGENTMETER_SAMPLE_RATE="0.25", AGENTMETER_EXIT_TIMEOUT="soon",
                        AGENTMETER_PROPAGATE_THREADS="off")
    assert got == {"enabled": True, "batch_size": 100, "capture": True, "sample_rate": 0.25, "exit_timeout": 5.0,
                   "propagate_threads": False, "delivered": 1}
    assert _stored_runs(db) == 1
    # each bad variable gets its own warning line, naming it
    lines = err.splitlines()
    assert sum("AGENTMETER_BATCH_SIZE" in ln for ln in lines) == 1, err
    assert sum("AGENTMETER_EXIT_TIMEOUT" in ln for ln in lines) == 1, err
    assert "AGENTMETER_CAPTURE" not in err and "AGENTMETER_SAMPLE_RATE" not in err


def test_a_value_of_the_right_type_but_out_of_range_fails_only_itself(tmp_path: Path) -> None:
    got, err, _ = _run(tmp_path, AGENTMETER_BATCH_SIZE="0", AGENTMETER_SAMPLE_RATE="0.5")
    assert (got["batch_size"], got["sample_rate"]) == (100, 0.5)
    assert "AGENTMETER_BATCH_SIZE" in err and "batch_size must be a positive integer" in err


def test_a_bad_sink_list_fails_only_itself(tmp_path: Path) -> None:
    got, err, db = _run(tmp_path, AGENTMETER_SINKS="sqlite,kafka", AGENTMETER_BATCH_SIZE="7")
    assert got["batch_size"] == 7 and got["delivered"] == 1 and _stored_runs(db) == 1  # the default sink
    assert "AGENTMETER_SINKS" in err and "kafka" in err


@pytest.mark.parametrize("value", ["1", "true", "YES", "on", " True ", "disable", "Y"])
def test_any_value_of_the_kill_switch_but_a_false_one_disables(tmp_path: Path, value: str) -> None:
    got, err, db = _run(tmp_path, AGENTMETER_DISABLED=value)
    assert got["enabled"] is False and _stored_runs(db) == 0
    known = value.strip().lower() in ("1", "true", "yes", "on")
    assert ("AGENTMETER_DISABLED" in err) is not known, err  # an unknown value is named, and still disables


@pytest.mark.parametrize("value", ["0", "false", "No", "off", ""])
def test_a_false_kill_switch_leaves_agentmeter_on(tmp_path: Path, value: str) -> None:
    got, err, _ = _run(tmp_path, AGENTMETER_DISABLED=value)
    assert got["enabled"] is True and got["delivered"] == 1
    assert "AGENTMETER_DISABLED" not in err


def test_configure_names_a_bad_variable_but_the_kill_switch_still_wins(monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AGENTMETER_BATCH_SIZE", "1O0")
    with pytest.raises(ValueError, match="AGENTMETER_BATCH_SIZE"):
        agentmeter.configure()
    monkeypatch.setenv("AGENTMETER_DISABLED", "1")
    s = agentmeter.configure(enabled=True)  # the operator's kill switch beats the code's setting
    assert s.enabled is False
    assert "AGENTMETER_BATCH_SIZE" in capsys.readouterr().err


def test_load_settings_reports_each_problem_with_its_variable() -> None:
    s, problems = load_settings({"AGENTMETER_BATCH_SIZE": "x", "AGENTMETER_CAPTURE": "maybe",
                                 "AGENTMETER_FLUSH_INTERVAL": "2.5", "AGENTMETER_SPOOL_DIR": ""})
    assert s.flush_interval == 2.5 and s.batch_size == 100 and s.capture is False and s.spool_dir is None
    assert sorted(p.variable for p in problems) == ["AGENTMETER_BATCH_SIZE", "AGENTMETER_CAPTURE"]
    assert all(p.variable in p.message for p in problems)


def test_lazy_settings_in_process_keep_the_good_variables(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AGENTMETER_DISABLED", "1")
    monkeypatch.setenv("AGENTMETER_MAX_ATTEMPTS", "-3")
    monkeypatch.setenv("AGENTMETER_WRITE_TIMEOUT", "12")
    agentmeter.testing.reset()  # settings are read from the environment again on first use
    s = _state.settings()
    assert (s.enabled, s.write_timeout, s.max_attempts) == (False, 12.0, 4)
    assert "AGENTMETER_MAX_ATTEMPTS" in capsys.readouterr().err


# -- attack 7 ---------------------------------------------------------------------------------------------
def test_configure_with_strings_for_booleans_and_a_number_for_a_path(record_fault: Any) -> None:
    refused = []
    for kwargs in ({"enabled": "false"}, {"capture": "false"}, {"propagate_threads": "no"},
                   {"always_keep_errors": "off"}, {"handle_sigterm": "no"}, {"sync_export": "off"},
                   {"spool_dir": 123}):
        try:
            agentmeter.configure(**kwargs)
        except ValueError as exc:
            refused.append(next(iter(kwargs)) in str(exc))
    record_fault(case="attack 7: configure(enabled='false'), capture='false', ..., spool_dir=123", agent="sync",
                 runs="-", user_exceptions="-", lost="-", duplicates="-", redeliveries="-", spooled="-",
                 dropped="-", result=f"pass: {sum(refused)} of 7 refused, each naming its setting"
                 if refused == [True] * 7 else f"FAIL: {7 - len(refused)} of 7 accepted")
    assert refused == [True] * 7


@pytest.mark.parametrize("field", BOOL_FIELDS)
@pytest.mark.parametrize("value", ["false", "no", "off", "0", "", 0, 1, 1.0, [], "true"])
def test_booleans_accept_only_real_booleans_from_python(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        agentmeter.configure(**{field: value})


@pytest.mark.parametrize("field", BOOL_FIELDS)
def test_real_booleans_are_accepted(field: str) -> None:
    assert getattr(Settings(**{field: False}), field) is False
    assert getattr(Settings(**{field: True}), field) is True


_ENV_BOOLS = {"AGENTMETER_CAPTURE": "capture", "AGENTMETER_HANDLE_SIGTERM": "handle_sigterm",
              "AGENTMETER_PROPAGATE_THREADS": "propagate_threads", "AGENTMETER_SYNC": "sync_export",
              "AGENTMETER_ALWAYS_KEEP_ERRORS": "always_keep_errors"}


@pytest.mark.parametrize("var", sorted(_ENV_BOOLS))
@pytest.mark.parametrize(("text", "expected"), [("true", True), ("TRUE", True), ("1", True), ("yes", True),
                                                ("On", True), (" yes\n", True), ("false", False), ("0", False),
                                                ("NO", False), ("off", False)])
def test_environment_booleans(var: str, text: str, expected: bool) -> None:
    s, problems = load_settings({var: text})
    assert problems == [] and getattr(s, _ENV_BOOLS[var]) is expected


@pytest.mark.parametrize("var", sorted(_ENV_BOOLS))
@pytest.mark.parametrize("text", ["maybe", "2", "enabled", "t", "y", "nope", "1.0"])
def test_environment_booleans_refuse_anything_else(var: str, text: str) -> None:
    default = getattr(Settings(), _ENV_BOOLS[var])
    s, problems = load_settings({var: text})
    assert getattr(s, _ENV_BOOLS[var]) is default
    assert [p.variable for p in problems] == [var]
    with pytest.raises(ValueError, match=var):
        settings_from_env({var: text})


@pytest.mark.parametrize("value", [123, 1.5, b"/tmp/spool", "", ["/tmp"], object()])
def test_spool_dir_must_be_a_path(value: Any) -> None:
    with pytest.raises(ValueError, match="spool_dir"):
        agentmeter.configure(spool_dir=value)


def test_spool_dir_accepts_str_and_path_like(tmp_path: Path) -> None:
    assert agentmeter.configure(spool_dir=tmp_path / "a").spool_dir == str(tmp_path / "a")
    assert agentmeter.configure(spool_dir=str(tmp_path / "b")).spool_dir == str(tmp_path / "b")
    home = Settings(spool_dir="~/spool-x").spool_dir
    assert home == os.path.expanduser("~/spool-x")


@pytest.mark.parametrize(
    ("field", "value"),
    [("flush_interval", float("inf")), ("flush_interval", float("nan")), ("write_timeout", float("inf")),
     ("exit_timeout", float("inf")), ("exit_timeout", 1e300), ("exit_timeout", 10**400),
     ("retry_initial", float("nan")),
     ("retry_max", float("inf")), ("flush_interval", "1"), ("exit_timeout", True), ("sample_rate", float("nan")),
     ("sample_rate", "0.5"), ("slow_run_ms", float("nan")), ("slow_run_ms", "5"), ("batch_size", 10.0),
     ("batch_size", "10"), ("max_attempts", True), ("capture_max_chars", 2**70), ("spool_max_bytes", 2**64),
     ("spool_full_policy", "DROP_OLDEST"), ("spool_full_policy", ["drop_oldest"]), ("redact", "mask"),
     ("prices", "gpt-x"), ("sinks", "sqlite")],
)
def test_every_setting_refuses_values_of_the_wrong_type_or_range(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        agentmeter.configure(**{field: value})


def test_a_huge_integer_duration_is_refused_not_overflowed() -> None:
    with pytest.raises(ValueError, match="write_timeout"):
        Settings(write_timeout=10**400)
    assert Settings(slow_run_ms=10**400).slow_run_ms == 10**400  # "never slow": harmless


def test_an_infinite_flush_interval_from_the_environment_fails_only_itself() -> None:
    s, problems = load_settings({"AGENTMETER_FLUSH_INTERVAL": "inf", "AGENTMETER_SLOW_RUN_MS": "nan",
                                 "AGENTMETER_SPOOL_FULL_POLICY": " drop_newest "})
    assert (s.flush_interval, s.slow_run_ms, s.spool_full_policy) == (1.0, None, "drop_newest")
    assert sorted(p.variable for p in problems) == ["AGENTMETER_FLUSH_INTERVAL", "AGENTMETER_SLOW_RUN_MS"]
