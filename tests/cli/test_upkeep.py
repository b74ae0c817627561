"""``usercredits reconcile`` and ``usercredits audit``: upkeep over every user."""

from __future__ import annotations

import json
from typing import Any

from usercredits import PaymentService, Status
from usercredits.grants import Snapshot
from usercredits.models import Offer, OrderStatus

from .conftest import Invoke, free_monthly_pack


def _interrupted_settlement(service: PaymentService, user: str) -> Any:
    """An order committed as paid whose grant was never written (a crash right after)."""
    offers = service.get_dao_factory().get_offer_dao()
    offer = offers.create(
        Offer(
            name="Pack", kind="tokens", offer_group="credits", cycle="once", price=5, token_count=40
        )
    )
    order = service.create_order(offer.id, user)
    paid = (
        service.get_dao_factory()
        .get_order_dao()
        .transition(
            order.id,
            {Status.PENDING},
            {"status": Status.PAID, "in_progress": True, "starts": service.now()},
            OrderStatus(date=service.now(), status=Status.PAID, message="Payment succeeded"),
        )
    )
    assert paid is not None
    return paid


def _json(invoke: Invoke, *args: str, exit_code: int = 0) -> dict[str, Any]:
    result = invoke([*args, "--json"])
    assert result.exit_code == exit_code, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_reconcile_completes_an_interrupted_settlement(
    invoke: Invoke, service: PaymentService
) -> None:
    order = _interrupted_settlement(service, "ann")
    assert service.remaining_tokens("ann", "credits") == 0
    summary = _json(invoke, "reconcile")
    assert summary["completed_orders"] == 1
    assert summary["users"] == [
        {"user_id": "ann", "completed_orders": [str(order.id)], "repaired_groups": []}
    ]
    assert service.remaining_tokens("ann", "credits") == 40


def test_reconcile_twice_completes_nothing_more(invoke: Invoke, service: PaymentService) -> None:
    _interrupted_settlement(service, "ann")
    _json(invoke, "reconcile")
    again = _json(invoke, "reconcile")
    assert (again["users_checked"], again["completed_orders"], again["users"]) == (1, 0, [])
    assert service.remaining_tokens("ann", "credits") == 40


def test_reconcile_prints_a_summary_table(invoke: Invoke, service: PaymentService) -> None:
    _interrupted_settlement(service, "ann")
    result = invoke(["reconcile"])
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert "orders completed 1" in lines


def test_audit_of_whole_balances_exits_0(invoke: Invoke, service: PaymentService) -> None:
    service.create_order(free_monthly_pack(service).id, "ann")
    service.tokens_consumed("ann", "credits", 30)
    summary = _json(invoke, "audit")
    assert (summary["ok"], summary["users_checked"], summary["groups_checked"]) == (True, 1, 1)
    result = invoke(["audit"])
    assert result.exit_code == 0
    assert "Every balance agrees with its ledger." in result.stdout


def test_audit_of_a_balance_disagreeing_with_its_ledger_exits_1(
    invoke: Invoke, service: PaymentService
) -> None:
    service.create_order(free_monthly_pack(service).id, "ann")
    credits = service.get_dao_factory().get_user_credits_dao()
    assert credits.save_snapshot("ann", "credits", Snapshot(seq=7, debt=12))
    summary = _json(invoke, "audit", exit_code=1)
    [mismatch] = summary["mismatches"]
    assert (mismatch["user_id"], mismatch["offer_group"]) == ("ann", "credits")
    assert (mismatch["balance"], mismatch["ledger_sum"]) == (-12, 100)
    result = invoke(["audit"])
    assert result.exit_code == 1
    assert "Groups disagreeing with their ledger" in result.stdout
