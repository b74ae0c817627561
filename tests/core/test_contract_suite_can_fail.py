"""The DAO contract suite catches broken backends.

Each backend below is the in-memory one with a single DAO method broken on
purpose; running the contract suite against it must fail exactly the tests that
check the broken guarantee, and pass the rest.
"""

from __future__ import annotations

import bisect
import copy
import textwrap
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any

import pytest

from usercredits.dao import Appended, Draft
from usercredits.errors import DuplicateEntityError
from usercredits.grants import Snapshot
from usercredits.memory import (
    InMemoryDaoFactory,
    InMemoryOfferDao,
    InMemoryOrderDao,
    InMemoryTokenTimetableDao,
    InMemoryUserCreditsDao,
    _user_key,
)
from usercredits.models import (
    EntityId,
    Offer,
    Order,
    OrderStatus,
    Status,
    TokenTimetable,
    UserId,
)
from usercredits.testing import dao_contracts
from usercredits.windows import Window

pytest_plugins = ["pytester"]


class SeqBlindTokenTimetableDao(InMemoryTokenTimetableDao):
    """Checks the keys of a line but not its number: two lines of an account may share one."""

    def create(self, entity: TokenTimetable) -> TokenTimetable:
        with self._lock:
            names = self._key_names(entity)
            if any(name in self._keys for name in names):
                raise DuplicateEntityError(f"a key of {entity!r} is used")
            stored = copy.copy(entity)
            created = self._table.insert(stored)
            account = (_user_key(stored.user_id), stored.offer_group)
            bisect.insort(self._accounts.setdefault(account, []), stored, key=lambda x: x.seq)
            for name in names:
                self._keys[name] = stored
            return created


class OverwritingUserCreditsDao(InMemoryUserCreditsDao):
    """Stores every snapshot, even one older than the stored one."""

    def save_snapshot(self, user_id: UserId, offer_group: str, snapshot: Snapshot) -> bool:
        with self._lock:
            current = self.get_account(user_id, offer_group)
            if current is None:
                return False
            accounts = self._accounts[_user_key(user_id)]
            accounts[offer_group] = current._replace(snapshot=snapshot)
            return True


class VersionBlindUserCreditsDao(InMemoryUserCreditsDao):
    """Stores every window, whatever the version the caller expects."""

    def save_window(
        self, user_id: UserId, offer_group: str, expected_version: int, window: Window
    ) -> bool:
        with self._lock:
            current = self.get_account(user_id, offer_group)
            return current is not None and super().save_window(
                user_id, offer_group, current.window.version, window
            )


def _create(ledger: InMemoryTokenTimetableDao, line: TokenTimetable) -> tuple[TokenTimetable, bool]:
    """The line stored, or the line holding one of its keys; whether it was stored."""
    try:
        return ledger.create(line), True
    except DuplicateEntityError:
        holder = ledger.find_by_key(
            line.user_id, idempotency_key=line.idempotency_key, operation_key=line.operation_key
        )
        if holder is None:
            raise
        return holder, False


class UnlockedUserCreditsDao(InMemoryUserCreditsDao):
    """Appends without holding the account: two appends may draft from one snapshot."""

    def append_locked(self, user_id: UserId, offer_group: str, draft: Draft) -> Appended | None:
        account = self.get_account(user_id, offer_group)
        if account is None:
            return None
        snapshot = account.snapshot.apply_all(
            self._ledger.lines_after(user_id, offer_group, account.snapshot.seq)
        )
        line = draft(snapshot)
        if line is None:
            return Appended(None, False, snapshot)
        time.sleep(0.001)  # the moment another append can come in between
        stored, created = _create(self._ledger, line)
        if not created:
            return Appended(stored, False, snapshot)
        snapshot = snapshot.apply(stored)
        self.save_snapshot(user_id, offer_group, snapshot)
        return Appended(stored, True, snapshot)


class FoldBlindUserCreditsDao(InMemoryUserCreditsDao):
    """Drafts from the stored snapshot, blind to lines appended beyond it."""

    def append_locked(self, user_id: UserId, offer_group: str, draft: Draft) -> Appended | None:
        with self._lock:
            account = self.get_account(user_id, offer_group)
            if account is None:
                return None
            line = draft(account.snapshot)
            if line is None:
                return Appended(None, False, account.snapshot)
            stored, created = _create(self._ledger, line)
            if not created:
                return Appended(stored, False, account.snapshot)
            snapshot = account.snapshot.apply(stored)
            self.save_snapshot(user_id, offer_group, snapshot)
            return Appended(stored, True, snapshot)


