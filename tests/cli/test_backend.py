"""Choosing the backend: ``--db URL`` (or ``USERCREDITS_DB``), the persistent SQLite default,
``memory://`` on request, and the older ``--mongo-uri URI --db NAME``."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, EntryPoints
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from usercredits import InMemoryDaoFactory
from usercredits.cli import backend, main
from usercredits.cli.backend import redact
from usercredits.cli.commands import wonderai_catalog_file

from .conftest import needs_mongo

CATALOGUE = str(wonderai_catalog_file())


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@dataclass
class FakeEntryPoint:
    name: str
    factory: Callable[..., Any]
    value: str = "tests.cli:fake_backend"

    def load(self) -> Callable[..., Any]:
        return self.factory


def install_backends(
    monkeypatch: pytest.MonkeyPatch, factories: Mapping[str, Callable[..., Any]]
) -> None:
    """Make ``factories`` the only entry points of the ``usercredits.backends`` group."""

    def entry_points(group: str, name: str) -> list[FakeEntryPoint]:
        assert group == backend.BACKEND_GROUP
        return [FakeEntryPoint(name, factories[name])] if name in factories else []

    monkeypatch.setattr(backend, "entry_points", entry_points)


def recording(calls: list[tuple[Any, ...]]) -> Callable[..., InMemoryDaoFactory]:
    """A backend factory that records its arguments and opens an in-memory backend."""

    def open_backend(*args: Any) -> InMemoryDaoFactory:
        calls.append(args)
        return InMemoryDaoFactory()

    return open_backend


def offers_in(url: str) -> int:
    result = run("catalog", "export", "--format", "json", "--db", url)
    assert result.exit_code == 0, result.stderr
    return len(json.loads(result.stdout)["offers"])


# -- the default and memory --------------------------------------------------------------------


def test_without_a_database_commands_use_the_sqlite_file_of_the_working_directory(
    sql_backend: None, tmp_path: Path
) -> None:
    result = run("grant", "ann", "credits", "10")
    assert result.exit_code == 0, result.stderr
    assert "using sqlite:///usercredits.db" in result.stderr
    assert str(tmp_path / "usercredits.db") in result.stderr
    assert "--db URL or USERCREDITS_DB" in result.stderr
    assert (tmp_path / "usercredits.db").is_file()


def test_the_default_database_keeps_what_a_command_wrote(sql_backend: None) -> None:
    run("grant", "ann", "credits", "10")
    result = run("balance", "ann", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["groups"][0]["tokens"] == 10


def test_the_expiry_cron_job_without_a_database_works_on_the_persistent_default(
    sql_backend: None,
) -> None:
    run("grant", "ann", "credits", "10")
    result = run("expire", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["users_checked"] == 1
    assert "in memory" not in result.stderr


def test_memory_is_used_when_asked_for_and_says_nothing_is_kept(tmp_path: Path) -> None:
    result = run("--db", "memory://", "grant", "ann", "credits", "10")
    assert result.exit_code == 0, result.stderr
    assert "Running in memory (memory://): nothing will be kept" in result.stderr
    assert run("--db", "memory://", "balance", "ann").exit_code == 1
    assert list(tmp_path.iterdir()) == []


# -- where the database is given ---------------------------------------------------------------


def test_the_database_may_be_given_after_the_command_name() -> None:
    result = run("grant", "ann", "credits", "10", "--db", "memory://")
    assert result.exit_code == 0, result.stderr
    assert "Running in memory" in result.stderr


def test_the_database_given_after_the_command_name_wins_over_the_one_before(
    tmp_path: Path,
) -> None:
    result = run(
        "--db", "sqlite:///before.db", "grant", "ann", "credits", "10", "--db", "memory://"
    )
    assert result.exit_code == 0, result.stderr
    assert "Running in memory" in result.stderr
    assert not (tmp_path / "before.db").exists()


def test_the_database_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERCREDITS_DB", "memory://")
    result = run("grant", "ann", "credits", "10")
    assert result.exit_code == 0, result.stderr
    assert "Running in memory" in result.stderr


def test_the_command_line_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("USERCREDITS_DB", "sqlite:///from-env.db")
    monkeypatch.setenv("USERCREDITS_MONGO_URI", "mongodb://198.51.100.1:1/prod")
    result = run("grant", "ann", "credits", "10", "--db", "memory://")
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "from-env.db").exists()


def test_a_sqlite_url_names_the_file_every_command_shares(
    sql_backend: None, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'credits.db'}"
    assert run("--db", url, "grant", "ann", "credits", "10").exit_code == 0
    result = run("balance", "ann", "--json", "--db", url)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["groups"][0]["tokens"] == 10
    assert "using sqlite:///usercredits.db" not in result.stderr


# -- MongoDB -----------------------------------------------------------------------------------


@pytest.fixture
def mongo_databases(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the MongoDB databases the commands open (through the real backend)."""
    from usercredits_mongo import MongoDaoFactory

    opened: list[str] = []

    def open_mongo(uri: str, db_name: str | None = None) -> MongoDaoFactory:
        factory = MongoDaoFactory.from_uri(uri, db_name)
        opened.append(factory.database.name)
        return factory

    install_backends(monkeypatch, {"mongodb": open_mongo})
    return opened


