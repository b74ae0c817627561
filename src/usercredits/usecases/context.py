"""What every use case works with: the storage, the gateway, the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from usercredits.accounts import Accounts
from usercredits.clock import Clock, to_utc
from usercredits.dao import DaoFactory
from usercredits.errors import EntityNotFoundError
from usercredits.models import EntityId, Order, OrderStatus, Status
from usercredits.payment import PaymentClient


@dataclass
class Context:
    """The backend's DAOs, the payment client, the clock and the default currency."""

    factory: DaoFactory
    client: PaymentClient
    clock: Clock
    currency: str
    accounts: Accounts = field(init=False)

    def __post_init__(self) -> None:
        self.offers = self.factory.get_offer_dao()
        self.orders = self.factory.get_order_dao()
        self.lines = self.factory.get_token_timetable_dao()
        self.credits = self.factory.get_user_credits_dao()
        self.customers = self.factory.get_customer_dao()
        self.events = self.factory.get_webhook_event_dao()
        self.accounts = Accounts(self.credits, self.lines)

    def now(self) -> datetime:
        """The clock's reading, UTC, truncated to milliseconds."""
        return to_utc(self.clock(), "the clock's reading")

    def entry(self, status: Status, message: str, payload: str | None = None) -> OrderStatus:
        """A history entry dated now."""
        return OrderStatus(date=self.now(), status=status, message=message, payload=payload)

    def load_order(self, order_or_id: Order | EntityId) -> Order:
        """The order as stored; EntityNotFoundError when there is none."""
        order_id = order_or_id.id if isinstance(order_or_id, Order) else order_or_id
        order = self.orders.find_by_id(order_id) if order_id is not None else None
        if order is None:
            raise EntityNotFoundError(f"no order with id {order_id!r}")
        return order
