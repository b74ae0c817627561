"""MongoDB backend of usercredits (mongoengine documents, pymongo atomic operations).

``MongoDaoFactory.from_uri("mongodb://...", "mydb")`` connects to a MongoDB server;
``MongoDaoFactory.from_uri("mongomock://localhost", "mydb")`` runs on the embedded mongomock.
"""

from usercredits_mongo.dao import (
    MongoOfferDao,
    MongoOrderDao,
    MongoTokenTimetableDao,
    MongoUserCreditsDao,
)
from usercredits_mongo.factory import MongoDaoFactory

__all__ = [
    "MongoDaoFactory",
    "MongoOfferDao",
    "MongoOrderDao",
    "MongoTokenTimetableDao",
    "MongoUserCreditsDao",
]
