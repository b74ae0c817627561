"""Choosing the storage backend of a command: a database URL.

``--db URL`` (or ``USERCREDITS_DB``) names the database: ``sqlite:///path.db``,
``postgresql://…``, ``mongodb://host/NAME``, ``mongodb+srv://…/NAME``, ``mongomock://…/NAME``
or ``memory://``. Without one, the persistent ``sqlite:///usercredits.db`` of the working
directory, named on standard error. The older ``--mongo-uri URI --db NAME`` (and
``USERCREDITS_MONGO_URI`` / ``USERCREDITS_MONGO_DB``) still names a MongoDB.

The core never imports a backend package: a URL is opened by the callable that the
``usercredits.backends`` entry point group names after the URL's scheme, called with the
URL alone (``url -> DaoFactory``); the ``mongo`` extra registers ``mongodb`` (for
``mongodb://``, ``mongodb+srv://`` and ``mongomock://``, also called as ``(uri, db_name)``
by the older form), the ``sql`` extra ``sqlite``, ``postgresql`` and ``postgresql+psycopg``.
``memory://`` is built in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click
from dependency_injector import containers, providers

from usercredits.containers import UserCreditsContainer
from usercredits.dao import DaoFactory
from usercredits.errors import UserCreditsError
from usercredits.memory import InMemoryDaoFactory
from usercredits.service import PaymentService

BACKEND_GROUP = "usercredits.backends"
DEFAULT_URL = "sqlite:///usercredits.db"
MEMORY_URL = "memory://"
DB_ENV = "USERCREDITS_DB"
MONGO_URI_ENV = "USERCREDITS_MONGO_URI"
MONGO_DB_ENV = "USERCREDITS_MONGO_DB"

MONGO_SCHEMES = ("mongodb", "mongodb+srv", "mongomock")
_ENTRY_POINT_OF = dict.fromkeys(MONGO_SCHEMES, "mongodb")
"""The entry point of each scheme that does not have its own name."""
_EXTRA_OF = {"mongodb": "mongo", "sqlite": "sql", "postgresql": "sql", "postgresql+psycopg": "sql"}
"""The extra of the distribution that installs each known entry point."""
_KNOWN = "sqlite:///, postgresql://, mongodb://, mongodb+srv://, mongomock:// or memory://"

MEMORY_NOTICE = "Running in memory (memory://): nothing will be kept after this command."

F = TypeVar("F", bound=Callable[..., Any])


class BackendError(UserCreditsError):
    """A backend cannot be opened: no backend for the URL, missing extra, no database name,
    database unreachable."""


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _scrub(text: str, url: str) -> str:
    """``text`` (a driver's message) with the URL's password hidden."""
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


def is_url(value: str) -> bool:
    """Whether a ``--db`` value is a URL (else it is the older form's MongoDB database name)."""
    return "://" in value


@dataclass(frozen=True)
class Backend:
    """The database a command works on: a URL, or (the older form) a MongoDB URI with the
    name of its database."""

    url: str
    mongo_db: str | None = None
    """The database name given by the older form (``--db NAME`` with ``--mongo-uri``)."""
    legacy: bool = False
    """Named by ``--mongo-uri`` / ``USERCREDITS_MONGO_URI``."""
    default: bool = False
    """Chosen because nothing else was: :data:`DEFAULT_URL`."""

    @property
    def in_memory(self) -> bool:
        """Whether this is the built-in ``memory://`` backend."""
        return urlsplit(self.url).scheme == "memory"

    def describe(self) -> str:
        """The backend for messages, password hidden."""
        if self.legacy and self.mongo_db:
            return f"{redact(self.url)} (database {self.mongo_db!r})"
        return redact(self.url)

    def open(self) -> DaoFactory:
        """The DaoFactory of this backend. Raises BackendError when it cannot be opened."""
        if self.legacy:
            return open_mongo(self.url, self.mongo_db)
        return open_url(self.url)


# -- choosing -----------------------------------------------------------------------------


def _legacy(uri: str, name: str | None, given_by: str) -> Backend:
    scheme = urlsplit(uri).scheme
    if scheme not in MONGO_SCHEMES:
        raise click.UsageError(
            f"{given_by} takes a MongoDB URI (mongodb://, mongodb+srv:// or mongomock://), "
            f"not {redact(uri)!r}: give any other database as --db URL"
        )
    return Backend(uri, mongo_db=name, legacy=True)


def _env_mongo_db(environ: Mapping[str, str]) -> str | None:
    """The older form's database name from the environment (USERCREDITS_MONGO_DB, or a
    USERCREDITS_DB that is not a URL)."""
    by_db = environ.get(DB_ENV) or None
    if by_db is not None and is_url(by_db):
        by_db = None
    by_mongo_db = environ.get(MONGO_DB_ENV) or None
    if by_db and by_mongo_db and by_db != by_mongo_db:
        raise click.UsageError(
            f"{DB_ENV}={by_db!r} and {MONGO_DB_ENV}={by_mongo_db!r} name two MongoDB "
            "databases: unset one"
        )
    return by_db or by_mongo_db


def merge_options(
    command: tuple[str | None, str | None], root: tuple[str | None, str | None]
) -> tuple[str | None, str | None]:
    """The ``(db, mongo_uri)`` of a command line: the command's choice wins over the one made
    before the command's name. A ``--db URL`` or a ``--mongo-uri`` given after the name
    replaces what came before it; a ``--db NAME`` after it replaces the name only."""
    db, mongo_uri = command
    root_db, root_uri = root
    if db is not None and is_url(db):
        return db, mongo_uri
    if mongo_uri is not None:
        if db is None and root_db is not None and not is_url(root_db):
            db = root_db
        return db, mongo_uri
    if db is not None:
        return db, root_uri
    return root_db, root_uri


def choose_backend(
    db: str | None, mongo_uri: str | None, environ: Mapping[str, str] | None = None
) -> Backend:
    """The backend named by a command line's ``--db`` and ``--mongo-uri`` (when given), else by
    the environment (``USERCREDITS_DB``, or ``USERCREDITS_MONGO_URI`` with
    ``USERCREDITS_MONGO_DB``), else :data:`DEFAULT_URL`.

    Raises click.UsageError for contradictory choices: a URL and a MongoDB URI together, a
    database name without a MongoDB URI, a non-MongoDB URI given as the MongoDB URI."""
    env = os.environ if environ is None else environ
    if db is not None and is_url(db):
        if mongo_uri is not None:
            raise click.UsageError(
                f"--db {redact(db)} and --mongo-uri {redact(mongo_uri)} name two databases: "
                "give --db URL alone (or the older --mongo-uri URI with --db NAME)"
            )
        return Backend(db)
    if mongo_uri is not None:
        return _legacy(mongo_uri, db or _env_mongo_db(env), "--mongo-uri")
    if db is not None:
        env_uri = env.get(MONGO_URI_ENV) or None
        if env_uri is None:
            raise click.UsageError(
                f"--db {db!r} is not a URL: a database name needs a MongoDB URI (--mongo-uri "
                f"or {MONGO_URI_ENV}); else give a URL such as sqlite:///{db}.db or "
                f"mongodb://localhost/{db}"
            )
        return _legacy(env_uri, db, MONGO_URI_ENV)
    env_db = env.get(DB_ENV) or None
    env_uri = env.get(MONGO_URI_ENV) or None
    if env_db is not None and is_url(env_db):
        if env_uri is not None:
            raise click.UsageError(
                f"{DB_ENV}={redact(env_db)} and {MONGO_URI_ENV}={redact(env_uri)} name two "
                f"databases: unset one (or choose with --db URL)"
            )
        return Backend(env_db)
    if env_uri is not None:
        return _legacy(env_uri, _env_mongo_db(env), MONGO_URI_ENV)
    if env_db is not None:
        raise click.UsageError(
            f"{DB_ENV}={env_db!r} is not a URL: give a URL such as sqlite:///{env_db}.db, "
            f"or set {MONGO_URI_ENV} for a MongoDB database name"
        )
    return Backend(DEFAULT_URL, default=True)


def default_notice(cwd: Path | None = None) -> str:
    """The line that says the default database is used, and how to choose another."""
    where = (cwd or Path.cwd()) / "usercredits.db"
    return (
        f"No --db given (nor {DB_ENV}): using {DEFAULT_URL} ({where}); choose another "
        f"database with --db URL or {DB_ENV} (memory:// keeps nothing)."
    )


# -- opening ------------------------------------------------------------------------------


def _install_hint(name: str) -> str:
    extra = _EXTRA_OF.get(name)
    return f"pip install 'usercredits[{extra}]'" if extra else "install the backend's package"


def _factory_of(name: str, url: str) -> Callable[..., Any]:
    """The callable of entry point ``name`` of the backends group."""
    found = entry_points(group=BACKEND_GROUP, name=name)
    if not found:
        if name in _EXTRA_OF:
            support = "MongoDB" if name == "mongodb" else "SQL database"
            raise BackendError(
                f"{support} support is not installed: {_install_hint(name)} "
                f"(no {name!r} entry point in group {BACKEND_GROUP!r}, needed by {redact(url)})"
            )
        scheme = urlsplit(url).scheme
        hint = " (PostgreSQL URLs start with postgresql://)" if scheme == "postgres" else ""
        raise BackendError(
            f"no backend for {scheme}:// URLs such as {redact(url)!r}{hint}: expected {_KNOWN}, "
            f"or a package registering a {name!r} entry point in group {BACKEND_GROUP!r}"
        )
    entry = next(iter(found))
    try:
        factory: Callable[..., Any] = entry.load()
    except ImportError as e:
        raise BackendError(
            f"the {name!r} backend ({entry.value}) cannot be loaded: {e}; "
            f"install it with {_install_hint(name)}"
        ) from e
    except Exception as e:
        raise BackendError(
            f"the {name!r} backend ({entry.value}) cannot be loaded: {type(e).__name__}: {e}"
        ) from e
    return factory


def _call(name: str, url: str, what: str, factory: Callable[..., Any], *args: Any) -> DaoFactory:
    try:
        dao_factory = factory(*args)
    except ImportError as e:
        raise BackendError(
            f"cannot open {what}: {_scrub(str(e), url)}; install it with {_install_hint(name)}"
        ) from e
    except Exception as e:
        raise BackendError(f"cannot open {what}: {_scrub(str(e), url)}") from e
    if not isinstance(dao_factory, DaoFactory):
        raise BackendError(f"the {name!r} backend returned {dao_factory!r}, not a DaoFactory")
    return dao_factory


def open_url(url: str) -> DaoFactory:
    """The DaoFactory of the database a URL names: ``memory://`` in memory, any other scheme by
    the ``usercredits.backends`` entry point of its name, called with the URL alone.

    Raises BackendError when no backend handles the scheme, its package is not installed, a
    MongoDB URL names no database or the database cannot be opened."""
    parts = urlsplit(url)
    if not parts.scheme or not is_url(url):
        raise BackendError(f"not a database URL: {redact(url)!r} (expected {_KNOWN})")
    if parts.scheme == "memory":
        return InMemoryDaoFactory()
    if parts.scheme in MONGO_SCHEMES and not parts.path.strip("/"):
        raise BackendError(
            f"no database name in {redact(url)}: a MongoDB URL names its database in its path "
            f"({parts.scheme}://{parts.netloc or 'host'}/NAME)"
        )
    name = _ENTRY_POINT_OF.get(parts.scheme, parts.scheme)
    return _call(name, url, redact(url), _factory_of(name, url), url)


def open_mongo(uri: str, db_name: str | None = None) -> DaoFactory:
    """The DaoFactory of the older form: a MongoDB URI and a database name (default: the URI's
    path), by the ``mongodb`` entry point called as ``(uri, db_name)``."""
    parts = urlsplit(uri)
    name = db_name or parts.path.lstrip("/").split("/")[0] or None
    if not name:
        raise BackendError(
            f"no database name: pass --db NAME (or {MONGO_DB_ENV}), or put it in the URI "
            f"({parts.scheme}://host/NAME)"
        )
    what = f"{redact(uri)} (database {name!r})"
    return _call("mongodb", uri, what, _factory_of("mongodb", uri), uri, name)


# -- the options and the container of a command -------------------------------------------

_DB_HELP = (
    f"Database URL: sqlite:///file.db, postgresql://user@host/NAME, mongodb://host/NAME, "
    f"mongomock://host/NAME or memory:// (with --mongo-uri: a MongoDB database name). "
    f"Env: {DB_ENV}. Default: {DEFAULT_URL} in the working directory."
)
_MONGO_URI_HELP = (
    f"Older form: a MongoDB URI (mongodb://, mongodb+srv://, mongomock://), with --db NAME. "
    f"Env: {MONGO_URI_ENV} and {MONGO_DB_ENV}."
)


def backend_options(command: F) -> F:
    """Add ``--db`` and ``--mongo-uri`` to a command (read from the environment only when
    neither this command nor the root group is given one)."""
    command = click.option("--mongo-uri", metavar="URI", help=_MONGO_URI_HELP)(command)
    command = click.option("--db", metavar="URL", help=_DB_HELP)(command)
    return command


ROOT_DB = "usercredits.db"
ROOT_MONGO_URI = "usercredits.mongo_uri"


def command_line_options(
    ctx: click.Context, db: str | None, mongo_uri: str | None
) -> tuple[str | None, str | None]:
    """The ``(db, mongo_uri)`` of the command line: the command's, over the root group's."""
    meta = ctx.find_root().meta
    return merge_options((db, mongo_uri), (meta.get(ROOT_DB), meta.get(ROOT_MONGO_URI)))


def container_for(ctx: click.Context, db: str | None, mongo_uri: str | None) -> Any:
    """The container a command works with.

    A container passed as the click context's ``obj`` (embedding, tests) is used as is.
    Otherwise a :class:`UserCreditsContainer` on the backend the options or the environment
    name (:func:`choose_backend`), closed with the command; standard error says when it is the
    default database or memory."""
    root = ctx.find_root()
    if isinstance(root.obj, containers.Container):
        return root.obj
    backend = choose_backend(*command_line_options(ctx, db, mongo_uri))
    if backend.default:
        click.echo(default_notice(), err=True)
    elif backend.in_memory:
        click.echo(MEMORY_NOTICE, err=True)
    container = UserCreditsContainer()
    dao_factory = backend.open()
    ctx.call_on_close(dao_factory.close)
    container.dao_factory.override(providers.Object(dao_factory))
    root.obj = container
    return container


def service_for(ctx: click.Context, db: str | None, mongo_uri: str | None) -> PaymentService:
    """The payment service of :func:`container_for`'s container."""
    service: PaymentService = container_for(ctx, db, mongo_uri).service()
    return service
