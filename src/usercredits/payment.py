"""The payment gateway interface the services talk to, and the events it reports."""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from usercredits.errors import PaymentError
from usercredits.models import EntityId, Model, Order, UserId


class WebhookEventKind(enum.StrEnum):
    """What a gateway event means for an order."""

    PAYMENT_SUCCEEDED = "payment_succeeded"
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_CANCELED = "payment_canceled"
    REFUNDED = "refunded"
    REFUND_FAILED = "refund_failed"
    DISPUTE_OPENED = "dispute_opened"
    DISPUTE_LOST = "dispute_lost"
    DISPUTE_WON = "dispute_won"
    OTHER = "other"


@dataclass(kw_only=True)
class WebhookEvent(Model):
    """A verified gateway event, mapped to what the services need to apply it."""

    id: str
    type: str
    kind: WebhookEventKind = WebhookEventKind.OTHER
    payment_intent_id: str | None = None
    order_id: EntityId = None
    payload: str | None = None
    """The event's body as received (stored as is, replayed from it)."""
    amount: Decimal | None = None
    """For a refund: the total refunded so far for the payment (None: all of it); for a
    dispute: the disputed amount."""
    created: datetime | None = None
    """When the gateway created the event."""


class PaymentClient(abc.ABC):
    """A payment gateway. Implementations raise PaymentError for gateway or network failures
    and never change stored data themselves: they return updated copies of orders."""

    def check_order(self, order: Order) -> None:  # noqa: B027 - optional hook
        """Raise InvalidPaymentError when the gateway could not take ``order`` (its amount or
        currency); called before anything is stored. Accepts everything by default."""

    @abc.abstractmethod
    def create_payment_intent(self, order: Order) -> Order:
        """A copy of ``order`` with a new ``payment_intent_id`` and ``payment_intent_secret``;
        retried calls for the same order and attempt create no second intent."""

    @abc.abstractmethod
    def after_payment_executed(self, order: Order) -> Order:
        """A copy of ``order`` with the status the gateway reports for its current intent and
        one history entry appended describing that outcome (payload: the gateway's record)."""

    @abc.abstractmethod
    def handle_webhook(self, payload: bytes | str, signature: str | None) -> WebhookEvent:
        """The verified event; PaymentError when the signature or payload is not valid."""

    @abc.abstractmethod
    def refund(self, order: Order, amount: Decimal | None = None) -> Order:
        """Refund ``amount`` of the order's payment (None: all that is left); a copy with a
        history entry. Retried for the same order and amount, it refunds nothing more."""

    def parse_event(self, payload: bytes | str) -> WebhookEvent:
        """The event of a payload verified when it was received (to replay a stored event);
        PaymentError when this client cannot read it again."""
        raise PaymentError(f"{type(self).__name__} cannot replay stored events")

    @abc.abstractmethod
    def check_user_balance(self, user_id: UserId) -> Decimal:
        """The user's balance held by the gateway, possibly from a short-lived cache."""

    @abc.abstractmethod
    def fetch_user_balance(self, user_id: UserId) -> Decimal:
        """The user's balance held by the gateway, asked to the gateway now."""
