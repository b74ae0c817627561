"""A payment client without a gateway: an operator approves or declines each intent."""

from __future__ import annotations

import copy
import enum
import json
import threading
import uuid
from dataclasses import dataclass
from decimal import Decimal

from usercredits.errors import PaymentError
from usercredits.models import EntityId, Order, OrderStatus, Status, UserId
from usercredits.payment import PaymentClient, WebhookEvent


class _Decision(enum.StrEnum):
    WAITING = "waiting"
    APPROVED = "approved"
    DECLINED = "declined"


@dataclass
class _Intent:
    intent_id: str
    order_id: str
    decision: _Decision = _Decision.WAITING
    message: str = ""


class ManualPaymentClient(PaymentClient):
    """Back-office validation: every intent waits until :meth:`approve` or :meth:`decline`.

    Until an operator decides, settling an order leaves it ``pending``. Nothing
    leaves the process; intents live as long as the client. It receives no
    webhooks and holds no money, so user balances are zero.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._intents: dict[str, _Intent] = {}
        self._latest: dict[str, str] = {}

    def create_payment_intent(self, order: Order) -> Order:
        if order.id is None:
            raise PaymentError("an order must be stored before it gets a payment intent")
        intent = _Intent(intent_id=f"manual_{uuid.uuid4().hex}", order_id=str(order.id))
        with self._lock:
            self._intents[intent.intent_id] = intent
            self._latest[intent.order_id] = intent.intent_id
        result = copy.deepcopy(order)
        result.payment_intent_id = intent.intent_id
        result.payment_intent_secret = f"{intent.intent_id}_secret"
        return result

    def _decide(self, order_id: EntityId, decision: _Decision, message: str) -> None:
        with self._lock:
            intent_id = self._latest.get(str(order_id))
            if intent_id is None:
                raise PaymentError(f"order {order_id!r} has no payment intent to validate")
            intent = self._intents[intent_id]
            intent.decision = decision
            intent.message = message

    def approve(self, order_id: EntityId) -> None:
        """Mark the order's latest intent as paid."""
        self._decide(order_id, _Decision.APPROVED, "Payment approved by an operator")

    def decline(self, order_id: EntityId, message: str = "Payment declined by an operator") -> None:
        """Mark the order's latest intent as refused, with the operator's reason."""
        self._decide(order_id, _Decision.DECLINED, message)

    def after_payment_executed(self, order: Order) -> Order:
        with self._lock:
            intent = self._intents.get(order.payment_intent_id or "")
            snapshot = copy.deepcopy(intent)
        if snapshot is None:
            raise PaymentError(f"unknown payment intent {order.payment_intent_id!r}")
        status, message = {
            _Decision.WAITING: (Status.PENDING, "Awaiting manual validation"),
            _Decision.APPROVED: (Status.PAID, snapshot.message),
            _Decision.DECLINED: (Status.REFUSED, snapshot.message),
        }[snapshot.decision]
        payload = json.dumps({"intent": snapshot.intent_id, "decision": snapshot.decision.value})
        return self._with_entry(order, status, message, payload)

    def handle_webhook(self, payload: bytes | str, signature: str | None) -> WebhookEvent:
        raise PaymentError("the manual payment client receives no webhooks")

    def refund(self, order: Order, amount: Decimal | None = None) -> Order:
        if amount is None:
            return self._with_entry(order, Status.REFUNDED, "Refunded by an operator", None)
        return self._with_entry(
            order, Status.PARTIAL, f"{amount} {order.currency} refunded by an operator", None
        )

    def check_user_balance(self, user_id: UserId) -> Decimal:
        return Decimal(0)

    def fetch_user_balance(self, user_id: UserId) -> Decimal:
        return Decimal(0)

    @staticmethod
    def _with_entry(order: Order, status: Status, message: str, payload: str | None) -> Order:
        result = copy.deepcopy(order)
        result.status = status
        result.history.append(
            OrderStatus(date=None, status=status, message=message, payload=payload)
        )
        return result
