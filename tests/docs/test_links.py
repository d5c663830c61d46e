"""Links: the README renders on PyPI, where a relative link or image is broken, so every one of its links
is absolute; links into this repository (absolute in the README, relative in docs/) name files that exist,
and their #anchors headings that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.docs._blocks import ROOT, doc_files

REPOSITORY = "https://github.com/agentmeter/agentmeter"
_OURS = re.compile(r"^https://(?:github\.com/agentmeter/agentmeter/(?:blob|tree)/main/"
                   r"|raw\.githubusercontent\.com/agentmeter/agentmeter/main/)(?P<path>[^#?]*)(?:#(?P<anchor>.*))?$")


def _links(path: Path) -> list[str]:
    found = []
    for token in MarkdownIt("commonmark").parse(path.read_text()):
        for child in token.children or []:
            if child.type == "link_open":
                found.append(str(child.attrs["href"]))
            elif child.type == "image":
                found.append(str(child.attrs["src"]))
    return found


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces to -."""
    heads = re.findall(r"^#+\s+(.*)$", path.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def _check(target: Path, anchor: str | None, where: str) -> None:
    assert target.exists(), f"{where}: links to {target.relative_to(ROOT)}, which does not exist"
    if anchor and target.suffix == ".md":
        assert anchor in _anchors(target), f"{where}: {target.relative_to(ROOT)} has no heading #{anchor}"


def test_readme_links_are_absolute_and_exist() -> None:
    links = _links(ROOT / "README.md")
    assert len(links) > 10
    for link in links:
        if link.startswith("#"):
            _check(ROOT / "README.md", link[1:], "README.md")
            continue
        assert link.startswith("https://"), f"README.md: relative link {link!r} is broken on PyPI"
        ours = _OURS.match(link)
        if link.startswith(REPOSITORY) or "agentmeter/agentmeter" in link:
            assert ours, f"README.md: {link!r}: link files as {REPOSITORY}/blob/main/PATH"
        if ours:
            _check(ROOT / ours.group("path"), ours.group("anchor"), "README.md")


@pytest.mark.parametrize("page", [p for p in doc_files() if p.name != "README.md"], ids=lambda p: p.name)
def test_docs_links_name_files_that_exist(page: Path) -> None:
    for link in _links(page):
        if re.match(r"^[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        _check((page.parent / target).resolve() if target else page, anchor or None, str(page.relative_to(ROOT)))
