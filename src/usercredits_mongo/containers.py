"""Dependency-injection wiring of the MongoDB backend (dependency-injector).

``MongoContainer`` (config ``uri`` and ``db``) provides a Mongo ``dao_factory`` that
overrides the core's in-memory default::

    mongo = MongoContainer(config={"uri": "mongodb://localhost:27017", "db": "shop"})
    core = UserCreditsContainer(dao_factory=mongo.dao_factory)
    service = core.service()
    ...
    mongo.shutdown_resources()  # closes the connection
"""

from __future__ import annotations

from collections.abc import Iterator

from dependency_injector import containers, providers

from usercredits.containers import ThreadSafeResource
from usercredits_mongo.factory import MongoDaoFactory


def open_dao_factory(uri: str, db: str | None = None) -> Iterator[MongoDaoFactory]:
    """A factory on ``uri`` / ``db``, closed when the container shuts its resources down."""
    factory = MongoDaoFactory.from_uri(uri, db)
    try:
        yield factory
    finally:
        factory.close()


class MongoContainer(containers.DeclarativeContainer):
    """The MongoDB backend's providers: ``config`` (``uri``, ``db``) and ``dao_factory`` (one
    factory, so one database client, per container, opened on first use, closed by
    ``shutdown_resources()``; safe to call from several threads at once)."""

    config = providers.Configuration()

    dao_factory: ThreadSafeResource[MongoDaoFactory] = ThreadSafeResource(
        open_dao_factory, uri=config.uri, db=config.db
    )
