"""The base of every contract class: how a backend plugs into the suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from usercredits.dao import DaoFactory


class BackendContract:
    """Subclass once per backend and return a fresh, empty backend from ``make_dao_factory``."""

    def make_dao_factory(self) -> DaoFactory:
        """A new, empty backend for one test."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_dao_factory()")

    @pytest.fixture
    def dao_factory(self) -> Iterator[DaoFactory]:
        factory = self.make_dao_factory()
        try:
            yield factory
        finally:
            factory.close()
