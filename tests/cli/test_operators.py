"""``usercredits balance`` and ``usercredits consume``: the operator commands."""

from __future__ import annotations

import json

import pytest

from usercredits import PaymentService

from .conftest import Invoke, free_monthly_pack


@pytest.fixture
def ann(service: PaymentService) -> None:
    """Ann holds 100 tokens of ``credits`` until April 1st."""
    service.create_order(free_monthly_pack(service).id, "ann")


def test_balance_lists_each_group_with_its_window(invoke: Invoke, ann: None) -> None:
    result = invoke(["balance", "ann"])
    assert result.exit_code == 0
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "credits 100 2025-03-01 12:00 2025-04-01 12:00" in lines


def test_balance_as_json(invoke: Invoke, ann: None) -> None:
    result = invoke(["balance", "ann", "--json"])
    assert json.loads(result.stdout) == {
        "user_id": "ann",
        "groups": [
            {
                "offer_group": "credits",
                "tokens": 100,
                "starts": "2025-03-01T12:00:00+00:00",
                "expires": "2025-04-01T12:00:00+00:00",
            }
        ],
    }


def test_balance_of_a_group_the_user_lacks_is_zero_with_a_notice(invoke: Invoke, ann: None) -> None:
    result = invoke(["balance", "ann", "--group", "bonus", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["groups"][0]["tokens"] == 0
    assert "user 'ann' has no offer group 'bonus' (their groups: credits)" in result.stderr


def test_balance_of_an_unknown_user_fails_clearly(invoke: Invoke) -> None:
    result = invoke(["balance", "nobody"])
    assert result.exit_code == 1
    assert "unknown user 'nobody'" in result.stderr


def test_the_help_says_user_ids_are_strings(invoke: Invoke) -> None:
    for command in ("balance", "consume"):
        help_text = " ".join(invoke([command, "--help"]).stdout.split())
        assert "matched as a string" in help_text


def test_consume_decrements_the_balance(invoke: Invoke, service: PaymentService, ann: None) -> None:
    result = invoke(["consume", "ann", "credits", "30"])
    assert result.exit_code == 0
    assert "Consumed 30 tokens of 'credits' for user 'ann'. Balance: 70." in result.stdout
    assert service.remaining_tokens("ann", "credits") == 70


def test_consume_beyond_the_balance_is_refused_and_changes_nothing(
    invoke: Invoke, service: PaymentService, ann: None
) -> None:
    result = invoke(["consume", "ann", "credits", "101"])
    assert result.exit_code == 1
    assert "refused, nothing consumed: user 'ann' has 100 tokens" in result.stderr
    assert service.remaining_tokens("ann", "credits") == 100


def test_consume_may_go_below_zero_when_allowed(
    invoke: Invoke, service: PaymentService, ann: None
) -> None:
    result = invoke(["consume", "ann", "credits", "150", "--allow-negative"])
    assert result.exit_code == 0
    assert service.remaining_tokens("ann", "credits") == -50


def test_consume_with_an_idempotency_key_consumes_once(
    invoke: Invoke, service: PaymentService, ann: None
) -> None:
    first = invoke(["consume", "ann", "credits", "10", "-k", "job-7"])
    retry = invoke(["consume", "ann", "credits", "10", "-k", "job-7"])
    assert first.exit_code == retry.exit_code == 0
    assert "Already recorded with key 'job-7': nothing more consumed" in retry.stdout
    assert service.remaining_tokens("ann", "credits") == 90


def test_reusing_a_key_for_another_count_is_refused(
    invoke: Invoke, service: PaymentService, ann: None
) -> None:
    invoke(["consume", "ann", "credits", "10", "-k", "job-7"])
    result = invoke(["consume", "ann", "credits", "20", "-k", "job-7"])
    assert result.exit_code == 1
    assert "idempotency key 'job-7' was used for 10 tokens" in result.stderr
    assert service.remaining_tokens("ann", "credits") == 90


def test_consume_for_an_unknown_user_fails_and_creates_nothing(
    invoke: Invoke, service: PaymentService
) -> None:
    result = invoke(["consume", "nobody", "credits", "1", "--allow-negative"])
    assert result.exit_code == 1
    assert "unknown user 'nobody'" in result.stderr
    assert service.load_user_credits("nobody") is None


@pytest.mark.parametrize("count", ["0", "-3", "abc", "1.5", ""])
def test_consume_refuses_counts_that_are_not_positive_whole_numbers(
    invoke: Invoke, service: PaymentService, ann: None, count: str
) -> None:
    result = invoke(["consume", "ann", "credits", "--", count])
    assert result.exit_code == 2
    assert f"Invalid value for 'COUNT': must be a positive whole number, got {count!r}" in (
        result.stderr
    )
    assert service.remaining_tokens("ann", "credits") == 100
