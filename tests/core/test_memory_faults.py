"""The in-memory backend survives a failure at every write of every call, appending by
compare-and-set (its default) and under its lock."""

from usercredits.dao import DaoFactory
from usercredits.memory import InMemoryDaoFactory
from usercredits.testing.faults import FaultInjectionContract


class TestInMemoryFaults(FaultInjectionContract):
    def make_dao_factory(self) -> DaoFactory:
        return InMemoryDaoFactory()


class TestInMemoryLockingFaults(FaultInjectionContract):
    def make_dao_factory(self) -> DaoFactory:
        return InMemoryDaoFactory(locking=True)
