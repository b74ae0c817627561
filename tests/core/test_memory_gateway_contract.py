"""The in-memory backend runs the gateway-event contracts."""

from usercredits.dao import DaoFactory
from usercredits.memory import InMemoryDaoFactory
from usercredits.testing.gateway_contracts import (
    DisputeContract,
    PartialRefundContract,
    WebhookStoreContract,
)


class InMemoryBackend:
    def make_dao_factory(self) -> DaoFactory:
        return InMemoryDaoFactory()


class TestInMemoryPartialRefunds(InMemoryBackend, PartialRefundContract):
    pass


class TestInMemoryDisputes(InMemoryBackend, DisputeContract):
    pass


class TestInMemoryWebhookStore(InMemoryBackend, WebhookStoreContract):
    pass
