"""``usercredits grants``, ``grant``, ``void`` and ``history``: a user's credits, grant by grant
and line by line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from usercredits import FrozenClock, GrantSource, GrantStatus, PaymentService

from .conftest import Invoke, free_monthly_pack


def flat(text: str) -> list[str]:
    """The lines of an output, each with its runs of spaces collapsed."""
    return [" ".join(line.split()) for line in text.splitlines()]


def json_of(invoke: Invoke, *args: str) -> Any:
    result = invoke([*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def ann(service: PaymentService) -> str:
    """Ann got a promotion of 100 tokens of ``credits``; returns its grant id."""
    return service.grant_tokens("ann", "credits", 100).id


# -- grant -------------------------------------------------------------------------------------


def test_grant_gives_tokens_without_an_order(invoke: Invoke, service: PaymentService) -> None:
    result = invoke(["grant", "ann", "credits", "100"])
    assert result.exit_code == 0, result.output
    assert "Granted 100 tokens of 'credits' to user 'ann'" in result.stdout
    assert "never expires. Balance: 100." in result.stdout
    assert service.remaining_tokens("ann", "credits") == 100
    assert service.grants("ann")[0].source is GrantSource.PROMOTIONAL


def test_grant_as_json_prints_the_grant_with_string_ids_iso_dates_and_enum_values(
    invoke: Invoke,
) -> None:
    grant = json_of(invoke, "grant", "ann", "credits", "100", "--expires", "2025-06-30T12:00Z")
    assert isinstance(grant.pop("id"), str)
    assert grant == {
        "user_id": "ann",
        "offer_group": "credits",
        "order_id": None,
        "source": "promotional",
        "tokens": 100,
        "remaining": 100,
        "priority": 50,
        "starts": "2025-03-01T12:00:00+00:00",
        "expires": "2025-06-30T12:00:00+00:00",
        "status": "live",
    }


def test_grant_with_a_key_grants_once(invoke: Invoke, service: PaymentService) -> None:
    first = invoke(["grant", "ann", "credits", "100", "--key", "welcome-ann"])
    retry = invoke(["grant", "ann", "credits", "100", "--key", "welcome-ann"])
    assert first.exit_code == retry.exit_code == 0
    assert "Already granted with key 'welcome-ann'" in retry.stdout
    assert "nothing more granted. Balance of 'credits': 100." in retry.stdout
    assert service.remaining_tokens("ann", "credits") == 100


def test_grant_with_a_key_used_for_another_grant_is_refused(
    invoke: Invoke, service: PaymentService
) -> None:
    invoke(["grant", "ann", "credits", "100", "-k", "welcome-ann"])
    result = invoke(["grant", "ann", "credits", "500", "-k", "welcome-ann"])
    assert result.exit_code == 1
    assert "idempotency key 'welcome-ann' was used for a grant line of 100 tokens" in result.stderr
    assert service.remaining_tokens("ann", "credits") == 100


def test_grant_expires_at_the_moment_given_converted_to_utc(invoke: Invoke) -> None:
    grant = json_of(
        invoke, "grant", "ann", "credits", "10", "--expires", "2025-04-01T12:00:00+02:00"
    )
    assert grant["expires"] == "2025-04-01T10:00:00+00:00"


def test_a_date_without_a_timezone_is_read_as_utc(invoke: Invoke) -> None:
    grant = json_of(invoke, "grant", "ann", "credits", "10", "--expires", "2025-04-01")
    assert grant["expires"] == "2025-04-01T00:00:00+00:00"


def test_the_expiry_is_shown_in_utc(invoke: Invoke) -> None:
    result = invoke(["grant", "ann", "credits", "10", "--expires", "2025-04-01T12:00+02:00"])
    assert "expires 2025-04-01 10:00 UTC" in result.stdout


def test_a_past_expiry_is_refused_and_grants_nothing(
    invoke: Invoke, service: PaymentService
) -> None:
    result = invoke(["grant", "ann", "credits", "10", "--expires", "2025-02-01"])
    assert result.exit_code == 1
    assert "expires must be in the future, got 2025-02-01T00:00:00+00:00" in result.stderr
    assert service.remaining_tokens("ann", "credits") == 0


def test_an_unreadable_expiry_is_a_usage_error(invoke: Invoke) -> None:
    result = invoke(["grant", "ann", "credits", "10", "--expires", "next week"])
    assert result.exit_code == 2
    assert "expected an ISO 8601 date or time such as 2025-06-30" in result.stderr


def test_grant_records_its_priority_source_and_note(
    invoke: Invoke, service: PaymentService
) -> None:
    result = invoke(
        [
            "grant",
            "ann",
            "credits",
            "10",
            "--priority",
            "5",
            "--source",
            "adjustment",
            "--note",
            "ticket 4821",
        ]
    )
    assert result.exit_code == 0, result.output
    grant = service.grants("ann")[0]
    assert (grant.priority, grant.source) == (5, GrantSource.ADJUSTMENT)
    assert service.history("ann")[0].note == "ticket 4821"


def test_grant_repays_debt_first(invoke: Invoke, service: PaymentService) -> None:
    service.tokens_consumed("ann", "credits", 30)
    result = invoke(["grant", "ann", "credits", "100"])
    assert "Balance: 70." in result.stdout


@pytest.mark.parametrize("count", ["0", "-5", "ten"])
def test_grant_refuses_counts_that_are_not_positive_whole_numbers(
    invoke: Invoke, service: PaymentService, count: str
) -> None:
    result = invoke(["grant", "ann", "credits", "--", count])
    assert result.exit_code == 2
    assert "must be a positive whole number" in result.stderr
    assert service.load_user_credits("ann") is None


def test_a_priority_that_is_not_a_whole_number_is_a_usage_error(invoke: Invoke) -> None:
    result = invoke(["grant", "ann", "credits", "10", "--priority", "high"])
    assert result.exit_code == 2
    assert "'high' is not a valid integer" in result.stderr


# -- grants ------------------------------------------------------------------------------------


def test_grants_lists_the_live_grants_in_burn_order(
    invoke: Invoke, service: PaymentService
) -> None:
    never = service.grant_tokens("ann", "credits", 100)
    soon = service.grant_tokens("ann", "credits", 30, expires=datetime(2025, 3, 10, tzinfo=UTC))
    first = service.grant_tokens("ann", "credits", 50, priority=10)
    listed = json_of(invoke, "grants", "ann")
    assert listed["user_id"] == "ann"
    assert [g["id"] for g in listed["grants"]] == [first.id, soon.id, never.id]


def test_grants_prints_a_readable_table(invoke: Invoke, ann: str) -> None:
    result = invoke(["grants", "ann"])
    assert result.exit_code == 0, result.output
    lines = flat(result.stdout)
    assert "Live grants of user 'ann', in burn order" in lines
    assert f"{ann} credits promotional 50 100 100 2025-03-01 12:00 never" in lines


def test_grants_shows_the_grant_an_order_made(invoke: Invoke, service: PaymentService) -> None:
    order = service.create_order(free_monthly_pack(service).id, "ann")
    (grant,) = json_of(invoke, "grants", "ann")["grants"]
    assert (grant["source"], grant["order_id"]) == ("purchase", str(order.id))
    assert grant["expires"] == "2025-04-01T12:00:00+00:00"


def test_grants_of_one_group(invoke: Invoke, service: PaymentService, ann: str) -> None:
    service.grant_tokens("ann", "images", 5)
    listed = json_of(invoke, "grants", "ann", "--group", "images")
    assert [g["offer_group"] for g in listed["grants"]] == ["images"]


def test_grants_hides_ended_grants_unless_asked_for_all(
    invoke: Invoke, service: PaymentService, ann: str
) -> None:
    service.void_grant(ann)
    assert json_of(invoke, "grants", "ann")["grants"] == []
    (ended,) = json_of(invoke, "grants", "ann", "--all")["grants"]
    assert (ended["id"], ended["status"]) == (ann, "voided")


def test_grants_with_all_shows_each_status(
    invoke: Invoke, service: PaymentService, ann: str
) -> None:
    service.void_grant(ann)
    lines = flat(invoke(["grants", "ann", "--all"]).stdout)
    assert f"{ann} credits promotional 50 100 0 2025-03-01 12:00 never voided" in lines


def test_grants_of_a_user_without_live_grants_says_so(
    invoke: Invoke, service: PaymentService, ann: str
) -> None:
    service.void_grant(ann)
    result = invoke(["grants", "ann"])
    assert result.exit_code == 0
    assert "User 'ann' has no live grants (--all lists the ended ones too)." in result.stdout


def test_grants_of_an_unknown_user_fails_clearly(invoke: Invoke) -> None:
    result = invoke(["grants", "nobody"])
    assert result.exit_code == 1
    assert "unknown user 'nobody'" in result.stderr


# -- void --------------------------------------------------------------------------------------


def test_void_removes_what_the_grant_still_holds(
    invoke: Invoke, service: PaymentService, ann: str
) -> None:
    service.consume_tokens("ann", "credits", 30)
    result = invoke(["void", ann])
    assert result.exit_code == 0, result.output
    assert (
        f"Voided grant {ann} of user 'ann' in 'credits' (100 granted, none left). "
        "Balance of 'credits': 0." in result.stdout
    )
    assert service.remaining_tokens("ann", "credits") == 0


def test_voiding_twice_removes_nothing_more(
    invoke: Invoke, service: PaymentService, ann: str
) -> None:
    service.grant_tokens("ann", "credits", 20)
    invoke(["void", ann])
    retry = invoke(["void", ann])
    assert retry.exit_code == 0
    assert service.remaining_tokens("ann", "credits") == 20


def test_void_as_json_prints_the_voided_grant(invoke: Invoke, ann: str) -> None:
    grant = json_of(invoke, "void", ann)
    assert (grant["id"], grant["status"], grant["remaining"]) == (ann, "voided", 0)


def test_void_of_an_order_id_voids_the_grant_its_purchase_made(
    invoke: Invoke, service: PaymentService
) -> None:
    order = service.create_order(free_monthly_pack(service).id, "ann")
    grant = json_of(invoke, "void", str(order.id))
    assert (grant["order_id"], grant["status"]) == (str(order.id), "voided")
    assert service.remaining_tokens("ann", "credits") == 0


def test_void_of_an_expired_grant_voids_nothing(
    invoke: Invoke, service: PaymentService, clock: FrozenClock
) -> None:
    grant = service.grant_tokens("ann", "credits", 10, expires=datetime(2025, 3, 5, tzinfo=UTC))
    clock.advance(days=10)
    service.check_for_expired_orders("ann")
    result = invoke(["void", grant.id])
    assert result.exit_code == 0
    assert f"Grant {grant.id} of user 'ann' in 'credits' is expired" in result.stdout
    assert "nothing voided" in result.stdout
    assert service.grants("ann", include_ended=True)[0].status is GrantStatus.EXPIRED


def test_void_of_an_unknown_grant_fails_clearly(invoke: Invoke) -> None:
    result = invoke(["void", "no-such-grant"])
    assert result.exit_code == 1
    assert "no grant with id 'no-such-grant'" in result.stderr


# -- history -----------------------------------------------------------------------------------


@pytest.fixture
def ledger(service: PaymentService, ann: str) -> list[str]:
    """Ann's ledger: the promotion, then two consumptions; returns the line ids, newest first."""
    service.consume_tokens("ann", "credits", 10)
    service.consume_tokens("ann", "credits", 20, idempotency_key="job-2")
    return [str(line.id) for line in service.history("ann")]


