"""The in-memory backend passes the DAO contract suite."""

from usercredits.memory import InMemoryDaoFactory
from usercredits.testing.dao_contracts import (
    OfferDaoContract,
    OrderDaoContract,
    TokenTimetableDaoContract,
    UserCreditsDaoContract,
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
        return InMemoryDaoFactory()
