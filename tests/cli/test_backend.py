"""Choosing the backend: a URI opened through the ``usercredits.backends`` entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint, EntryPoints
from pathlib import Path

import pytest
from click.testing import CliRunner

from usercredits import InMemoryDaoFactory
from usercredits.cli import backend, main
from usercredits.cli.backend import BackendError, open_backend, redact
from usercredits.cli.commands import wonderai_catalog_file

from .conftest import needs_mongo


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner(env=env).invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_without_a_uri_commands_run_in_memory_and_say_so() -> None:
    code, _, err = run("balance", "ann")
    assert code == 1
    assert "running in memory, nothing will be kept" in err


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("postgres://db/credits", "no backend for postgres:// URIs such as 'postgres://db"),
        ("localhost:27017", "no backend for localhost:// URIs"),
        ("just-a-name", "not a database URI: 'just-a-name'"),
        ("mongodb://localhost", "no database name: pass --db NAME"),
    ],
)
def test_an_unusable_uri_is_a_clear_error(uri: str, message: str) -> None:
    code, _, err = run("balance", "ann", "--mongo-uri", uri)
    assert code == 1
    assert message in err


def test_a_missing_mongo_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "entry_points", lambda **kwargs: EntryPoints(()))
    with pytest.raises(BackendError, match=r"pip install 'usercredits\[mongo\]'"):
        open_backend("mongodb://localhost/credits")


def test_a_backend_that_cannot_be_imported_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = EntryPoint("mongodb", "usercredits_missing_backend:Factory", backend.BACKEND_GROUP)
    monkeypatch.setattr(backend, "entry_points", lambda **kwargs: EntryPoints((broken,)))
    with pytest.raises(BackendError, match="cannot be loaded: No module named"):
        open_backend("mongodb://localhost/credits")


def test_a_uri_scheme_selects_the_entry_point_of_that_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[tuple[str, str | None]] = []

    def sqlite_backend(uri: str, db_name: str | None) -> InMemoryDaoFactory:
        opened.append((uri, db_name))
        return InMemoryDaoFactory()

    def entry_points(group: str, name: str) -> EntryPoints:
        assert (group, name) == (backend.BACKEND_GROUP, "sqlite")
        point = EntryPoint(name, "unused:unused", group)
        monkeypatch.setattr(EntryPoint, "load", lambda self: sqlite_backend)
        return EntryPoints((point,))

    monkeypatch.setattr(backend, "entry_points", entry_points)
    assert isinstance(open_backend("sqlite:///var/credits", "main"), InMemoryDaoFactory)
    assert opened == [("sqlite:///var/credits", "main")]


def test_passwords_are_hidden_in_messages() -> None:
    assert (
        redact("mongodb://app:s3cret@db.example:27017/x") == "mongodb://app:***@db.example:27017/x"
    )
    _, _, err = run("balance", "ann", "--mongo-uri", "postgres://app:s3cret@db/x")
    assert "s3cret" not in err
    assert "app:***@db" in err


@needs_mongo
def test_a_mongomock_uri_runs_the_command_on_mongo() -> None:
    code, out, err = run(
        "catalog",
        "import",
        str(wonderai_catalog_file()),
        "--mongo-uri",
        "mongomock://localhost",
        "--db",
        "cli",
    )
    assert code == 0, err
    assert "20 created, 0 updated, 0 unchanged" in out
    assert "running in memory" not in err


@needs_mongo
def test_the_uri_and_database_may_come_from_the_environment(tmp_path: Path) -> None:
    env = {"USERCREDITS_MONGO_URI": "mongomock://localhost", "USERCREDITS_MONGO_DB": "cli"}
    code, out, err = run("catalog", "import", str(wonderai_catalog_file()), env=env)
    assert code == 0, err
    assert "running in memory" not in err
    assert "20 created" in out