@needs_mongo
def test_a_mongo_url_names_its_database_in_its_path(mongo_databases: list[str]) -> None:
    result = run("catalog", "import", CATALOGUE, "--db", "mongomock://localhost/url-shop")
    assert result.exit_code == 0, result.stderr
    assert "20 created" in result.stdout
    assert mongo_databases == ["url-shop"]


@needs_mongo
def test_the_older_mongo_uri_and_database_name_keep_working(mongo_databases: list[str]) -> None:
    result = run(
        "catalog", "import", CATALOGUE, "--mongo-uri", "mongomock://localhost", "--db", "old-cli"
    )
    assert result.exit_code == 0, result.stderr
    assert "20 created" in result.stdout
    assert mongo_databases == ["old-cli"]


@needs_mongo
def test_the_older_mongo_variables_of_the_environment_keep_working(
    monkeypatch: pytest.MonkeyPatch, mongo_databases: list[str]
) -> None:
    monkeypatch.setenv("USERCREDITS_MONGO_URI", "mongomock://localhost")
    monkeypatch.setenv("USERCREDITS_MONGO_DB", "old-env")
    result = run("catalog", "import", CATALOGUE)
    assert result.exit_code == 0, result.stderr
    assert "sqlite" not in result.stderr
    assert mongo_databases == ["old-env"]


@needs_mongo
def test_a_database_name_after_the_command_completes_a_mongo_uri_before_it(
    mongo_databases: list[str],
) -> None:
    result = run(
        "--mongo-uri", "mongomock://localhost", "catalog", "import", CATALOGUE, "--db", "split"
    )
    assert result.exit_code == 0, result.stderr
    assert mongo_databases == ["split"]


# -- contradictions and unusable URLs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--db", "sqlite:///x.db", "--mongo-uri", "mongodb://h/x"],
            {},
            "--db sqlite:///x.db and --mongo-uri mongodb://h/x name two databases",
        ),
        (["--db", "shop"], {}, "--db 'shop' is not a URL: a database name needs a MongoDB URI"),
        (["--mongo-uri", "sqlite:///x.db"], {}, "--mongo-uri takes a MongoDB URI"),
        (
            [],
            {"USERCREDITS_DB": "sqlite:///x.db", "USERCREDITS_MONGO_URI": "mongodb://h/x"},
            "name two databases: unset one",
        ),
        ([], {"USERCREDITS_DB": "shop"}, "USERCREDITS_DB='shop' is not a URL"),
        (
            [],
            {
                "USERCREDITS_MONGO_URI": "mongodb://h",
                "USERCREDITS_DB": "shop",
                "USERCREDITS_MONGO_DB": "other",
            },
            "name two MongoDB databases",
        ),
    ],
)
def test_contradictory_backend_options_are_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run("balance", "ann", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "postgres://db/credits"], "(PostgreSQL URLs start with postgresql://)"),
        (["--db", "redis://localhost/0"], "no backend for redis:// URLs such as"),
        (["--db", "mongodb://localhost"], "no database name in mongodb://localhost"),
        (["--mongo-uri", "mongodb://localhost"], "no database name: pass --db NAME"),
    ],
)
def test_an_unusable_url_is_a_clear_error(args: list[str], message: str) -> None:
    result = run("balance", "ann", *args)
    assert result.exit_code == 1
    assert message in result.stderr


# -- backends found through entry points -------------------------------------------------------


