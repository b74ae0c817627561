"""The real entry points: ``python -m usercredits`` and the ``usercredits`` script, in processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import needs_mongo


def usercredits(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usercredits", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def test_help_lists_the_commands() -> None:
    result = usercredits("--help")
    assert result.returncode == 0
    for command in ("demo", "catalog", "expire", "balance", "consume", "grants", "history"):
        assert command in result.stdout


def test_the_demo_runs_as_a_module() -> None:
    result = usercredits("demo")
    assert result.returncode == 0, result.stderr
    assert "tokens removed from ai-tokens" in result.stdout


def test_a_missing_catalogue_file_exits_with_2(tmp_path: Path) -> None:
    result = usercredits("catalog", "import", "missing.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "'missing.yaml' does not exist" in result.stderr


def test_an_invalid_catalogue_exits_with_1_naming_entry_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"offers": [{"key": "x", "name": "X"}]}')
    result = usercredits("catalog", "import", "bad.json", cwd=tmp_path)
    assert result.returncode == 1
    assert "bad.json: offers[0] 'x', field 'kind': missing" in result.stderr


def test_an_unknown_user_exits_with_1() -> None:
    result = usercredits("balance", "nobody", "--db", "memory://")
    assert result.returncode == 1
    assert "unknown user 'nobody'" in result.stderr


def test_a_bad_count_exits_with_2() -> None:
    result = usercredits("consume", "ann", "credits", "lots")
    assert result.returncode == 2
    assert "must be a positive whole number, got 'lots'" in result.stderr


def test_expire_without_a_database_runs_on_the_sqlite_file_of_the_working_directory(
    sql_backend: None, tmp_path: Path
) -> None:
    result = usercredits("expire", "--json", "--warn-days", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["users_checked"] == 0
    assert "using sqlite:///usercredits.db" in result.stderr
    assert (tmp_path / "usercredits.db").is_file()


def test_a_bad_low_balance_option_exits_with_2() -> None:
    result = usercredits("expire", "--low", "ai-tokens")
    assert result.returncode == 2
    assert "expected GROUP=MIN" in result.stderr


@needs_mongo
def test_a_mongomock_url_finds_the_backend_through_its_entry_point(tmp_path: Path) -> None:
    (tmp_path / "offers.yaml").write_text(usercredits("catalog", "example").stdout)
    result = usercredits(
        "catalog", "import", "offers.yaml", "--db", "mongomock://localhost/cli", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "20 created" in result.stdout


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("usercredits")
    if not script.exists():
        pytest.skip("no usercredits script next to this interpreter")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "version" in result.stdout
