"""Find the code of README.md and docs/*.md: fenced blocks (with the ``docs-test`` comment above each) and
inline ``agentmeter ...`` commands. Parsed with markdown-it-py (a dependency of rich, so always there)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]

#: languages whose blocks are code the runner runs or checks
RUN = {"python", "bash", "sh", "json", "sql"}
#: languages that are not code (diagrams, sample output): shown, never run
NOT_CODE = {"mermaid", "text"}
#: what a ``<!-- docs-test: MODE ... -->`` comment may say
MODES = {"run", "skip", "parse", "in-script"}

_DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(?P<body>.*?)\s*-->", re.S)


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    mode: str = "run"
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclass
class Inline:
    path: Path
    line: int
    command: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse_directive(body: str) -> tuple[str, dict[str, str]]:
    """``skip reason="needs a server"`` -> ("skip", {"reason": "needs a server"})."""
    words = shlex.split(body)
    if not words or words[0] not in MODES:
        raise ValueError(f"unknown docs-test directive {body!r} (modes: {sorted(MODES)})")
    options = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"docs-test option {word!r} is not key=value")
        options[key] = value
    return words[0], options


def blocks(path: Path) -> list[Block]:
    tokens = MarkdownIt("commonmark").parse(path.read_text())
    found: list[Block] = []
    directive: tuple[str, dict[str, str]] | None = None
    for token in tokens:
        if token.type == "html_block":
            match = _DIRECTIVE.search(token.content)
            directive = parse_directive(match.group("body")) if match else None
            continue
        if token.type in ("fence", "code_block"):
            assert token.map is not None
            lang = token.info.split()[0] if token.info.strip() else ""
            mode, options = directive if directive else ("run", {})
            found.append(Block(path, token.map[0] + 1, lang, token.content, mode, options))
        directive = None
    return found


_INLINE_COMMAND = re.compile(r"^(?:\.venv/bin/)?agentmeter(?:\s|$)")


def inline_commands(path: Path) -> list[Inline]:
    """Inline code spans that are agentmeter commands (``agentmeter report --since 24h``)."""
    found: list[Inline] = []
    for token in MarkdownIt("commonmark").parse(path.read_text()):
        if token.type != "inline" or not token.children:
            continue
        line = token.map[0] + 1 if token.map else 0
        for child in token.children:
            if child.type == "code_inline" and _INLINE_COMMAND.match(child.content):
                found.append(Inline(path, line, child.content))
    return found


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comment-only and blank lines dropped."""
    commands: list[str] = []
    pending = ""
    for raw in code.splitlines():
        line = pending + (raw.lstrip() if pending else raw)
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1].rstrip() + " "
            continue
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    return commands


def agentmeter_argv(command: str) -> list[list[str]]:
    """The argument lists of the ``agentmeter`` commands in one shell command line (pipes and redirections
    split off, comments dropped)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    argvs: list[list[str]] = []
    current: list[str] = []
    for word in [*lexer, "|"]:
        if word in ("|", "||", "&&", ";", ">", ">>", "<", "2>"):
            if current and current[0] in ("agentmeter", ".venv/bin/agentmeter"):
                argvs.append(current[1:])
            current = [] if word in ("|", "||", "&&", ";") else ["<redirect>"]
        elif current[:1] != ["<redirect>"]:
            current.append(word)
    return argvs
