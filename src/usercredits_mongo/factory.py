"""The MongoDB backend's factory: one database, its DAOs, and its connection."""

from __future__ import annotations

import threading
import uuid
import weakref
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import mongoengine as me
import mongomock
from mongoengine.connection import ConnectionFailure, get_connection, get_db
from pymongo.database import Database
from pymongo.errors import PyMongoError

from usercredits.dao import DaoFactory
from usercredits.errors import InvalidInputError, StorageError
from usercredits_mongo.dao import (
    MongoCustomerDao,
    MongoOfferDao,
    MongoOrderDao,
    MongoStore,
    MongoTokenTimetableDao,
    MongoUserCreditsDao,
    MongoWebhookEventDao,
)

MONGOMOCK_SCHEME = "mongomock://"
"""URIs starting with this run on the embedded mongomock: in memory, one server per URI in a
process, gone with the process."""
DEFAULT_DB_NAME = "usercredits"
"""The database used when neither the URI nor ``db_name`` names one."""


_MONGOMOCK_LOCKS: dict[int, threading.RLock] = {}
_MONGOMOCK_LOCKS_GUARD = threading.Lock()


def _mongomock_lock(client: Any) -> threading.RLock:
    """The lock serialising every operation on one mongomock client, shared by all the
    factories using it (mongomock is not thread-safe)."""
    with _MONGOMOCK_LOCKS_GUARD:
        lock = _MONGOMOCK_LOCKS.get(id(client))
        if lock is None:
            lock = _MONGOMOCK_LOCKS[id(client)] = threading.RLock()
            weakref.finalize(client, _MONGOMOCK_LOCKS.pop, id(client), None)
        return lock


def _uri_database(uri: str) -> str | None:
    path = urlsplit(uri).path.lstrip("/")
    return unquote(path) or None


class MongoDaoFactory(DaoFactory):
    """The MongoDB backend: the DAOs of one database, safe to share between threads and
    between processes using the same database.

    Built on a mongoengine connection alias: :meth:`from_uri` registers a fresh alias of its
    own (so several factories coexist), or pass the alias of a connection the application
    made itself. Indexes are created at start-up, idempotently. On mongomock every
    operation is serialised by one lock per mongomock client (mongomock is not thread-safe).
    Driver errors are raised as :class:`~usercredits.errors.StorageError`."""

    def __init__(
        self,
        alias: str = me.DEFAULT_CONNECTION_NAME,
        db_name: str | None = None,
        *,
        owns_connection: bool = False,
    ):
        self._alias = alias
        self._owns_connection = owns_connection
        self._closed = False
        try:
            database: Database[Any] = (
                get_db(alias) if db_name is None else get_connection(alias)[db_name]
            )
        except ConnectionFailure as e:
            raise StorageError(f"no MongoDB connection named {alias!r}: {e}") from e
        client = database.client
        self._store = MongoStore(
            database,
            lock=_mongomock_lock(client) if isinstance(client, mongomock.MongoClient) else None,
        )
        self._store.create_indexes()
        self._offers = MongoOfferDao(self._store)
        self._orders = MongoOrderDao(self._store)
        self._ledger = MongoTokenTimetableDao(self._store)
        self._credits = MongoUserCreditsDao(self._store)
        self._customers = MongoCustomerDao(self._store)
        self._events = MongoWebhookEventDao(self._store)

    @classmethod
    def from_uri(cls, uri: str, db_name: str | None = None) -> Self:
        """A factory on the database ``db_name`` (else the URI's, else ``"usercredits"``).

        ``mongomock://...`` runs on the embedded mongomock (factories on one such URI share its
        in-memory server); any other URI connects with pymongo (timezone-aware, standard
        UUIDs). The connection alias is the factory's own: :meth:`close` ends it (mongoengine
        shares one client between aliases of identical settings and closes it with the last).
        Raises StorageError when MongoDB cannot be reached."""
        if not isinstance(uri, str) or "://" not in uri:
            raise InvalidInputError(f"a MongoDB URI is required, got {uri!r}")
        alias = f"usercredits-{uuid.uuid4().hex}"
        mock = uri.startswith(MONGOMOCK_SCHEME)
        host = "mongodb://" + (uri[len(MONGOMOCK_SCHEME) :] or "localhost") if mock else uri
        name = db_name or _uri_database(host) or DEFAULT_DB_NAME
        try:
            options: dict[str, Any] = {"tz_aware": True, "uuidRepresentation": "standard"}
            if mock:
                options["mongo_client_class"] = mongomock.MongoClient
            me.connect(alias=alias, host=host, **options)
            return cls(alias, name, owns_connection=True)
        except (PyMongoError, ConnectionFailure) as e:
            me.disconnect(alias)
            raise StorageError(f"cannot connect to MongoDB database {name!r}: {e}") from e
        except BaseException:
            me.disconnect(alias)
            raise

    @property
    def database(self) -> Database[Any]:
        """The pymongo database this factory works on."""
        return self._store.database

    def get_offer_dao(self) -> MongoOfferDao:
        return self._offers

    def get_order_dao(self) -> MongoOrderDao:
        return self._orders

    def get_token_timetable_dao(self) -> MongoTokenTimetableDao:
        return self._ledger

    def get_user_credits_dao(self) -> MongoUserCreditsDao:
        return self._credits

    def get_customer_dao(self) -> MongoCustomerDao:
        return self._customers

    def get_webhook_event_dao(self) -> MongoWebhookEventDao:
        return self._events

    def close(self) -> None:
        """End the connection this factory opened (a connection passed in is left open)."""
        if self._owns_connection and not self._closed:
            me.disconnect(self._alias)
        self._closed = True
