"""The DAO contract suite catches broken backends.

Each backend below is the in-memory one with a single DAO method broken on
purpose; running the contract suite against it must fail exactly the tests that
check the broken guarantee, and pass the rest.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

import pytest

from usercredits.memory import (
    InMemoryDaoFactory,
    InMemoryOfferDao,
    InMemoryOrderDao,
    InMemoryTokenTimetableDao,
    InMemoryUserCreditsDao,
)
from usercredits.models import (
    EntityId,
    Offer,
    Order,
    OrderStatus,
    Status,
    TokenTimetable,
    UserCredits,
    UserId,
)
from usercredits.testing import dao_contracts

pytest_plugins = ["pytester"]


class FloorIgnoringUserCreditsDao(InMemoryUserCreditsDao):
    def add_tokens(
        self,
        user_id: UserId,
        offer_group: str,
        delta: int,
        *,
        now: datetime,
        floor: int | None = None,
    ) -> int | None:
        return super().add_tokens(user_id, offer_group, delta, now=now)


class RecreatingUserCreditsDao(InMemoryUserCreditsDao):
    def get_or_create(self, user_id: UserId) -> UserCredits:
        existing = self.find_by_user_id(user_id)
        if existing is not None:
            self.delete_by_id(existing.id)
        return super().get_or_create(user_id)


class StatusBlindOrderDao(InMemoryOrderDao):
    def transition(
        self,
        order_id: EntityId,
        from_statuses: Collection[Status],
        changes: Mapping[str, Any],
        entry: OrderStatus | None = None,
    ) -> Order | None:
        return super().transition(order_id, list(Status), changes, entry)


class DuplicatingTokenTimetableDao(InMemoryTokenTimetableDao):
    def insert_once(self, line: TokenTimetable) -> tuple[TokenTimetable, bool]:
        with self._lock:
            return self._store(line), True


class NativeIdOfferDao(InMemoryOfferDao):
    """Ids are UUIDs (as a database's ids are not str) and only that form is accepted."""

    def create(self, entity: Offer) -> Offer:
        if entity.id is None:
            entity.id = uuid.uuid4()
        return super().create(entity)

    def find_by_id(self, entity_id: EntityId) -> Offer | None:
        return super().find_by_id(entity_id) if isinstance(entity_id, uuid.UUID) else None

    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> Offer | None:
        if not isinstance(entity_id, uuid.UUID):
            return None
        return super().update_by_id(entity_id, changes)

    def delete_by_id(self, entity_id: EntityId) -> bool:
        return isinstance(entity_id, uuid.UUID) and super().delete_by_id(entity_id)


def _backend_with(broken: type) -> InMemoryDaoFactory:
    """A fresh in-memory backend whose DAO of ``broken``'s base class is switched to
    ``broken`` (a subclass that adds no state)."""
    factory = InMemoryDaoFactory()
    daos = (
        factory.get_offer_dao(),
        factory.get_order_dao(),
        factory.get_token_timetable_dao(),
        factory.get_user_credits_dao(),
    )
    (dao,) = (dao for dao in daos if isinstance(dao, broken.__base__))
    dao.__class__ = broken
    return factory


def floor_ignoring_backend() -> InMemoryDaoFactory:
    return _backend_with(FloorIgnoringUserCreditsDao)


def recreating_backend() -> InMemoryDaoFactory:
    return _backend_with(RecreatingUserCreditsDao)


def status_blind_backend() -> InMemoryDaoFactory:
    return _backend_with(StatusBlindOrderDao)


def duplicating_backend() -> InMemoryDaoFactory:
    return _backend_with(DuplicatingTokenTimetableDao)


def native_id_backend() -> InMemoryDaoFactory:
    return _backend_with(NativeIdOfferDao)


def _run_contract(
    pytester: pytest.Pytester, contract: str, backend: Callable[[], InMemoryDaoFactory]
) -> tuple[set[str], set[str]]:
    """Run one contract class against ``backend``; the names of the passed and failed tests."""
    assert contract in dao_contracts.__all__
    pytester.makepyfile(
        test_backend=textwrap.dedent(
            f"""
            from usercredits.testing.dao_contracts import {contract}
            from {__name__} import {backend.__name__} as make_backend


            class TestBackend({contract}):
                def make_dao_factory(self):
                    return make_backend()
            """
        )
    )
    passed, skipped, failed = pytester.inline_run("-p", "no:cacheprovider").listoutcomes()
    assert skipped == []

    def names(reports: Any) -> set[str]:
        return {report.nodeid.split("::")[-1].split("[")[0] for report in reports}

    return names(passed), names(failed)


@pytest.mark.parametrize(
    ("contract", "backend", "expected_failures"),
    [
        pytest.param(
            "UserCreditsDaoContract",
            floor_ignoring_backend,
            {
                "test_add_tokens_with_a_floor_refuses_to_go_below_it",
                "test_add_tokens_with_a_floor_may_reach_it",
                "test_add_tokens_refused_by_the_floor_creates_nothing",
                "test_concurrent_decrements_with_a_floor_never_overdraw",
            },
            id="add_tokens-ignores-floor",
        ),
        pytest.param(
            "UserCreditsDaoContract",
            recreating_backend,
            {
                "test_get_or_create_returns_the_same_record_on_repeated_calls",
                "test_concurrent_get_or_create_creates_one_record_per_user",
            },
            id="get_or_create-makes-a-second-record",
        ),
        pytest.param(
            "OrderDaoContract",
            status_blind_backend,
            {
                "test_transition_from_an_unlisted_status_returns_none_and_changes_nothing",
                "test_concurrent_transitions_from_pending_to_paid_succeed_once",
            },
            id="transition-ignores-from_statuses",
        ),
        pytest.param(
            "TokenTimetableDaoContract",
            duplicating_backend,
            {
                "test_insert_once_returns_the_line_of_a_reused_idempotency_key",
                "test_insert_once_returns_the_line_of_the_same_order_and_reason",
                "test_concurrent_insert_once_with_one_key_stores_one_line",
            },
            id="insert_once-stores-duplicates",
        ),
        pytest.param(
            "OfferDaoContract",
            native_id_backend,
            {
                "test_find_by_id_accepts_the_str_form_of_the_id",
                "test_update_by_id_accepts_the_str_form_of_the_id",
                "test_delete_by_id_accepts_the_str_form_of_the_id",
            },
            id="ids-refused-in-str-form",
        ),
    ],
)
def test_a_broken_backend_fails_the_tests_of_the_broken_guarantee(
    pytester: pytest.Pytester,
    contract: str,
    backend: Callable[[], InMemoryDaoFactory],
    expected_failures: set[str],
) -> None:
    passed, failed = _run_contract(pytester, contract, backend)
    assert failed == expected_failures
    assert len(passed) > 20
