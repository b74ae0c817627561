"""The MongoDB backend runs the whole contract suite of ``usercredits.testing``: the DAO
and service contracts and the fault-injection suite.

Each test gets a fresh database with a unique name: on the embedded mongomock by
default, on a real MongoDB when ``USERCREDITS_TEST_MONGO_URI`` is set (the database
is dropped when the test ends).
"""

from __future__ import annotations

import os
import uuid

from usercredits.dao import DaoFactory
from usercredits.testing import dao_contracts, faults, service_contracts
from usercredits.testing.credits_contracts import (
    GrantContract,
    HistoryContract,
    HoldContract,
    SellingRuleContract,
)
from usercredits.testing.dao_contracts import (
    CustomerDaoContract,
    OfferDaoContract,
    OrderDaoContract,
    TokenTimetableDaoContract,
    UserCreditsDaoContract,
    WebhookEventDaoContract,
)
from usercredits.testing.faults import FaultInjectionContract
from usercredits.testing.gateway_contracts import (
    DisputeContract,
    PartialRefundContract,
    WebhookStoreContract,
)
from usercredits.testing.json_contracts import JsonContract
from usercredits.testing.service_contracts import (
    BadInputContract,
    ConcurrencyContract,
    ConsumptionContract,
    ExpiryContract,
    OfferCatalogContract,
    OrderContract,
    RefundContract,
    SettlementContract,
    WebhookContract,
)
from usercredits_mongo import MongoDaoFactory

TEST_URI_VARIABLE = "USERCREDITS_TEST_MONGO_URI"


class ThrowawayMongoDaoFactory(MongoDaoFactory):
    """A factory on a database of its own, dropped when the factory is closed."""

    def close(self) -> None:
        try:
            self.database.client.drop_database(self.database.name)
        finally:
            super().close()


class MongoBackend:
    def make_dao_factory(self) -> DaoFactory:
        uri = os.environ.get(TEST_URI_VARIABLE) or "mongomock://localhost"
        return ThrowawayMongoDaoFactory.from_uri(uri, f"usercredits_test_{uuid.uuid4().hex}")


class TestMongoOfferDao(MongoBackend, OfferDaoContract):
    pass


class TestMongoOrderDao(MongoBackend, OrderDaoContract):
    pass


class TestMongoTokenTimetableDao(MongoBackend, TokenTimetableDaoContract):
    pass


class TestMongoUserCreditsDao(MongoBackend, UserCreditsDaoContract):
    pass


class TestMongoCustomerDao(MongoBackend, CustomerDaoContract):
    pass


class TestMongoWebhookEventDao(MongoBackend, WebhookEventDaoContract):
    pass


class TestMongoJson(MongoBackend, JsonContract):
    pass


class TestMongoSellingRules(MongoBackend, SellingRuleContract):
    pass


class TestMongoGrants(MongoBackend, GrantContract):
    pass


class TestMongoHolds(MongoBackend, HoldContract):
    pass


class TestMongoHistory(MongoBackend, HistoryContract):
    pass


class TestMongoPartialRefunds(MongoBackend, PartialRefundContract):
    pass


class TestMongoDisputes(MongoBackend, DisputeContract):
    pass


class TestMongoWebhookStore(MongoBackend, WebhookStoreContract):
    pass


class TestMongoOfferCatalog(MongoBackend, OfferCatalogContract):
    pass


class TestMongoOrders(MongoBackend, OrderContract):
    pass


class TestMongoSettlement(MongoBackend, SettlementContract):
    pass


class TestMongoConsumption(MongoBackend, ConsumptionContract):
    pass


class TestMongoExpiry(MongoBackend, ExpiryContract):
    pass


class TestMongoWebhooks(MongoBackend, WebhookContract):
    pass


class TestMongoRefunds(MongoBackend, RefundContract):
    pass


class TestMongoBadInput(MongoBackend, BadInputContract):
    pass


class TestMongoConcurrency(MongoBackend, ConcurrencyContract):
    pass


class TestMongoFaults(MongoBackend, FaultInjectionContract):
    pass


def test_every_contract_class_of_the_suite_runs_on_mongo() -> None:
    contracts = {
        getattr(module, name)
        for module in (dao_contracts, service_contracts, faults)
        for name in module.__all__
    }
    with_tests = {c for c in contracts if any(n.startswith("test_") for n in dir(c))}
    run_here = {
        base
        for name, test_class in globals().items()
        if name.startswith("TestMongo")
        for base in test_class.__mro__
    }
    assert sorted(c.__name__ for c in with_tests - run_here) == []
