"""Choosing the storage backend of a command: a database URI, or memory.

The core never imports a backend package: a URI is opened by the factory that
the ``usercredits.backends`` entry point group names after the URI's scheme, a
callable ``(uri, db_name) -> DaoFactory``. The ``mongo`` extra installs
``mongodb`` (for ``mongodb://``, ``mongodb+srv://`` and ``mongomock://``); a
backend of your own registers its scheme the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click
from dependency_injector import containers, providers

from usercredits.containers import UserCreditsContainer
from usercredits.dao import DaoFactory
from usercredits.errors import UserCreditsError
from usercredits.service import PaymentService

BACKEND_GROUP = "usercredits.backends"
_SCHEMES = {"mongodb": "mongodb", "mongodb+srv": "mongodb", "mongomock": "mongodb"}
MEMORY_NOTICE = (
    "No --mongo-uri (nor USERCREDITS_MONGO_URI) given: running in memory, "
    "nothing will be kept after this command."
)

F = TypeVar("F", bound=Callable[..., Any])


class BackendError(UserCreditsError):
    """A backend cannot be opened: no backend for the URI, missing extra, no database name."""


def backend_options(command: F) -> F:
    """Add ``--mongo-uri`` and ``--db`` (also read from the environment) to a command."""
    command = click.option(
        "--db",
        envvar="USERCREDITS_MONGO_DB",
        metavar="NAME",
        help="MongoDB database (default: the URI's path). Env: USERCREDITS_MONGO_DB.",
    )(command)
    command = click.option(
        "--mongo-uri",
        envvar="USERCREDITS_MONGO_URI",
        metavar="URI",
        help="MongoDB to work on (mongodb://, mongodb+srv://, or mongomock:// for the embedded "
        "mongomock). Env: USERCREDITS_MONGO_URI. Without it: in memory, nothing kept.",
    )(command)
    return command


def redact(uri: str) -> str:
    """The URI without its password, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_backend(uri: str, db: str | None = None) -> DaoFactory:
    """The DaoFactory of the backend a URI names, via the ``usercredits.backends`` entry points.

    ``db`` defaults to the URI's path. Raises BackendError when no backend handles the
    scheme, the database name is missing or the backend's package is not installed."""
    parts = urlsplit(uri)
    if not parts.scheme:
        raise BackendError(f"not a database URI: {redact(uri)!r} (e.g. mongodb://host/NAME)")
    name = _SCHEMES.get(parts.scheme, parts.scheme)
    db_name = db or parts.path.lstrip("/").split("/")[0] or None
    if not db_name:
        raise BackendError(
            f"no database name: pass --db NAME (or USERCREDITS_MONGO_DB), "
            f"or put it in the URI ({parts.scheme}://host/NAME)"
        )
    found = entry_points(group=BACKEND_GROUP, name=name)
    if not found and name == "mongodb":
        raise BackendError(
            "MongoDB support is not installed: pip install 'usercredits[mongo]' "
            f"(no {name!r} entry point in group {BACKEND_GROUP!r})"
        )
    if not found:
        raise BackendError(
            f"no backend for {parts.scheme}:// URIs such as {redact(uri)!r}: expected "
            f"mongodb://, mongodb+srv:// or mongomock://, or a package registering a "
            f"{name!r} entry point in group {BACKEND_GROUP!r}"
        )
    entry = next(iter(found))
    try:
        factory = entry.load()
    except (ImportError, AttributeError) as e:
        raise BackendError(
            f"the {name!r} backend ({entry.value}) cannot be loaded: {e}; "
            "install it with pip install 'usercredits[mongo]'"
        ) from e
    try:
        dao_factory = factory(uri, db_name)
    except UserCreditsError:
        raise
    except Exception as e:
        raise BackendError(f"cannot open {redact(uri)} (database {db_name!r}): {e}") from e
    if not isinstance(dao_factory, DaoFactory):
        raise BackendError(f"{entry.value} returned {dao_factory!r}, not a DaoFactory")
    return dao_factory


def container_for(ctx: click.Context, uri: str | None, db: str | None) -> Any:
    """The container a command works with.

    A container passed as the click context's ``obj`` (embedding, tests) is used as
    is. Otherwise a :class:`UserCreditsContainer` on the backend ``uri`` names, or in
    memory (with a notice on standard error); the backend is closed with the command."""
    root = ctx.find_root()
    if isinstance(root.obj, containers.Container):
        return root.obj
    container = UserCreditsContainer()
    if uri:
        dao_factory = open_backend(uri, db)
        ctx.call_on_close(dao_factory.close)
        container.dao_factory.override(providers.Object(dao_factory))
    else:
        click.echo(MEMORY_NOTICE, err=True)
    root.obj = container
    return container


def service_for(ctx: click.Context, uri: str | None, db: str | None) -> PaymentService:
    """The payment service of :func:`container_for`'s container."""
    service: PaymentService = container_for(ctx, uri, db).service()
    return service
