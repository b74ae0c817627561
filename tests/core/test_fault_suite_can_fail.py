"""The fault-injection suite catches backends that lose or double credits when a write fails.

Each backend below passes the DAO contracts' ordinary paths but breaks durability in
one way; running the fault-injection suite against it must fail the scenarios that
exercise the broken guarantee.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any

import pytest

from usercredits.dao import DaoFactory
from usercredits.errors import DuplicateEntityError
from usercredits.memory import InMemoryDaoFactory, InMemoryTokenTimetableDao
from usercredits.models import TokenTimetable
from usercredits.testing.faults import FaultyDaoFactory

pytest_plugins = ["pytester"]


class _BalanceFirstLedger:
    """A ledger that stores the account's new snapshot before the line that commits it."""

    def __init__(self, lines: Any, credits: Any):
        self._lines = lines
        self._credits = credits

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lines, name)

    def create(self, line: TokenTimetable) -> TokenTimetable:
        account = self._credits.get_account(line.user_id, line.offer_group)
        if account is not None and account.snapshot.seq == line.seq - 1:
            after = account.snapshot.apply(line)
            self._credits.save_snapshot(line.user_id, line.offer_group, after)
        created: TokenTimetable = self._lines.create(line)
        return created


class BalanceFirstFactory(FaultyDaoFactory):
    """Writes a balance change before its commit point: both writes can fail apart."""

    def get_token_timetable_dao(self) -> Any:
        return _BalanceFirstLedger(super().get_token_timetable_dao(), self.get_user_credits_dao())


class KeyCheckingAfterwardsLedgerDao(InMemoryTokenTimetableDao):
    """Stores a line, then refuses it if its operation key was used: not one atomic write."""

    def create(self, entity: TokenTimetable) -> TokenTimetable:
        key = entity.operation_key
        if key is None or self.find_by_key(entity.user_id, operation_key=key) is None:
            return super().create(entity)
        super().create(dataclasses.replace(entity, operation_key=None))
        raise DuplicateEntityError(f"operation key {key!r} was used")


def balance_first_backend() -> InMemoryDaoFactory:
    # Appending by compare-and-set (the default), whose writes the broken ledgers break.
    return InMemoryDaoFactory()


def key_checking_afterwards_backend() -> InMemoryDaoFactory:
    factory = InMemoryDaoFactory()
    factory.get_token_timetable_dao().__class__ = KeyCheckingAfterwardsLedgerDao
    return factory


def balance_first(factory: DaoFactory) -> FaultyDaoFactory:
    return BalanceFirstFactory(factory)


def _run_suite(pytester: pytest.Pytester, backend: str, faulty: str | None) -> set[str]:
    """Run the fault-injection suite on a backend; the scenarios that failed."""
    imports = backend if faulty is None else f"{backend}, {faulty}"
    override = (
        ""
        if faulty is None
        else f"\n    def faulty(self, factory):\n        return {faulty}(factory)\n"
    )
    pytester.makepyfile(
        test_backend=textwrap.dedent(
            f"""
            from usercredits.testing.faults import FaultInjectionContract
            from {__name__} import {imports}


            class TestBackend(FaultInjectionContract):
                def make_dao_factory(self):
                    return {backend}()
            """
        )
        + override
    )
    passed, skipped, failed = pytester.inline_run("-p", "no:cacheprovider").listoutcomes()
    assert skipped == []
    assert passed, "no scenario passed: the backend is broken beyond the point of the test"
    return {report.nodeid.split("[")[-1].rstrip("]") for report in failed}


def test_a_backend_writing_balances_before_their_line_fails_every_consumption(
    pytester: pytest.Pytester,
) -> None:
    failed = _run_suite(pytester, "balance_first_backend", "balance_first")
    assert {"tokens_consumed", "consume_tokens", "after_execute"} <= failed


def test_a_ledger_checking_operation_keys_after_storing_fails_the_settlements(
    pytester: pytest.Pytester,
) -> None:
    failed = _run_suite(pytester, "key_checking_afterwards_backend", None)
    assert {"after_execute", "after_execute_bundle", "settle"} <= failed


def test_the_in_memory_backend_passes_every_scenario(pytester: pytest.Pytester) -> None:
    assert _run_suite(pytester, "balance_first_backend", None) == set()
