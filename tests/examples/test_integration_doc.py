"""docs/integration.md is built on the example applications: its code blocks that name a file
are parts of that file, verbatim, and its table of errors is the examples' mapping."""

from __future__ import annotations

import re
from pathlib import Path

import usercredits
from examples.http_errors import BAD_WEBHOOK, HTTP_STATUS, http_status

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "integration.md"
FENCE = re.compile(r"^```python norun (\S+)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
ROW = re.compile(r"^\| (.*?`\w+Error`.*?) \| (\d{3}) \|", re.MULTILINE)


def excerpts() -> list[tuple[str, str]]:
    return FENCE.findall(DOC.read_text(encoding="utf-8"))


def error_rows() -> list[tuple[str, int]]:
    section = DOC.read_text(encoding="utf-8").split("## Errors and HTTP statuses")[1]
    return [(cell, int(status)) for cell, status in ROW.findall(section)]


def error_types(cell: str) -> list[type[usercredits.UserCreditsError]]:
    named = [getattr(usercredits, name, None) for name in re.findall(r"`(\w+)`", cell)]
    return [
        kind
        for kind in named
        if isinstance(kind, type) and issubclass(kind, usercredits.UserCreditsError)
    ]


def test_every_excerpt_is_a_verbatim_part_of_its_file() -> None:
    for path, code in excerpts():
        assert code in (ROOT / path).read_text(encoding="utf-8"), f"{path} has no:\n{code}"


def test_both_applications_are_shown() -> None:
    shown = {path for path, _ in excerpts()}

    assert {"examples/fastapi_app.py", "examples/flask_app.py"} <= shown


def test_the_table_gives_each_error_the_status_the_examples_answer() -> None:
    rows = error_rows()

    assert rows
    for cell, status in rows:
        for kind in error_types(cell):
            expected = BAD_WEBHOOK if "handle_webhook" in cell else http_status(kind("x"))
            assert status == expected, f"{kind.__name__}: the table says {status}"


def test_the_table_names_every_error_the_examples_map() -> None:
    tabled = {kind for cell, _ in error_rows() for kind in error_types(cell)}

    assert {kind for kind, _ in HTTP_STATUS} <= tabled