def test_history_lists_the_ledger_lines_newest_first(invoke: Invoke, ledger: list[str]) -> None:
    document = json_of(invoke, "history", "ann")
    assert [line["id"] for line in document["lines"]] == ledger
    assert [line["tokens"] for line in document["lines"]] == [-20, -10, 100]
    assert document["next_before"] is None


def test_history_as_json_has_string_ids_iso_dates_and_reason_values(
    invoke: Invoke, ledger: list[str]
) -> None:
    newest = json_of(invoke, "history", "ann")["lines"][0]
    assert newest["id"] == ledger[0]
    assert (newest["user_id"], newest["offer_group"], newest["tokens"]) == ("ann", "credits", -20)
    assert newest["reason"] == "consumption"
    assert newest["created_at"] == "2025-03-01T12:00:00+00:00"
    assert newest["idempotency_key"] == "job-2"


def test_history_prints_a_readable_table(invoke: Invoke, ledger: list[str]) -> None:
    result = invoke(["history", "ann"])
    assert result.exit_code == 0, result.output
    lines = flat(result.stdout)
    assert "Ledger of user 'ann', newest first" in lines
    assert f"{ledger[0]} 2025-03-01 12:00 credits -20 consumption key job-2" in lines
    assert f"{ledger[2]} 2025-03-01 12:00 credits +100 grant" in lines


