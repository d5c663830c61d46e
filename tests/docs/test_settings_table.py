"""The README's configuration table says what the code does: every setting it lists exists, with the
default and the environment variable the code has, and every setting of the code is listed."""

from __future__ import annotations

import re

import attrs

from agentmeter._config import ENV_VARS, Settings
from tests.docs._blocks import ROOT

#: how the table writes a default that is not a plain literal
_WORDS = {"none": None, "local SQLite store": None, "enabled": True}
_UNITS = {"MiB": 1024 * 1024}


def _rows() -> dict[str, tuple[str, str]]:
    """setting -> (environment column, default column), for rows naming settings; a/b rows split in two."""
    rows: dict[str, tuple[str, str]] = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`(\w+)`", cells[0])
        defaults = [d.strip() for d in cells[2].split(" / ")] if len(names) > 1 else [cells[2]]
        for i, name in enumerate(names):
            rows[name] = (cells[1], defaults[min(i, len(defaults) - 1)])
    return rows


def _value(text: str) -> object:
    text = text.replace(" s", "").strip()
    if text in _WORDS:
        return _WORDS[text]
    match = re.fullmatch(r"`?([\w.]+)`?(?: (MiB))?", text)
    assert match, f"unreadable default {text!r}"
    word, unit = match.groups()
    if unit:
        return float(word) * _UNITS[unit]
    if word in ("true", "false"):
        return word == "true"
    try:
        return float(word)
    except ValueError:
        return word


def test_readme_settings_are_the_codes() -> None:
    rows = _rows()
    fields = {f.name: f for f in attrs.fields(Settings)}
    assert set(rows) - set(fields) == set(), "the README lists settings that do not exist"
    missing = set(fields) - set(rows)
    assert not missing, f"settings the README's table does not list: {sorted(missing)}"
    for name, (env, default) in rows.items():
        field = fields[name]
        if name in ("spool_dir", "prices", "redact", "sinks"):
            continue  # defaults that are behaviour, described in words (tests/reliability checks the spool's)
        code = field.default
        written = _value(default)
        if isinstance(code, bool) or code is None or isinstance(code, str):
            assert written == code, f"README: {name} defaults to {default!r}, the code to {code!r}"
        else:
            assert float(written) == float(code), f"README: {name} defaults to {default!r}, the code to {code!r}"
        variables = [var for var, (setting, *_rest) in ENV_VARS.items() if setting == name]
        tokens = re.findall(r"`(\w+)`", env)
        for var in variables:
            assert any(var == t or (t.startswith("_") and var.endswith(t)) for t in tokens), (
                f"README: {name}'s variable column {env!r} does not name {var}")
