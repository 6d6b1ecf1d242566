"""The README reads from the top (a table of contents that fits one screen, links that
land), and the contributors' map of `app/` names every module there is."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")
ONE_SCREEN = 25  # lines


def headings(path: Path) -> list[str]:
    found, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.append(line.lstrip("#").strip())
    return found


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_the_readme_contents_fit_one_screen_and_name_every_section() -> None:
    text = README.read_text(encoding="utf-8")
    contents = text.split("\n## Contents\n", 1)[1].split("\n## ", 1)[0].strip()
    assert len(contents.splitlines()) <= ONE_SCREEN
    sections = {anchor(line[3:]) for line in text.splitlines() if line.startswith("## ")}
    listed = {target[1:] for target in LINK.findall(contents) if target.startswith("#")}
    assert sections - {"contents"} <= listed, "a README section missing from its contents"


def test_every_link_between_the_documents_lands() -> None:
    for document in DOCS:
        for target in LINK.findall(document.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://")):
                continue
            path, _, fragment = target.partition("#")
            landing = (document.parent / path).resolve() if path else document
            assert landing.exists(), f"{document.name} links to {target}, which is missing"
            if fragment and landing.suffix == ".md":
                known = {anchor(heading) for heading in headings(landing)}
                assert fragment in known, f"{document.name} links to {target}: no such heading"


def test_the_architecture_map_names_every_module_of_app() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = {
        path.relative_to(ROOT / "app").as_posix()
        for path in (ROOT / "app").rglob("*.py")
        if path.name != "__init__.py"
    }
    assert {module for module in modules if f"`{module}`" not in text} == set()