def test_history_pages_with_limit_and_before(invoke: Invoke, ledger: list[str]) -> None:
    first = json_of(invoke, "history", "ann", "--limit", "2")
    assert [line["id"] for line in first["lines"]] == ledger[:2]
    assert first["next_before"] == ledger[1]
    rest = json_of(invoke, "history", "ann", "--limit", "2", "--before", first["next_before"])
    assert [line["id"] for line in rest["lines"]] == ledger[2:]
    assert rest["next_before"] is None


def test_a_full_page_says_how_to_get_the_next(invoke: Invoke, ledger: list[str]) -> None:
    result = invoke(["history", "ann", "--limit", "1"])
    assert f"More lines may follow: --before {ledger[0]}" in result.stdout


def test_history_of_one_group(invoke: Invoke, service: PaymentService, ledger: list[str]) -> None:
    service.grant_tokens("ann", "images", 5)
    document = json_of(invoke, "history", "ann", "--group", "images")
    assert [(line["offer_group"], line["tokens"]) for line in document["lines"]] == [("images", 5)]


def test_history_of_an_unknown_user_fails_clearly(invoke: Invoke) -> None:
    result = invoke(["history", "nobody"])
    assert result.exit_code == 1
    assert "unknown user 'nobody'" in result.stderr


@pytest.mark.parametrize("limit", ["0", "1001", "many"])
def test_a_limit_outside_1_to_1000_is_a_usage_error(
    invoke: Invoke, ledger: list[str], limit: str
) -> None:
    result = invoke(["history", "ann", "--limit", limit])
    assert result.exit_code == 2
    assert "Invalid value for '--limit'" in result.stderr


@pytest.mark.parametrize("command", ["grants", "grant", "history"])
def test_the_help_says_user_ids_are_strings(invoke: Invoke, command: str) -> None:
    help_text = " ".join(invoke([command, "--help"]).stdout.split())
    assert "matched as a string" in help_text
