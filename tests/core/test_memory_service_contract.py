"""The in-memory backend runs every service-level contract."""

from usercredits.dao import DaoFactory
from usercredits.memory import InMemoryDaoFactory
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


class InMemoryBackend:
    def make_dao_factory(self) -> DaoFactory:
        return InMemoryDaoFactory()


class TestInMemoryOfferCatalog(InMemoryBackend, OfferCatalogContract):
    pass


class TestInMemoryOrders(InMemoryBackend, OrderContract):
    pass


class TestInMemorySettlement(InMemoryBackend, SettlementContract):
    pass


class TestInMemoryConsumption(InMemoryBackend, ConsumptionContract):
    pass


class TestInMemoryExpiry(InMemoryBackend, ExpiryContract):
    pass


class TestInMemoryWebhooks(InMemoryBackend, WebhookContract):
    pass


class TestInMemoryRefunds(InMemoryBackend, RefundContract):
    pass


class TestInMemoryBadInput(InMemoryBackend, BadInputContract):
    pass


class TestInMemoryConcurrency(InMemoryBackend, ConcurrencyContract):
    pass
