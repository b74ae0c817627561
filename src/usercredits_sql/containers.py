"""Dependency-injection wiring of the SQL backend (dependency-injector).

``SqlContainer`` (config ``url``) provides a SQL ``dao_factory`` that overrides the core's
in-memory default::

    sql = SqlContainer(config={"url": "postgresql://app@db/shop"})
    core = UserCreditsContainer(dao_factory=sql.dao_factory)
    service = core.service()
    ...
    sql.shutdown_resources()  # closes the engine's connections
"""

from __future__ import annotations

from collections.abc import Iterator

from dependency_injector import containers, providers

from usercredits.containers import ThreadSafeResource
from usercredits_sql.factory import SqlDaoFactory


def open_dao_factory(url: str) -> Iterator[SqlDaoFactory]:
    """A factory on ``url`` (schema created when absent), closed when the container shuts
    its resources down."""
    factory = SqlDaoFactory.from_url(url)
    try:
        yield factory
    finally:
        factory.close()


class SqlContainer(containers.DeclarativeContainer):
    """The SQL backend's providers: ``config`` (``url``) and ``dao_factory`` (one factory per
    container, opened on first use, also by threads asking at once, and closed by
    ``shutdown_resources()``)."""

    config = providers.Configuration()

    dao_factory: ThreadSafeResource[SqlDaoFactory] = ThreadSafeResource(
        open_dao_factory, url=config.url
    )