class FloorBlindUserCreditsDao(InMemoryUserCreditsDao):
    """Checks consumptions itself but forgets the floor."""

    def append_consumption(
        self, user_id: UserId, offer_group: str, line: TokenTimetable, floor: int | None
    ) -> TokenTimetable | None:
        return super().append_consumption(user_id, offer_group, line, None)


class RecreatingUserCreditsDao(InMemoryUserCreditsDao):
    """Gives a user a new record at each registration."""

    def register(self, user_id: UserId) -> EntityId:
        with self._lock:
            self._users.pop(_user_key(user_id), None)
            return super().register(user_id)


class StatusBlindOrderDao(InMemoryOrderDao):
    """Changes an order whatever its status."""

    def transition(
        self,
        order_id: EntityId,
        from_statuses: Collection[Status],
        changes: Mapping[str, Any],
        entry: OrderStatus | None = None,
        *,
        expected: Mapping[str, Any] | None = None,
    ) -> Order | None:
        return super().transition(order_id, list(Status), changes, entry, expected=expected)


class ExpectationBlindOrderDao(InMemoryOrderDao):
    """Changes an order whatever the values it was expected to hold."""

    def transition(
        self,
        order_id: EntityId,
        from_statuses: Collection[Status],
        changes: Mapping[str, Any],
        entry: OrderStatus | None = None,
        *,
        expected: Mapping[str, Any] | None = None,
    ) -> Order | None:
        return super().transition(order_id, from_statuses, changes, entry)


class ChildBlindOrderDao(InMemoryOrderDao):
    """Stores any number of child orders of one item of a bundle."""

    def create(self, entity: Order) -> Order:
        with self._lock:
            self._children.pop((str(entity.parent_id), entity.item_index or 0), None)
            return super().create(entity)


class ExclusiveBlindOrderDao(InMemoryOrderDao):
    """Lets a user hold any number of paid exclusive orders of one offer."""

    def _check_slot(self, order: Order) -> None:
        pass


class WriteThenCheckOfferDao(InMemoryOfferDao):
    """Writes the changes of an update first, then checks them."""

    def update_by_id(self, entity_id: EntityId, changes: Mapping[str, Any]) -> Offer | None:
        with self._lock:
            current = self._table.rows.get(str(entity_id))
            if current is not None:
                for name, value in changes.items():
                    setattr(current, name, value)
            return super().update_by_id(entity_id, changes)


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
    """A fresh in-memory backend appending under its lock, whose DAO of ``broken``'s base
    class is switched to ``broken`` (a subclass that adds no state)."""
    factory = InMemoryDaoFactory(locking=True)
    daos = (
        factory.get_offer_dao(),
        factory.get_order_dao(),
        factory.get_token_timetable_dao(),
        factory.get_user_credits_dao(),
    )
    (dao,) = (dao for dao in daos if isinstance(dao, broken.__base__))
    dao.__class__ = broken
    return factory


def seq_blind_backend() -> InMemoryDaoFactory:
    return _backend_with(SeqBlindTokenTimetableDao)


def overwriting_backend() -> InMemoryDaoFactory:
    return _backend_with(OverwritingUserCreditsDao)


def version_blind_backend() -> InMemoryDaoFactory:
    return _backend_with(VersionBlindUserCreditsDao)


def unlocked_backend() -> InMemoryDaoFactory:
    return _backend_with(UnlockedUserCreditsDao)


def fold_blind_backend() -> InMemoryDaoFactory:
    return _backend_with(FoldBlindUserCreditsDao)


def floor_blind_backend() -> InMemoryDaoFactory:
    return _backend_with(FloorBlindUserCreditsDao)


def recreating_backend() -> InMemoryDaoFactory:
    return _backend_with(RecreatingUserCreditsDao)


def status_blind_backend() -> InMemoryDaoFactory:
    return _backend_with(StatusBlindOrderDao)


def expectation_blind_backend() -> InMemoryDaoFactory:
    return _backend_with(ExpectationBlindOrderDao)


