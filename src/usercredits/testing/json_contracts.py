"""Service-level contract of SPEC §13: what the service returns is ready for JSON on the
backend, through ``to_dict()``. Subscribe a backend like the other contracts."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

from usercredits.manual import ManualPaymentClient
from usercredits.models import CombinedOffer, Model
from usercredits.service import PaymentService
from usercredits.testing.service_contracts import USER, ServiceContract, add_offer, buy

__all__ = ["JsonContract"]

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def _walk(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every leaf of a JSON document, with its path."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _walk(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _walk(v, f"{path}[{i}]")]
    return [(path, value)]


def assert_json_ready(model: Model) -> dict[str, Any]:
    """``model.to_dict()`` survives a JSON round trip unchanged, with ids as str and dates in
    ISO 8601 UTC; the dict."""
    document = model.to_dict()
    assert json.loads(json.dumps(document)) == document
    for path, value in _walk(document):
        name = path.rsplit(".", 1)[-1].split("[")[0]
        if value is None:
            continue
        if name == "id" or (name.endswith("_id") and name != "user_id"):
            assert isinstance(value, str), f"{path} is {value!r}, not a str"
        if name in {"created_at", "updated_at", "starts", "expires", "date", "expires_at"}:
            assert ISO_UTC.match(value), f"{path} is {value!r}, not ISO 8601 UTC"
    return document


class JsonContract(ServiceContract):
    """Every model the service returns, made JSON-ready by ``to_dict()`` on this backend."""

    def test_offers_orders_and_credits_are_json_ready(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        item = add_offer(service, "ai", tokens=50)
        suite = add_offer(
            service,
            "suite",
            price="9.90",
            combined_items=[CombinedOffer(offer_id=item.id, offer_group="ai")],
        )
        order = buy(service, manual, suite)
        offer = assert_json_ready(service.load_offers()[0])
        assert offer["price"] in {"10", "9.90"}
        stored = assert_json_ready(order)
        assert (stored["total"], stored["status"], stored["cycle"]) == ("9.90", "paid", "monthly")
        assert stored["history"][-1]["status"] == "paid"
        credits = service.load_user_credits(USER)
        assert credits is not None
        document = assert_json_ready(credits)
        assert {o["offer_group"] for o in document["offers"]} == {"suite", "ai"}

    def test_ledger_lines_grants_holds_and_reports_are_json_ready(
        self, service: PaymentService
    ) -> None:
        grant = service.grant_tokens(USER, "ai", 100, expires=service.now() + timedelta(days=3))
        assert assert_json_ready(grant)["source"] == "promotional"
        hold = service.reserve(USER, "ai", 10)
        assert assert_json_ready(hold)["status"] == "active"
        line = service.capture(hold.id)
        assert assert_json_ready(line)["reason"] == "consumption"
        for model in [
            *service.history(USER),
            service.check_for_expired_orders(USER, warn_before=timedelta(days=7)),
            service.reconcile(USER),
            service.audit(USER),
        ]:
            assert_json_ready(model)

    def test_money_keeps_its_exponent(self, service: PaymentService) -> None:
        offer = add_offer(service, "pack", price="19.90")
        order = service.create_order(offer.id, USER, 2)
        assert order.to_dict()["total"] == str(Decimal("19.90") * 2) == "39.80"
