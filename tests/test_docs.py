"""The README and docs/ stand alone in a clone: every repository path they cite exists, and none leaves it.

A clone has nothing beside it: a path out of the repository (a sibling folder, a folder of the machine the text
was written on) or a script never committed sends the reader nowhere. The same holds for the comments and
docstrings of the code, the configs and the scripts. Parts still to come are cited only in docs/architecture.md's
"Where the next parts go", whose paths need not exist yet.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
#: Top-level folders of the repository: a path in the text that starts with one of them names a repository file.
TOP = ("agent", "protocols", "sim_hw", "central", "tests", "benchmarks", "docs", "config", "scripts", "systemd")
#: A path out of the repository: a sibling folder reached with ``..`` from the root, or the build machine's folders.
OUTSIDE = re.compile(r"(?<![\w.])\.\./(?:shared|[A-Z]+\.md)|(?<![\w.])/work/|(?<![\w.])/tmp/\w+\.py\b")
REPO_PATH = re.compile(rf"(?<![\w./<>-])((?:{'|'.join(TOP)})/[\w./-]*)")
MD_LINK = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]*))?\)")
PLACEHOLDER_NEXT = "<*{$"  # ``tests/test_<subject>.py``, ``docs/pq*.md``: a pattern, not a file
NEXT_PARTS = "## Where the next parts go"
TEXT_SUFFIXES = {".py", ".md", ".toml", ".sh", ".service", ".dss", ".txt", ""}  # "": scripts/site-credentials


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _texts() -> list[Path]:
    """Every committed text the reader of a clone sees: docs, code, configs, scripts, unit files."""
    out = _docs() + [ROOT / "Makefile", ROOT / "pyproject.toml", ROOT / "gridedge.py", ROOT / "gridedge_demo.py"]
    for top in TOP:
        out += [p for p in sorted((ROOT / top).rglob("*")) if p.suffix in TEXT_SUFFIXES]
    return [p for p in out if p.is_file() and p != THIS and "__pycache__" not in p.parts]


def _planned(text: str | None = None) -> set[str]:
    """The paths docs/architecture.md (or ``text``) gives to parts still to come: none when every part is built."""
    if text is None:
        path = ROOT / "docs" / "architecture.md"
        text = path.read_text() if path.is_file() else ""
    section = text.split(NEXT_PARTS, 1)[1].split("\n## ", 1)[0] if NEXT_PARTS in text else ""
    return {m.rstrip("/.") for m in REPO_PATH.findall(section)}


def cited_paths(text: str) -> list[str]:
    """Repository paths named in ``text`` (``agent/pq/``, ``benchmarks/pq.py``), patterns and placeholders left out."""
    out = []
    for m in REPO_PATH.finditer(text):
        if text[m.end() : m.end() + 1] and text[m.end()] in PLACEHOLDER_NEXT:
            continue
        out.append(m.group(1).rstrip("."))
    return out


def outside_paths(text: str) -> list[str]:
    """What in ``text`` points out of the repository."""
    return [m.group(0) for m in OUTSIDE.finditer(text)]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        return ""


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("See `../shared/ARCHITECTURE.md` for the layers.", ["../shared"]),
        ("(the source: /work/shared/LIBRARIES.md)", ["/work/"]),
        ("`.venv/bin/python /tmp/wf_bench.py` (the script)", ["/tmp/wf_bench.py"]),
        ("links such as [the store](store.md) and `../run/agent.db` stay", []),
        ("the stores go to /var/lib/gridedge/agent.db", []),
    ],
)
def test_a_path_out_of_the_repository_is_recognised(text: str, found: list[str]) -> None:
    assert outside_paths(text) == found


def test_cited_paths_skip_patterns_and_keep_real_paths() -> None:
    text = "`tests/test_<subject>.py`, `docs/pq*.md`, run `benchmarks/pq.py`, in agent/pq/offline."
    assert cited_paths(text) == ["benchmarks/pq.py", "agent/pq/offline"]


def test_no_committed_text_points_out_of_the_repository() -> None:
    found = {str(p.relative_to(ROOT)): hits for p in _texts() if (hits := outside_paths(_read(p)))}
    assert found == {}


def test_every_repository_path_the_docs_cite_exists() -> None:
    planned = _planned()
    missing: dict[str, list[str]] = {}
    for doc in _docs():
        for cited in cited_paths(doc.read_text()):
            if cited.rstrip("/") not in planned and not (ROOT / cited).exists():
                missing.setdefault(str(doc.relative_to(ROOT)), []).append(cited)
    assert missing == {}


def test_every_toml_example_in_the_docs_is_toml() -> None:
    """A ```toml block a reader copies parses (an inline table spans one line in TOML 1.0); two files side by
    side go in a ```text block."""
    import tomllib

    bad = {}
    for doc in _docs():
        for n, block in enumerate(re.findall(r"^```toml\n(.*?)^```", doc.read_text(), flags=re.S | re.M)):
            try:
                tomllib.loads(block)
            except tomllib.TOMLDecodeError as err:
                bad[f"{doc.relative_to(ROOT)} block {n + 1}"] = str(err)
    assert bad == {}


def test_every_committed_toml_file_is_toml() -> None:
    import tomllib

    bad = {}
    for path in sorted(ROOT.glob("config/**/*.toml")) + [ROOT / "pyproject.toml"]:
        try:
            tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            bad[str(path.relative_to(ROOT))] = str(err)
    assert bad == {}


def anchors(markdown: str) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them (lower case, punctuation dropped, spaces to -)."""
    heads = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_anchors_are_made_as_github_makes_them() -> None:
    assert anchors("# Top\n## Figures\n### What the wire does not carry (yet)\n") == {
        "top", "figures", "what-the-wire-does-not-carry-yet"}  # fmt: skip


def test_every_link_between_the_docs_resolves_inside_the_repository() -> None:
    bad: dict[str, list[str]] = {}
    for doc in _docs():
        for target, anchor in MD_LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path = (doc.parent / target).resolve() if target else doc
            if not path.is_relative_to(ROOT) or not path.exists():
                bad.setdefault(str(doc.relative_to(ROOT)), []).append(target)
            elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
                bad.setdefault(str(doc.relative_to(ROOT)), []).append(f"{target}#{anchor}")
    assert bad == {}


def test_the_planned_paths_are_read_from_the_map() -> None:
    page = (
        f"# Map\n\n{NEXT_PARTS}\n\n| part | where |\n|---|---|\n| x | `central/forecast/` |\n\n## Scale\n`agent/pq/`\n"
    )
    assert _planned(page) == {"central/forecast"}
    assert _planned("# Map\n\n## Scale\n`central/forecast/`\n") == set()