@pytest.mark.parametrize("scheme", ["sqlite", "postgresql", "postgresql+psycopg"])
def test_a_url_backend_is_the_entry_point_of_its_scheme_called_with_the_url_alone(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    calls: list[tuple[Any, ...]] = []
    install_backends(monkeypatch, {scheme: recording(calls)})
    url = f"{scheme}://app@db.example/shop"
    assert run("--db", url, "grant", "ann", "credits", "10").exit_code == 0
    assert calls == [(url,)]


def test_a_mongo_url_is_opened_with_the_url_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    install_backends(monkeypatch, {"mongodb": recording(calls)})
    assert run("--db", "mongodb+srv://cluster.example/shop", "grant", "a", "c", "1").exit_code == 0
    assert calls == [("mongodb+srv://cluster.example/shop",)]


def test_the_older_mongo_form_passes_the_database_name(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    install_backends(monkeypatch, {"mongodb": recording(calls)})
    result = run("grant", "a", "c", "1", "--mongo-uri", "mongodb://db.example", "--db", "shop")
    assert result.exit_code == 0, result.stderr
    assert calls == [("mongodb://db.example", "shop")]


@pytest.mark.parametrize(
    "url", ["sqlite:///credits.db", "postgresql://db.example/shop", "postgresql+psycopg://h/shop"]
)
def test_a_sql_url_without_the_sql_extra_asks_to_install_it(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    install_backends(monkeypatch, {})
    result = run("balance", "ann", "--db", url)
    assert result.exit_code == 1
    assert "SQL database support is not installed: pip install 'usercredits[sql]'" in result.stderr


def test_the_default_database_without_the_sql_extra_asks_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_backends(monkeypatch, {})
    result = run("expire", "--json")
    assert result.exit_code == 1
    assert "using sqlite:///usercredits.db" in result.stderr
    assert "pip install 'usercredits[sql]'" in result.stderr
    assert result.stdout == ""


def test_a_backend_that_cannot_be_imported_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = EntryPoint("sqlite", "usercredits_missing_backend:Factory", backend.BACKEND_GROUP)
    monkeypatch.setattr(backend, "entry_points", lambda **kwargs: EntryPoints((broken,)))
    result = run("balance", "ann", "--db", "sqlite:///credits.db")
    assert result.exit_code == 1
    assert "cannot be loaded: No module named 'usercredits_missing_backend'" in result.stderr
    assert "pip install 'usercredits[sql]'" in result.stderr


def test_a_missing_mongo_extra_asks_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    install_backends(monkeypatch, {})
    result = run("balance", "ann", "--db", "mongodb://localhost/shop")
    assert result.exit_code == 1
    assert "MongoDB support is not installed: pip install 'usercredits[mongo]'" in result.stderr


# -- passwords ---------------------------------------------------------------------------------


def test_redact_hides_the_password_of_a_url() -> None:
    assert redact("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert redact("sqlite:///credits.db") == "sqlite:///credits.db"


def test_a_password_is_hidden_in_a_usage_error() -> None:
    result = run("balance", "ann", "--db", "sqlite:///x.db", "--mongo-uri", "mongodb://a:s3cret@h")
    assert "s3cret" not in result.output
    assert "mongodb://a:***@h" in result.stderr


def test_a_password_is_hidden_when_no_backend_handles_the_url() -> None:
    result = run("balance", "ann", "--db", "postgres://app:s3cret@db/x")
    assert "s3cret" not in result.output
    assert "postgres://app:***@db/x" in result.stderr


def test_a_password_is_hidden_in_the_error_of_a_backend_that_cannot_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(url: str) -> InMemoryDaoFactory:
        raise RuntimeError(f"authentication failed for {url}")

    install_backends(monkeypatch, {"postgresql": refuse})
    result = run("balance", "ann", "--db", "postgresql://app:s3cret@db/x")
    assert result.exit_code == 1
    assert "s3cret" not in result.output
    assert "cannot open postgresql://app:***@db/x: authentication failed" in result.stderr


# -- the demo ----------------------------------------------------------------------------------


def test_the_demo_plays_the_same_story_on_a_database_url() -> None:
    in_memory = run("demo")
    on_url = run("--db", "memory://", "demo")
    assert on_url.exit_code == 0, on_url.stderr
    assert on_url.stdout == in_memory.stdout


def test_the_demo_plays_on_an_empty_sqlite_file(sql_backend: None, tmp_path: Path) -> None:
    result = run("demo", "--db", "sqlite:///demo.db")
    assert result.exit_code == 0, result.stderr
    assert offers_in("sqlite:///demo.db") == 20


def test_the_demo_refuses_a_database_that_is_not_empty(sql_backend: None) -> None:
    run("grant", "ann", "credits", "10", "--db", "sqlite:///used.db")
    result = run("demo", "--db", "sqlite:///used.db")
    assert result.exit_code == 1
    assert "sqlite:///used.db is not empty (0 offers, users with credits: some)" in result.stderr


def test_the_demo_ignores_the_database_of_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("USERCREDITS_DB", "sqlite:///from-env.db")
    result = run("demo")
    assert result.exit_code == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_demo_takes_either_a_backend_or_a_database_url() -> None:
    result = run("demo", "--backend", "mongomock", "--db", "memory://")
    assert result.exit_code == 2
    assert "give either --backend or --mongo-uri/--db, not both" in result.stderr
