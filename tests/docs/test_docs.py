"""Every code block and agentmeter command of README.md and docs/*.md runs here, offline, so a page cannot go
stale silently.

* ``python`` blocks run in a fresh interpreter with ``HOME`` in a temporary folder (so ``~/.agentmeter`` is
  the test's), with the prologue and epilogue of ``<!-- docs-test: run setup=NAME -->`` if any
  (``tests/docs/_setups.py``: the names a page leaves to the reader, loopback stand-ins for the services);
* ``bash``/``sh`` blocks run line by line in bash, ``agentmeter`` being this checkout's CLI, against a
  local store the demo filled;
* ``json`` blocks must parse; ``sql`` blocks marked ``in-script`` must appear in ``agentmeter sql``'s script;
* ``<!-- docs-test: parse reason="..." -->`` above a shell block: its ``agentmeter`` commands are parsed by
  the CLI's argument parser, not run (they need a server, or run forever); the other lines are not run;
* ``<!-- docs-test: skip reason="..." -->``: not run, for the reason given (required);
* ``mermaid`` and ``text`` blocks are not code. A block with no language, or one this runner does not know,
  fails: say what it is.

Inline ``agentmeter ...`` commands are run (``sql``, ``report``, ``--help``) or parsed; a synopsis with
``[optional]`` parts must name only options the command has.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmeter.cli import COMMANDS, build_parser
from tests.docs._blocks import (
    NOT_CODE,
    ROOT,
    RUN,
    Block,
    Inline,
    agentmeter_argv,
    blocks,
    doc_files,
    inline_commands,
    shell_commands,
)
from tests.docs._setups import SETUPS

ALL_BLOCKS = [b for path in doc_files() for b in blocks(path)]
ALL_INLINE = [c for path in doc_files() for c in inline_commands(path)]

#: variables of the developer's or CI's environment a documented block must not see
_DROP = re.compile(r"^(AGENTMETER_|OPENAI_|ANTHROPIC_|TAVILY_|AWS_|SNOWFLAKE_|OTEL_)")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _DROP.match(k)}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), AGENTMETER_RAISE_INTERNAL="1",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", **extra)
    return env


@pytest.fixture(scope="session")
def shell_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder to run shell blocks in: ``agentmeter`` (and ``.venv/bin/agentmeter``) is this checkout's CLI
    and ``python`` the interpreter running the tests, ``AGENTMETER_DB`` a local store the demo filled."""
    home = tmp_path_factory.mktemp("docs-shell")
    shims = {"agentmeter": f'#!/bin/sh\nexec "{sys.executable}" -m agentmeter "$@"\n',
             "python": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n'}
    for folder in (home / "bin", home / ".venv" / "bin"):
        folder.mkdir(parents=True)
        for name, shim in shims.items():
            (folder / name).write_text(shim)
            (folder / name).chmod(0o755)
    env = _env(home, AGENTMETER_DB=str(home / "store" / "agentmeter.db"),
               PATH=f"{home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    demo = subprocess.run(["agentmeter", "demo", "--runs", "3", "--offline", "--seed", "1"], cwd=home, env=env,
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    return home, env


def _id(item: Block | Inline) -> str:
    return item.where


def test_every_block_is_known() -> None:
    """A block's language says what it is, and a block that is not run says why."""
    problems = []
    for b in ALL_BLOCKS:
        if b.lang not in RUN | NOT_CODE:
            problems.append(f"{b.where}: language {b.lang!r}: label it (one of {sorted(RUN | NOT_CODE)})")
        if b.mode in ("skip", "parse") and not b.options.get("reason", "").strip():
            problems.append(f"{b.where}: docs-test {b.mode} needs reason=\"...\"")
        if b.options.get("setup") and b.options["setup"] not in SETUPS:
            problems.append(f"{b.where}: unknown setup {b.options['setup']!r}")
        if b.lang in NOT_CODE and b.mode != "run":
            problems.append(f"{b.where}: a {b.lang} block is not code: drop its docs-test comment")
    assert not problems, "\n".join(problems)
    assert len(ALL_BLOCKS) > 20 and any(b.path.name == "README.md" for b in ALL_BLOCKS)


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "python" and b.mode == "run"], ids=_id)
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    prologue, epilogue = SETUPS.get(block.options.get("setup", ""), ("", ""))
    source = f"{prologue}\n# --- {block.where}\n{block.code}\n# --- checks\n{epilogue}\n"
    script = tmp_path / "block.py"
    script.write_text(source)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{block.where} failed:\n{proc.stderr[-4000:]}"


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang in ("bash", "sh") and b.mode == "run"],
                         ids=_id)
