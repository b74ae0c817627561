"""The code in README.md and docs/*.md works as shown.

Conventions of the Markdown files:

- a ```` ```python ```` block is executed; the blocks of one file run in order in
  one namespace (a later block uses what an earlier one defined), in a temporary
  working directory;
- in an executed block, the comment lines right after a ``print(...)`` call are
  its output: the block must print exactly those lines;
- a ```` ```python norun ```` block is only compiled (it needs a real server or
  secret); keep those few;
- a ```` ```yaml catalog ```` or ```` ```json catalog ```` block is a catalogue file
  and must validate;
- other blocks (``bash``, ``text``...) are not checked;
- relative links point to files that exist.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from usercredits.catalog import loads_catalog

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@dataclass
class Block:
    info: list[str]
    code: str
    line: int

    @property
    def language(self) -> str:
        return self.info[0] if self.info else ""


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    return [
        Block(
            info=match.group(1).split(),
            code=match.group(2),
            line=text.count("\n", 0, match.start(2)) + 1,
        )
        for match in FENCE.finditer(text)
    ]


def expected_output(block: Block) -> list[str] | None:
    """The ``# ...`` lines that follow ``print(`` lines, None when the block shows no output."""
    lines = block.code.splitlines()
    expected: list[str] = []
    shown = False
    for index, line in enumerate(lines):
        if not line.lstrip().startswith("print("):
            continue
        shown = True
        end = index
        depth = line.count("(") - line.count(")")
        while depth > 0 and end + 1 < len(lines):
            end += 1
            depth += lines[end].count("(") - lines[end].count(")")
        for following in lines[end + 1 :]:
            comment = following.strip()
            if not comment.startswith("#"):
                break
            expected.append(comment[2:] if comment.startswith("# ") else comment[1:])
    return expected if shown else None


def compiled(path: Path, block: Block) -> object:
    """The block compiled so that tracebacks show the Markdown file and its line numbers."""
    padded = "\n" * (block.line - 1) + block.code
    return compile(padded, str(path.relative_to(ROOT)), "exec")


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for block in blocks(path):
        if block.language != "python":
            continue
        code = compiled(path, block)
        if "norun" in block.info:
            continue
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(code, namespace)
        expected = expected_output(block)
        if expected is not None:
            assert output.getvalue().splitlines() == expected, (
                f"{path.name}:{block.line}: the block prints other lines than its comments say"
            )


@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_catalogue_blocks_validate(path: Path) -> None:
    for block in blocks(path):
        if "catalog" in block.info and block.language in ("yaml", "json"):
            loads_catalog(block.code, block.language, f"{path.name}:{block.line}")


@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_relative_links_exist(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_the_docs_have_code_that_runs() -> None:
    executed = sum(
        1
        for path in FILES
        for block in blocks(path)
        if block.language == "python" and "norun" not in block.info
    )
    assert executed >= 10
