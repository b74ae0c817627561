"""The in-memory backend runs the credits API contracts."""

from usercredits.dao import DaoFactory
from usercredits.memory import InMemoryDaoFactory
from usercredits.testing.credits_contracts import (
    GrantContract,
    HistoryContract,
    HoldContract,
    SellingRuleContract,
)


class InMemoryBackend:
    def make_dao_factory(self) -> DaoFactory:
        return InMemoryDaoFactory()


class TestInMemorySellingRules(InMemoryBackend, SellingRuleContract):
    pass


class TestInMemoryGrants(InMemoryBackend, GrantContract):
    pass


class TestInMemoryHolds(InMemoryBackend, HoldContract):
    pass


class TestInMemoryHistory(InMemoryBackend, HistoryContract):
    pass
