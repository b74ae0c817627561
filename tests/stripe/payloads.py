"""Stripe-shaped webhook payloads, built here and signed as Stripe signs them.

The objects carry the fields of Stripe's published API fixtures (``stripe/openapi``,
``openapi/fixtures3.json``: ``charge``, ``refund``, ``dispute``, ``payment_intent``,
``event``) with the values a test chooses; thin event notifications have the shape
Stripe's event destinations deliver (``object: "v2.core.event"``, ``created`` as ISO
8601, ``related_object`` with ``id``, ``type`` and ``url``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from datetime import UTC, datetime
from typing import Any

WEBHOOK_SECRET = "whsec_test_usercredits"

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_3PgaftB7WZ01zgkW{next(_ids):08d}"


def sign(payload: str | bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe sends: ``t=<unix time>,v1=<hex HMAC-SHA256 of
    "<t>.<payload>" keyed with the endpoint's signing secret>``."""
    body = payload if isinstance(payload, bytes) else payload.encode()
    moment = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


# -- objects -------------------------------------------------------------------------------


def payment_intent(
    intent_id: str,
    *,
    amount: int = 1999,
    currency: str = "usd",
    status: str = "succeeded",
    order_id: Any = None,
    **fields: Any,
) -> dict[str, Any]:
    """A payment intent as Stripe returns it."""
    return {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": amount if status == "succeeded" else 0,
        "capture_method": "automatic",
        "client_secret": f"{intent_id}_secret_Dm43xiq1k0ywrRRjDoi8y1gkM",
        "confirmation_method": "automatic",
        "created": 1721948530,
        "currency": currency,
        "customer": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": {} if order_id is None else {"order_id": str(order_id)},
        "payment_method_types": ["card"],
        "status": status,
        "cancellation_reason": None,
        **fields,
    }


def charge(
    intent_id: str,
    *,
    amount: int = 1999,
    currency: str = "usd",
    amount_refunded: int = 0,
    order_id: Any = None,
    charge_id: str | None = None,
) -> dict[str, Any]:
    """A captured card charge of the intent, refunded by ``amount_refunded`` so far (Stripe
    copies the intent's metadata to its charge)."""
    charge_id = charge_id or _id("ch")
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "balance_transaction": _id("txn"),
        "captured": True,
        "created": 1721948530,
        "currency": currency,
        "customer": None,
        "description": None,
        "disputed": False,
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": {} if order_id is None else {"order_id": str(order_id)},
        "paid": True,
        "payment_intent": intent_id,
        "payment_method": _id("pm"),
        "refunded": amount_refunded >= amount,
        "refunds": {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/charges/{charge_id}/refunds",
        },
        "status": "succeeded",
    }


def refund(
    intent_id: str,
    *,
    amount: int,
    currency: str = "usd",
    status: str = "succeeded",
    charge_id: str | None = None,
    failure_reason: str | None = None,
) -> dict[str, Any]:
    """A refund of the intent's charge."""
    return {
        "id": _id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": None,
        "charge": charge_id or _id("ch"),
        "created": 1721948530,
        "currency": currency,
        "destination_details": {"card": {"type": "reversal"}, "type": "card"},
        "failure_reason": failure_reason,
        "metadata": {},
        "payment_intent": intent_id,
        "reason": None,
        "receipt_number": None,
        "status": status,
    }


def dispute(
    intent_id: str,
    *,
    amount: int = 1999,
    currency: str = "usd",
    status: str = "needs_response",
    charge_id: str | None = None,
) -> dict[str, Any]:
    """A card dispute (chargeback) of the intent's charge."""
    return {
        "id": _id("dp"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge_id or _id("ch"),
        "created": 1721948530,
        "currency": currency,
        "evidence_details": {
            "due_by": 1723679999,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": intent_id,
        "payment_method_details": {
            "card": {"brand": "visa", "case_type": "chargeback", "network_reason_code": "10.4"},
            "type": "card",
        },
        "reason": "fraudulent",
        "status": status,
    }


# -- events --------------------------------------------------------------------------------


def snapshot_event(
    event_type: str,
    obj: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
) -> str:
    """A snapshot event (``object: "event"``) carrying ``obj`` in ``data.object``."""
    return json.dumps(
        {
            "id": event_id or _id("evt"),
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(time.time()) if created is None else created,
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
    )


_PATHS = {
    "payment_intent": "payment_intents",
    "charge": "charges",
    "refund": "refunds",
    "dispute": "disputes",
    "customer": "customers",
}


def thin_event(
    event_type: str,
    related_id: str,
    related_type: str,
    *,
    event_id: str | None = None,
    created: datetime | None = None,
) -> str:
    """A thin event notification (``object: "v2.core.event"``) about ``related_id``, such as
    ``v1.payment_intent.succeeded`` about a ``payment_intent``."""
    moment = created or datetime.now(UTC)
    return json.dumps(
        {
            "id": event_id or _id("evt_test"),
            "object": "v2.core.event",
            "type": event_type,
            "livemode": False,
            "created": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "related_object": {
                "id": related_id,
                "type": related_type,
                "url": f"/v1/{_PATHS[related_type]}/{related_id}",
            },
            "reason": {
                "type": "request",
                "request": {"id": "req_v2a8Tk9eL0J6mBqC", "idempotency_key": _id("key")},
            },
        }
    )
