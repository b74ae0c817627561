"""SQL backend of usercredits on SQLAlchemy 2: SQLite (the standard library's driver) and
PostgreSQL (psycopg 3).

``SqlDaoFactory.from_url("sqlite:///credits.db")`` or
``SqlDaoFactory.from_url("postgresql://user@host/shop")``; :data:`metadata` holds the tables,
for applications that manage their schema with their own migrations.
"""

from usercredits_sql.dao import (
    SqlCustomerDao,
    SqlOfferDao,
    SqlOrderDao,
    SqlTokenTimetableDao,
    SqlUserCreditsDao,
    SqlWebhookEventDao,
)
from usercredits_sql.factory import SqlDaoFactory, open_dao_factory
from usercredits_sql.schema import metadata

__all__ = [
    "SqlCustomerDao",
    "SqlDaoFactory",
    "SqlOfferDao",
    "SqlOrderDao",
    "SqlTokenTimetableDao",
    "SqlUserCreditsDao",
    "SqlWebhookEventDao",
    "metadata",
    "open_dao_factory",
]
