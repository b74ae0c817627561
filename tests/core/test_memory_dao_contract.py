"""The in-memory backend passes the DAO contract suite, every class of it."""

from usercredits.memory import InMemoryDaoFactory
from usercredits.testing import dao_contracts
from usercredits.testing.dao_contracts import (
    CustomerDaoContract,
    OfferDaoContract,
    OrderDaoContract,
    TokenTimetableDaoContract,
    UserCreditsDaoContract,
    WebhookEventDaoContract,
)


class TestInMemoryOfferDao(OfferDaoContract):
    def make_dao_factory(self) -> InMemoryDaoFactory:
        return InMemoryDaoFactory()


class TestInMemoryOrderDao(OrderDaoContract):
    def make_dao_factory(self) -> InMemoryDaoFactory:
        return InMemoryDaoFactory()


class TestInMemoryTokenTimetableDao(TokenTimetableDaoContract):
    def make_dao_factory(self) -> InMemoryDaoFactory:
        return InMemoryDaoFactory()


class TestInMemoryUserCreditsDao(UserCreditsDaoContract):
    def make_dao_factory(self) -> InMemoryDaoFactory:
        return InMemoryDaoFactory(locking=True)


class TestInMemoryCustomerDao(CustomerDaoContract):
    def make_dao_factory(self) -> InMemoryDaoFactory:
        return InMemoryDaoFactory()


class TestInMemoryWebhookEventDao(WebhookEventDaoContract):
    def make_dao_factory(self) -> InMemoryDaoFactory:
        return InMemoryDaoFactory()


def test_every_contract_class_of_the_suite_runs_in_memory() -> None:
    contracts = {getattr(dao_contracts, name) for name in dao_contracts.__all__}
    run_here = {
        base
        for name, test_class in globals().items()
        if name.startswith("TestInMemory")
        for base in test_class.__mro__
    }
    assert sorted(c.__name__ for c in contracts - run_here) == []