def child_blind_backend() -> InMemoryDaoFactory:
    return _backend_with(ChildBlindOrderDao)


def exclusive_blind_backend() -> InMemoryDaoFactory:
    return _backend_with(ExclusiveBlindOrderDao)


def write_then_check_backend() -> InMemoryDaoFactory:
    return _backend_with(WriteThenCheckOfferDao)


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
            "TokenTimetableDaoContract",
            seq_blind_backend,
            {
                "test_create_refuses_a_seq_already_used_in_the_account_and_stores_nothing",
                "test_racing_creates_of_one_seq_store_one_line",
            },
            id="ledger-accepts-a-duplicate-seq",
        ),
        pytest.param(
            "UserCreditsDaoContract",
            overwriting_backend,
            {
                "test_save_snapshot_refuses_a_snapshot_not_newer_than_the_stored_one",
                "test_racing_save_snapshots_keep_the_highest_seq",
            },
            id="save_snapshot-overwrites-a-newer-snapshot",
        ),
        pytest.param(
            "UserCreditsDaoContract",
            version_blind_backend,
            {
                "test_save_window_refuses_a_stale_version",
                "test_racing_save_windows_of_one_version_have_one_winner",
            },
            id="save_window-ignores-the-version",
        ),
        pytest.param(
            "UserCreditsDaoContract",
            unlocked_backend,
            {
                "test_racing_locked_appends_take_every_number_once",
                # The in-memory backend checks a consumption by its locked append.
                "test_racing_consumptions_checked_by_the_backend_never_cross_the_floor",
            },
            id="append_locked-drafts-without-the-lock",
        ),
        pytest.param(
            "UserCreditsDaoContract",
            fold_blind_backend,
            {"test_append_locked_folds_lines_appended_without_the_lock"},
            id="append_locked-blind-to-newer-lines",
        ),
        pytest.param(
            "UserCreditsDaoContract",
            floor_blind_backend,
            {
                "test_append_consumption_numbers_a_consumption_that_keeps_the_floor",
                "test_racing_consumptions_checked_by_the_backend_never_cross_the_floor",
            },
            id="append_consumption-crosses-the-floor",
        ),
        pytest.param(
            "UserCreditsDaoContract",
            recreating_backend,
            {
                "test_register_returns_the_same_id_on_repeated_calls",
                "test_open_account_registers_the_user",
                "test_racing_registers_create_one_record_per_user",
            },
            id="register-makes-a-second-record",
        ),
        pytest.param(
            "OrderDaoContract",
            status_blind_backend,
            {
                "test_transition_from_an_unlisted_status_returns_none_and_changes_nothing",
                "test_racing_transitions_from_pending_to_paid_succeed_once",
            },
            id="transition-ignores-from_statuses",
        ),
        pytest.param(
            "OrderDaoContract",
            expectation_blind_backend,
            {
                "test_transition_with_an_expected_value_that_differs_changes_nothing",
                "test_racing_transitions_expecting_one_value_succeed_once",
            },
            id="transition-ignores-expected-values",
        ),
        pytest.param(
            "OrderDaoContract",
            child_blind_backend,
            {
                "test_a_second_child_order_of_one_item_is_refused_and_stores_nothing",
                "test_racing_creates_of_one_child_order_store_one",
            },
            id="child-orders-not-unique-per-item",
        ),
        pytest.param(
            "OrderDaoContract",
            exclusive_blind_backend,
            {
                "test_a_second_paid_exclusive_order_of_an_offer_is_refused_and_stores_nothing",
                "test_a_transition_to_paid_of_a_second_exclusive_order_is_refused_and_changes_nothing",
                "test_racing_creates_of_paid_exclusive_orders_of_an_offer_store_one",
                "test_racing_transitions_to_paid_of_exclusive_orders_of_an_offer_succeed_once",
            },
            id="several-paid-exclusive-orders-of-one-offer",
        ),
        pytest.param(
            "OfferDaoContract",
            write_then_check_backend,
            {
                "test_update_by_id_with_an_invalid_value_raises_and_leaves_the_offer_unchanged",
                "test_update_by_id_refuses_a_key_used_by_another_offer_and_changes_nothing",
            },
            id="update_by_id-writes-before-checking",
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