def test_shell_block_runs(block: Block, shell_home: tuple[Path, dict[str, str]]) -> None:
    home, env = shell_home
    commands = shell_commands(block.code)
    if "only" in block.options:  # run only the commands of these programs; the reason says why not the rest
        assert block.options.get("reason", "").strip(), f"{block.where}: only= needs reason=\"...\""
        commands = [c for c in commands if c.split()[0] in block.options["only"].split(",")]
        assert commands, f"{block.where}: no {block.options['only']} command to run"
    for command in commands:
        proc = subprocess.run(["bash", "-c", f"set -euo pipefail; {command}"], cwd=home, env=env,
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, f"{block.where}: `{command}` exited {proc.returncode}:\n{proc.stderr[-3000:]}"


def _parse(argv: list[str], where: str) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code != 0:
            pytest.fail(f"{where}: `agentmeter {shlex.join(argv)}` is rejected by the CLI's parser")


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.mode == "parse"], ids=_id)
def test_shell_block_parses(block: Block) -> None:
    argvs = [argv for command in shell_commands(block.code) for argv in agentmeter_argv(command)]
    assert argvs, f"{block.where}: a parse block with no agentmeter command: mark it skip instead"
    for argv in argvs:
        _parse(argv, block.where)


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "json" and b.mode == "run"], ids=_id)
def test_json_block_parses(block: Block) -> None:
    json.loads(block.code)


@pytest.fixture(scope="session")
def snowflake_script() -> str:
    from agentmeter.snowflake_sql import SnowflakeNames, render

    return " ".join(render(SnowflakeNames(bucket="my-agent-metrics", aws_role_arn="arn:aws:iam::123456789012:"
                                          "role/snowflake-agentmeter")).split())


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "sql" and b.mode == "in-script"], ids=_id)
def test_sql_block_is_in_the_script(block: Block, snowflake_script: str) -> None:
    assert " ".join(block.code.split()) in snowflake_script, f"{block.where} is not in `agentmeter sql`'s script"


@pytest.fixture(scope="module")
def snowflake() -> Iterator[object]:
    """fakesnow (Snowflake SQL on DuckDB, the tests' stand-in) with the script deployed under the default
    names the docs use (``AGENTMETER.METRICS``)."""
    fakesnow = pytest.importorskip("fakesnow")
    import snowflake.connector

    from agentmeter.snowflake_sql import SnowflakeNames, render, split_statements
    from tests.snowflake._fakesnow import NOP_REGEXES

    names = SnowflakeNames(bucket="my-agent-metrics", warehouse="AGENTMETER_WH",
                           aws_role_arn="arn:aws:iam::123456789012:role/snowflake-agentmeter")
    with fakesnow.patch(nop_regexes=NOP_REGEXES):
        conn = snowflake.connector.connect()
        for statement in split_statements(render(names)):
            conn.cursor().execute(statement)
        try:
            yield conn
        finally:
            conn.close()


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "sql" and b.mode == "run"], ids=_id)
def test_sql_block_runs(block: Block, snowflake: object) -> None:
    from agentmeter.snowflake_sql import split_statements

    for statement in split_statements(block.code):
        snowflake.cursor().execute(statement)  # type: ignore[attr-defined]


def _options(argv: list[str]) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    command = sub.choices[argv[0]]  # type: ignore[index]
    return {o for action in command._actions for o in action.option_strings}


@pytest.mark.parametrize("inline", ALL_INLINE, ids=_id)
def test_inline_command(inline: Inline, shell_home: tuple[Path, dict[str, str]]) -> None:
    command = inline.command
    words = command.split()
    if len(words) == 2 and words[1] in COMMANDS:  # the name of a command, not a command to run
        return
    if "[" in command or "..." in command or re.search(r"\S\|\S", command):  # a synopsis: its options exist
        argv = shlex.split(command.replace("[", " ").replace("]", " ").replace("|", " "))[1:]
        known = _options(argv)
        unknown = [w for w in argv if w.startswith("--") and w not in known]
        assert not unknown, f"{inline.where}: `{command}` names options the command lacks: {unknown}"
        return
    home, env = shell_home
    for argv in agentmeter_argv(command):
        if argv[:1] in (["sql"], ["report"], ["--help"], ["--version"], []):
            proc = subprocess.run(["agentmeter", *argv], cwd=home, env=env, capture_output=True, text=True,
                                  timeout=120)
            assert proc.returncode == 0, f"{inline.where}: `{command}` exited {proc.returncode}: {proc.stderr}"
        else:
            _parse(argv, inline.where)


def test_the_runner_reads_directives_and_commands(tmp_path: Path) -> None:
    """What the runner relies on: a directive above a fence, its reason, continuation lines, pipes."""
    from tests.docs._blocks import parse_directive

    page = tmp_path / "page.md"
    page.write_text('Text.\n\n<!-- docs-test: skip reason="needs a server" -->\n```bash\nmake x\n```\n\n'
                    "```python\nprint(1)\n```\n\nRun `agentmeter report --since 1h`.\n")
    skipped, ran = blocks(page)
    assert (skipped.mode, skipped.options, skipped.line) == ("skip", {"reason": "needs a server"}, 4)
    assert (ran.mode, ran.lang, ran.code) == ("run", "python", "print(1)\n")
    assert [c.command for c in inline_commands(page)] == ["agentmeter report --since 1h"]
    assert shell_commands("agentmeter sql --bucket b \\\n  --prefix p/ > s.sql  # note\n# only a comment\n") == [
        "agentmeter sql --bucket b --prefix p/ > s.sql  # note"]
    assert agentmeter_argv("agentmeter sql --bucket b > s.sql") == [["sql", "--bucket", "b"]]
    assert agentmeter_argv("agentmeter sql --bucket b | snowsql -f /dev/stdin") == [["sql", "--bucket", "b"]]
    with pytest.raises(ValueError, match="unknown docs-test directive"):
        parse_directive("skipp reason=x")
