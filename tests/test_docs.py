"""The documents point into each other (the README's table into docs/RESULTS.md, bench and
research notes back): every relative link must land on a file and, for a markdown anchor, on one
of that file's headings (GitHub's slug)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    {
        ROOT / "README.md",
        ROOT / "bench" / "RESULTS.md",
        ROOT / "research" / "README.md",
        *(ROOT / "docs").glob("*.md"),
        # the packages' READMEs, not a tool's cache (.pytest_cache/README.md appears after a run)
        *(p for p in ROOT.glob("*/README.md") if not p.parent.name.startswith(".")),
    }
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    """The file's headings' slugs, read once; a `#` line inside a code fence is a comment."""
    out, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            out.add(slug(line.lstrip("#")))
    return out


def broken_links(document: Path) -> list[str]:
    out = []
    for m in LINK.finditer(document.read_text(encoding="utf-8")):
        target = m.group(1)
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.exists():
            out.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            out.append(f"{target}: no such heading")
    return out


def test_slug_matches_github() -> None:
    assert slug(" The alias's own tokens: what `small` lacked (now served)") == (
        "the-aliass-own-tokens-what-small-lacked-now-served"
    )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document: Path) -> None:
    assert broken_links(document) == []


def test_a_broken_link_is_caught(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "# Real heading\n```\n# gone\n```\n[x](a.md#real-heading) [y](a.md#gone) [z](b.md)\n"
    )
    assert broken_links(tmp_path / "a.md") == ["a.md#gone: no such heading", "b.md: no such file"]
