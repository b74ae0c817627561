"""The in-memory backend's models are JSON-ready."""

from usercredits.dao import DaoFactory
from usercredits.memory import InMemoryDaoFactory
from usercredits.testing.json_contracts import JsonContract


class TestInMemoryJson(JsonContract):
    def make_dao_factory(self) -> DaoFactory:
        return InMemoryDaoFactory()
