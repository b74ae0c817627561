"""``usercredits expire``: the expiry job over every user with credits."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from dependency_injector import providers

from usercredits import FrozenClock, PaymentService, StorageError
from usercredits.models import ExpiryReport, UserId

from .conftest import Invoke, free_monthly_pack


@pytest.fixture
def two_users(service: PaymentService, clock: FrozenClock) -> None:
    """Ann and Ben each get 100 free monthly tokens on March 1st; Ann uses 30."""
    pack = free_monthly_pack(service)
    for user in ("ann", "ben"):
        service.create_order(pack.id, user)
    service.tokens_consumed("ann", "credits", 30)


def summary_of(invoke: Invoke, *args: str) -> dict[str, Any]:
    result = invoke(["expire", "--json", *args])
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def test_expire_removes_the_unused_tokens_of_every_user(
    invoke: Invoke, service: PaymentService, clock: FrozenClock, two_users: None
) -> None:
    clock.advance(days=32)
    summary = summary_of(invoke)
    assert summary["users_checked"] == 2
    assert summary["orders_expired"] == 2
    assert summary["removed_tokens"] == {"credits": 170}
    assert summary["groups_removed"] == 2
    assert service.remaining_tokens("ann", "credits") == 0
    assert summary["failures"] == []


def test_expire_before_the_end_of_the_window_changes_nothing(
    invoke: Invoke, service: PaymentService, two_users: None
) -> None:
    summary = summary_of(invoke)
    assert (summary["orders_expired"], summary["removed_tokens"]) == (0, {})
    assert service.remaining_tokens("ben", "credits") == 100


def test_a_second_run_removes_nothing_more(
    invoke: Invoke, clock: FrozenClock, two_users: None
) -> None:
    clock.advance(days=32)
    summary_of(invoke)
    again = summary_of(invoke)
    assert (again["orders_expired"], again["removed_tokens"]) == (0, {})


def test_expire_warns_about_groups_expiring_soon_and_low_balances(
    invoke: Invoke, clock: FrozenClock, two_users: None
) -> None:
    clock.advance(days=27)
    summary = summary_of(invoke, "--warn-days", "7", "--low", "credits=70")
    warnings = {(w["user_id"], w["reason"], w["tokens"]) for w in summary["warnings"]}
    assert warnings == {
        ("ann", "expiring", 70),
        ("ann", "tokens_expiring", 70),
        ("ben", "expiring", 100),
        ("ben", "tokens_expiring", 100),
        ("ann", "low_balance", 70),
    }
    assert summary["warnings"][0]["expires"] == "2025-04-01T12:00:00+00:00"


def test_expire_prints_a_summary_table(invoke: Invoke, clock: FrozenClock, two_users: None) -> None:
    clock.advance(days=32)
    result = invoke(["expire"])
    assert result.exit_code == 0
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "users checked 2" in lines
    assert "orders expired 2" in lines
    assert "tokens removed from credits 170" in lines


def test_expire_lists_warnings_in_a_table(
    invoke: Invoke, clock: FrozenClock, two_users: None
) -> None:
    clock.advance(days=27)
    result = invoke(["expire", "--low", "credits=70"])
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "warnings: low_balance 1" in lines
    assert "ann credits low_balance 2025-04-01 12:00 70" in lines


def test_expire_streams_user_ids_instead_of_loading_all_users(
    invoke: Invoke, service: PaymentService, monkeypatch: pytest.MonkeyPatch
) -> None:
    pack = free_monthly_pack(service, tokens=5)
    for number in range(300):
        service.create_order(pack.id, f"user-{number}")
    credits = service.get_dao_factory().get_user_credits_dao()
    listed = credits.iter_user_ids
    pulled: list[Any] = []
    pulled_at_check: list[int] = []

    def streamed(batch_size: int = 1000) -> Any:
        for user in listed(batch_size):
            pulled.append(user)
            yield user

    check = service.check_for_expired_orders

    def checking(user_id: Any, *args: Any, **kwargs: Any) -> Any:
        pulled_at_check.append(len(pulled))
        return check(user_id, *args, **kwargs)

    monkeypatch.setattr(credits, "iter_user_ids", streamed)
    monkeypatch.setattr(service, "check_for_expired_orders", checking)
    assert summary_of(invoke)["users_checked"] == 300
    assert pulled_at_check == list(range(1, 301))


class _BrokenForOneUser(PaymentService):
    def check_for_expired_orders(
        self, user_id: UserId, warn_before: timedelta | None = None, low: Any = None
    ) -> ExpiryReport:
        if user_id == "ann":
            raise StorageError("the database refused the update")
        return super().check_for_expired_orders(user_id, warn_before, low)


def test_a_failing_user_is_reported_the_others_processed_and_the_exit_code_is_1(
    invoke: Invoke, container: Any, clock: FrozenClock, two_users: None
) -> None:
    broken = _BrokenForOneUser(container.dao_factory(), container.payment_client(), clock=clock)
    container.service.override(providers.Object(broken))
    clock.advance(days=32)
    result = invoke(["expire", "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["users_checked"] == 1
    assert summary["failures"] == [
        {"user_id": "ann", "error": "StorageError: the database refused the update"}
    ]
    assert "user 'ann': StorageError" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--low", "credits"], "expected GROUP=MIN with an integer MIN, got 'credits'"),
        (["--low", "credits=lots"], "expected GROUP=MIN"),
        (["--low", "a=1", "--low", "a=2"], "group 'a' is given twice"),
        (["--warn-days", "-1"], "-1 is not in the range x>=0"),
    ],
)
def test_bad_options_are_usage_errors(invoke: Invoke, args: list[str], message: str) -> None:
    result = invoke(["expire", *args])
    assert result.exit_code == 2
    assert message in result.stderr
