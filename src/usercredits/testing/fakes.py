"""A scripted, in-process payment gateway for tests: :class:`FakePaymentClient`.

The fake implements :class:`~usercredits.payment.PaymentClient` without any
network. A test decides what the gateway reports for each order's current
payment intent (:meth:`FakePaymentClient.set_outcome`), makes the next call of
a method fail (:meth:`FakePaymentClient.fail_next`), emits signed webhook
events (:meth:`FakePaymentClient.event`) and inspects the calls it received
(:attr:`FakePaymentClient.calls`)::

    gateway = FakePaymentClient()
    service = PaymentService(InMemoryDaoFactory(), gateway)
    order = service.create_order(offer.id, "alice")
    gateway.set_outcome(order.id, Status.PAID)
    service.after_execute(order.id)                    # settled: tokens granted

    payload, signature = gateway.event(WebhookEventKind.REFUNDED, order.id)
    service.handle_webhook(payload, signature)         # refunded: unused tokens revoked

Webhook payloads are JSON objects ``{"id", "type", "data": {"payment_intent", "order_id"}}``
signed with the hex HMAC-SHA256 of the payload under ``webhook_secret``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import itertools
import json
import threading
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from usercredits.errors import PaymentError
from usercredits.models import EntityId, Order, OrderStatus, Status, UserId
from usercredits.payment import PaymentClient, WebhookEvent, WebhookEventKind

OUTCOMES = frozenset(
    {Status.PENDING, Status.PAID, Status.REFUSED, Status.ERROR, Status.INCONSISTENT}
)
"""The statuses a fake intent can report when an order is settled."""

METHODS = frozenset(
    {
        "check_order",
        "create_payment_intent",
        "after_payment_executed",
        "handle_webhook",
        "refund",
        "check_user_balance",
        "fetch_user_balance",
    }
)
"""The :class:`PaymentClient` methods :meth:`FakePaymentClient.fail_next` can make fail."""

_EVENT_OUTCOMES = {
    WebhookEventKind.PAYMENT_SUCCEEDED: (Status.PAID, "Payment succeeded"),
    WebhookEventKind.PAYMENT_FAILED: (Status.REFUSED, "Payment failed"),
    WebhookEventKind.PAYMENT_CANCELED: (Status.REFUSED, "Payment canceled"),
}


@dataclass(frozen=True)
class FakeCall:
    """One call received by the fake: the method, and the order and intent it was about."""

    method: str
    order_id: EntityId = None
    payment_intent_id: str | None = None


@dataclass
class FakeIntent:
    """A payment intent held by the fake gateway, with the outcome it reports."""

    id: str
    order_id: str
    amount: Decimal
    currency: str | None
    outcome: Status = Status.PENDING
    message: str = ""
    refunded: bool = False
    refunded_amount: Decimal = Decimal(0)


class FakePaymentClient(PaymentClient):
    """A payment gateway scripted by the test, thread-safe, with no network.

    Every new intent reports ``default_outcome`` until :meth:`set_outcome` changes
    it. Emitting a payment event with :meth:`event` also sets the outcome of its
    intent (succeeded → paid; failed or canceled → refused), so a service that asks
    the gateway after a webhook hears the same story. :meth:`handle_webhook`
    rejects a missing or wrong signature, and a payload that is not an event, with
    :class:`~usercredits.errors.PaymentError`.
    """

    def __init__(
        self, webhook_secret: str = "whsec_fake", *, default_outcome: Status = Status.PENDING
    ):
        self.webhook_secret = webhook_secret
        self.default_outcome = _outcome(default_outcome)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._intents: dict[str, FakeIntent] = {}
        self._latest: dict[str, str] = {}
        self._failures: dict[str, deque[PaymentError]] = {}
        self._balances: dict[Any, Decimal] = {}
        self._calls: list[FakeCall] = []

    # -- scripting ---------------------------------------------------------------------

    def set_outcome(
        self, order_id: EntityId, outcome: Status | str, message: str | None = None
    ) -> None:
        """What the order's latest intent reports from now on (pending, paid, refused, error
        or inconsistent); PaymentError when the order has no intent."""
        status = _outcome(outcome)
        with self._lock:
            intent = self._latest_intent(order_id)
            intent.outcome = status
            intent.message = message if message is not None else f"Payment {status}"

    def fail_next(self, method: str, error: PaymentError | None = None) -> None:
        """Make the next call of ``method`` raise ``error`` (default: a gateway PaymentError)
        without doing anything; calls queue up when used several times."""
        if method not in METHODS:
            raise ValueError(f"unknown payment client method {method!r}")
        failure = error or PaymentError(f"{method} failed: the fake gateway is down")
        with self._lock:
            self._failures.setdefault(method, deque()).append(failure)

    def set_balance(self, user_id: UserId, amount: Decimal) -> None:
        """The balance the gateway holds for the user (default 0)."""
        if not isinstance(amount, Decimal):
            raise TypeError(f"a balance is a Decimal, got {amount!r}")
        with self._lock:
            self._balances[_user_key(user_id)] = amount

    # -- inspection --------------------------------------------------------------------

    @property
    def calls(self) -> list[FakeCall]:
        """Every call received, in order (a copy)."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[FakeCall]:
        """The calls received by one method, in order."""
        return [call for call in self.calls if call.method == method]

    def intent(self, payment_intent_id: str) -> FakeIntent:
        """A copy of an intent; KeyError when the fake never created it."""
        with self._lock:
            return copy.copy(self._intents[payment_intent_id])

    def latest_intent(self, order_id: EntityId) -> FakeIntent | None:
        """A copy of the order's latest intent, None when it has none."""
        with self._lock:
            intent_id = self._latest.get(str(order_id))
            return None if intent_id is None else copy.copy(self._intents[intent_id])

    # -- webhooks ----------------------------------------------------------------------

    def sign(self, payload: bytes | str) -> str:
        """The signature :meth:`handle_webhook` expects for ``payload``."""
        raw = payload.encode() if isinstance(payload, str) else payload
        return hmac.new(self.webhook_secret.encode(), raw, hashlib.sha256).hexdigest()

    def event(
        self,
        kind: WebhookEventKind | str,
        order_id: EntityId = None,
        *,
        payment_intent_id: str | None = None,
        event_id: str | None = None,
        event_type: str | None = None,
        amount: Decimal | None = None,
    ) -> tuple[bytes, str]:
        """A signed webhook ``(payload, signature)`` about the order's latest intent (or
        ``payment_intent_id``). A payment event sets its intent's outcome first; a refund
        event marks it refunded (``amount``: the total refunded so far, for a partial
        refund; for a dispute, the disputed amount). ``event_type`` names an event of kind
        ``other``."""
        kind = WebhookEventKind(kind)
        with self._lock:
            if payment_intent_id is None and order_id is not None:
                payment_intent_id = self._latest_intent(order_id).id
            intent = self._intents.get(payment_intent_id or "")
            if kind in _EVENT_OUTCOMES:
                if intent is None:
                    raise PaymentError(f"unknown payment intent {payment_intent_id!r}")
                intent.outcome, intent.message = _EVENT_OUTCOMES[kind]
            elif kind is WebhookEventKind.REFUNDED and intent is not None:
                intent.refunded_amount = intent.amount if amount is None else amount
                intent.refunded = intent.refunded_amount >= intent.amount
            body = {
                "id": event_id or f"evt_fake_{next(self._ids)}",
                "type": event_type or kind.value,
                "data": {
                    "payment_intent": payment_intent_id,
                    "order_id": None if order_id is None else str(order_id),
                    "amount": None if amount is None else str(amount),
                },
            }
        payload = json.dumps(body, sort_keys=True).encode()
        return payload, self.sign(payload)

    # -- PaymentClient -----------------------------------------------------------------

    def check_order(self, order: Order) -> None:
        self._record("check_order", order.id, None)

    def create_payment_intent(self, order: Order) -> Order:
        self._record("create_payment_intent", order.id, None)
        if order.id is None:
            raise PaymentError("an order must be stored before it gets a payment intent")
        with self._lock:
            intent = FakeIntent(
                id=f"fakepi_{next(self._ids)}",
                order_id=str(order.id),
                amount=order.total,
                currency=order.currency,
                outcome=self.default_outcome,
                message=f"Payment {self.default_outcome}",
            )
            self._intents[intent.id] = intent
            self._latest[intent.order_id] = intent.id
        result = copy.deepcopy(order)
        result.payment_intent_id = intent.id
        result.payment_intent_secret = f"{intent.id}_secret"
        return result

    def after_payment_executed(self, order: Order) -> Order:
        self._record("after_payment_executed", order.id, order.payment_intent_id)
        with self._lock:
            intent = self._intents.get(order.payment_intent_id or "")
            snapshot = copy.copy(intent)
        if snapshot is None:
            raise PaymentError(f"unknown payment intent {order.payment_intent_id!r}")
        return _with_entry(order, snapshot.outcome, snapshot.message, _intent_json(snapshot))

    def handle_webhook(self, payload: bytes | str, signature: str | None) -> WebhookEvent:
        self._record("handle_webhook", None, None)
        if not signature or not hmac.compare_digest(self.sign(payload), signature):
            raise PaymentError("the webhook signature is missing or wrong")
        return self.parse_event(payload)

    def parse_event(self, payload: bytes | str) -> WebhookEvent:
        try:
            body = json.loads(payload)
            event_id, event_type, data = body["id"], body["type"], body["data"]
            intent_id, order_id = data.get("payment_intent"), data.get("order_id")
            amount = None if data.get("amount") is None else Decimal(data["amount"])
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError) as e:
            raise PaymentError(f"the webhook payload is not an event: {e}", e) from e
        try:
            kind = WebhookEventKind(event_type)
        except ValueError:
            kind = WebhookEventKind.OTHER
        text = payload.decode() if isinstance(payload, bytes) else payload
        return WebhookEvent(
            id=str(event_id),
            type=str(event_type),
            kind=kind,
            payment_intent_id=intent_id,
            order_id=order_id,
            payload=text,
            amount=amount,
        )

    def refund(self, order: Order, amount: Decimal | None = None) -> Order:
        self._record("refund", order.id, order.payment_intent_id)
        with self._lock:
            intent = self._intents.get(order.payment_intent_id or "")
            if intent is not None:
                # A retried refund answers like the first one, as a gateway does for a retried
                # request with the same idempotency key.
                intent.refunded_amount = max(
                    intent.refunded_amount,
                    order.refunded_amount + (order.refundable_amount if amount is None else amount),
                )
                intent.refunded = intent.refunded_amount >= intent.amount
            payload = None if intent is None else _intent_json(intent)
        if amount is None:
            return _with_entry(order, Status.REFUNDED, "Refunded by the fake gateway", payload)
        message = f"{amount} {order.currency} refunded by the fake gateway"
        return _with_entry(order, Status.PARTIAL, message, payload)

    def check_user_balance(self, user_id: UserId) -> Decimal:
        return self._balance("check_user_balance", user_id)

    def fetch_user_balance(self, user_id: UserId) -> Decimal:
        return self._balance("fetch_user_balance", user_id)

    # -- internals ---------------------------------------------------------------------

    def _balance(self, method: str, user_id: UserId) -> Decimal:
        self._record(method, None, None)
        with self._lock:
            return self._balances.get(_user_key(user_id), Decimal(0))

    def _record(self, method: str, order_id: EntityId, intent_id: str | None) -> None:
        with self._lock:
            self._calls.append(FakeCall(method, order_id, intent_id))
            failures = self._failures.get(method)
            failure = failures.popleft() if failures else None
        if failure is not None:
            raise failure

    def _latest_intent(self, order_id: EntityId) -> FakeIntent:
        intent_id = self._latest.get(str(order_id))
        if intent_id is None:
            raise PaymentError(f"order {order_id!r} has no payment intent")
        return self._intents[intent_id]


def _outcome(value: Status | str) -> Status:
    try:
        status = Status(value)
    except ValueError:
        status = None
    if status is None or status not in OUTCOMES:
        allowed = ", ".join(sorted(OUTCOMES))
        raise ValueError(f"a payment outcome is one of {allowed}, not {value!r}")
    return status


def _user_key(user_id: UserId) -> tuple[type, Any]:
    return (type(user_id), user_id)


def _intent_json(intent: FakeIntent) -> str:
    record = dataclasses.asdict(intent)
    record["amount"] = str(intent.amount)
    record["refunded_amount"] = str(intent.refunded_amount)
    return json.dumps(record, sort_keys=True)


def _with_entry(order: Order, status: Status, message: str, payload: str | None) -> Order:
    result = copy.deepcopy(order)
    result.status = status
    result.history.append(OrderStatus(date=None, status=status, message=message, payload=payload))
    return result
