"""The payment service: offers, orders, settlement, consumption and expiry.

Every rule of the product lives here, once, above the storage interfaces of
:mod:`usercredits.dao`; the backends only provide atomic operations. Time comes
from the injected clock (UTC, whole milliseconds), money is Decimal.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from usercredits.clock import Clock, system_clock, to_utc
from usercredits.dao import DaoFactory
from usercredits.errors import (
    EntityNotFoundError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidOrderError,
    InvalidPaymentError,
    PaymentErrorCode,
)
from usercredits.grants import GroupState, replay
from usercredits.models import (
    CombinedOffer,
    CombinedOrder,
    Cycle,
    EntityId,
    ExpiryReport,
    ExpiryWarning,
    LedgerReason,
    Offer,
    Order,
    OrderStatus,
    Status,
    Subscription,
    TokenTimetable,
    UserCredits,
    UserId,
    WebhookResult,
)
from usercredits.payment import PaymentClient, WebhookEventKind
from usercredits.periods import window_end

logger = logging.getLogger("usercredits")

_SETTLEABLE = frozenset({Status.PENDING, Status.REFUSED, Status.ERROR})
_REFUNDABLE = frozenset({Status.PAID, Status.EXPIRED})
_REVOKE_ATTEMPTS = 8
_KEY_WAITS = 4


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class PaymentService:
    """Sell offers, settle their payments, and keep users' token balances.

    Safe to share between threads, and between processes sharing one database:
    settling an order, expiring it and applying a webhook each take effect once,
    and balances only change through atomic backend operations.
    """

    def __init__(
        self,
        dao_factory: DaoFactory,
        payment_client: PaymentClient,
        default_currency: str = "usd",
        *,
        clock: Clock | None = None,
    ):
        if not isinstance(default_currency, str) or len(default_currency) != 3:
            raise ValueError(f"default_currency must be an ISO 4217 code, got {default_currency!r}")
        self._factory = dao_factory
        self._client = payment_client
        self._currency = default_currency.lower()
        self._clock = clock or system_clock
        self._offers = dao_factory.get_offer_dao()
        self._orders = dao_factory.get_order_dao()
        self._ledger = dao_factory.get_token_timetable_dao()
        self._credits = dao_factory.get_user_credits_dao()

    # -- helpers -----------------------------------------------------------------------

    def now(self) -> datetime:
        """The injected clock's reading, UTC, truncated to milliseconds."""
        return to_utc(self._clock(), "the clock's reading")

    def get_dao_factory(self) -> DaoFactory:
        """The storage backend this service works on."""
        return self._factory

    @staticmethod
    def equals(a: Any, b: Any) -> bool:
        """Whether two ids are the same, whatever their form (an id equals its ``str()``)."""
        if a is None or b is None:
            return a is b
        return str(a) == str(b)

    def _entry(self, status: Status, message: str, payload: str | None = None) -> OrderStatus:
        return OrderStatus(date=self.now(), status=status, message=message, payload=payload)

    def _load_order(self, order_or_id: Order | EntityId) -> Order:
        order_id = order_or_id.id if isinstance(order_or_id, Order) else order_or_id
        order = self._orders.find_by_id(order_id) if order_id is not None else None
        if order is None:
            raise EntityNotFoundError(f"no order with id {order_id!r}")
        return order

    @staticmethod
    def _check_user(user_id: UserId) -> None:
        if user_id is None or (isinstance(user_id, str) and not user_id):
            raise ValueError(f"a user id is required, got {user_id!r}")

    # -- offers ------------------------------------------------------------------------

    def load_offers(
        self, user_id: UserId = None, env_tags: Collection[str] | None = None
    ) -> list[Offer]:
        """The offers a user may order now: regular offers (with every tag of ``env_tags``),
        where offers unlocked by the user's live paid subscriptions replace the regular offer
        sharing their ``overriding_key`` (highest ``weight`` first, then smallest id)."""
        if isinstance(env_tags, str):
            raise ValueError("env_tags must be a list of tags, not a str")
        regular = self._offers.find_regular(env_tags)
        if user_id is None:
            return regular
        groups = self._credits.active_groups(user_id, self.now())
        if not groups:
            return regular
        candidates: dict[str, list[Offer]] = {}
        unkeyed: list[Offer] = []
        for offer in self._offers.find_unlocked_by(groups):
            if offer.overriding_key is None:
                unkeyed.append(offer)
            else:
                candidates.setdefault(offer.overriding_key, []).append(offer)
        winners = {key: _best_unlocked(key, offers) for key, offers in candidates.items()}
        result: list[Offer] = []
        placed: set[str] = set()
        for offer in regular:
            key = offer.overriding_key
            if key is not None and key in winners:
                if key not in placed:
                    result.append(winners[key])
                    placed.add(key)
                continue
            result.append(offer)
        result.extend(o for k, o in winners.items() if k not in placed)
        result.extend(unkeyed)
        return result

    # -- orders ------------------------------------------------------------------------

    def create_order(
        self,
        offer_id: EntityId,
        user_id: UserId,
        quantity: int | None = None,
        currency: str | None = None,
        *,
        starts: datetime | None = None,
    ) -> Order:
        """Create a pending order (with the user's credits and pending subscriptions) and its
        payment intent; a free order is paid at once. Invalid input raises before any write."""
        if user_id is None or (isinstance(user_id, str) and not user_id):
            raise InvalidOrderError(f"a user id is required, got {user_id!r}")
        offer = self._offers.find_by_id(offer_id) if offer_id is not None else None
        if offer is None:
            raise EntityNotFoundError(f"no offer with id {offer_id!r}")
        if quantity is None:
            quantity = 1
        if not _is_count(quantity):
            raise InvalidOrderError(f"quantity must be a positive int, got {quantity!r}")
        if offer.quantity_limit is not None and quantity > offer.quantity_limit:
            raise InvalidOrderError(
                f"quantity {quantity} is above the limit {offer.quantity_limit} "
                f"of offer {offer.name!r}"
            )
        order_currency = offer.currency or self._currency
        if currency is not None and (
            not isinstance(currency, str) or currency.lower() != order_currency
        ):
            raise InvalidOrderError(
                f"offer {offer.name!r} is sold in {order_currency!r}, not {currency!r}"
            )
        now = self.now()
        if starts is not None:
            try:
                starts = to_utc(starts, "starts")
            except ValueError as e:
                raise InvalidOrderError(str(e)) from None
            if starts <= now:
                raise InvalidOrderError(f"starts must be in the future, got {starts.isoformat()}")
        bundled = [(item, self._bundled_offer(offer, item)) for item in offer.combined_items]
        items = [self._combined_order(item, item_offer, quantity) for item, item_offer in bundled]
        order = Order(
            user_id=user_id,
            offer_id=offer.id,
            offer_group=offer.offer_group,
            status=Status.PENDING,
            quantity=quantity,
            total=offer.price * quantity,
            currency=order_currency,
            cycle=offer.cycle,
            custom_cycle=offer.custom_cycle,
            token_count=(offer.token_count or 0) * quantity,
            starts=starts,
            combined_items=items,
            history=[OrderStatus(date=now, status=Status.PENDING, message="Order created")],
            created_at=now,
            updated_at=now,
        )
        if order.total > 0:
            self._client.check_order(order)
        stored = self._orders.create(order)
        self._credits.get_or_create(user_id)
        names = [offer.name, *(item_offer.name for _, item_offer in bundled)]
        self._credits.add_subscriptions(user_id, self._subscriptions(stored, names))
        if stored.total > 0:
            return self._attach_intent(stored, {Status.PENDING})
        self._settle(stored, self._entry(Status.PAID, "Free subscription succeeded"))
        return self._load_order(stored.id)

    def _bundled_offer(self, offer: Offer, item: CombinedOffer) -> Offer:
        item_offer = self._offers.find_by_id(item.offer_id) if item.offer_id is not None else None
        if item_offer is None:
            raise EntityNotFoundError(
                f"offer {offer.name!r} bundles offer {item.offer_id!r}, which does not exist"
            )
        return item_offer

    @staticmethod
    def _combined_order(item: CombinedOffer, item_offer: Offer, quantity: int) -> CombinedOrder:
        cycle = item.cycle or item_offer.cycle
        custom = item.custom_cycle if item.cycle is not None else item_offer.custom_cycle
        units = item.quantity * quantity
        return CombinedOrder(
            offer_id=item_offer.id,
            offer_group=item.offer_group,
            quantity=units,
            cycle=cycle,
            custom_cycle=custom,
            token_count=(item_offer.token_count or 0) * units,
        )

    @staticmethod
    def _subscriptions(order: Order, names: list[str]) -> list[Subscription]:
        """One subscription for the order and one per bundle item; ``names`` are the offers'
        names, the root's first."""
        root = Subscription(
            offer_id=order.offer_id,
            order_id=order.id,
            name=names[0],
            offer_group=order.offer_group,
            cycle=order.cycle,
            custom_cycle=order.custom_cycle,
            quantity=order.quantity,
            status=order.status,
            starts=order.starts,
            tokens=order.token_count,
            total=order.total,
            currency=order.currency,
        )
        subs = [root]
        for item, name in zip(order.combined_items, names[1:], strict=True):
            subs.append(
                Subscription(
                    offer_id=item.offer_id,
                    order_id=order.id,
                    name=name,
                    offer_group=item.offer_group,
                    cycle=item.cycle or order.cycle,
                    custom_cycle=item.custom_cycle,
                    quantity=item.quantity,
                    status=order.status,
                    tokens=item.token_count,
                    currency=order.currency,
                )
            )
        return subs

    def _attach_intent(self, order: Order, from_statuses: set[Status]) -> Order:
        with_intent = self._client.create_payment_intent(order)
        if not with_intent.payment_intent_id:
            raise InvalidPaymentError(
                "the payment client returned no payment intent",
                code=PaymentErrorCode.GATEWAY,
                order_id=order.id,
            )
        stored = self._orders.transition(
            order.id,
            from_statuses,
            {
                "status": Status.PENDING,
                "payment_intent_id": with_intent.payment_intent_id,
                "updated_at": self.now(),
            },
            self._entry(Status.PENDING, f"Payment intent {with_intent.payment_intent_id} created"),
        )
        if stored is None:
            current = self._after_lost_race(order.id)
            raise InvalidPaymentError(
                f"order {order.id!r} changed to {current.status} meanwhile; try again",
                order_id=order.id,
            )
        if order.status is not Status.PENDING:
            self._set_subscriptions(stored, {"status": Status.PENDING})
        stored.payment_intent_secret = with_intent.payment_intent_secret
        return stored

    @staticmethod
    def _refuse_payment(order: Order) -> None:
        """Raise the error for paying or settling an order in a status that forbids it."""
        if order.status is Status.PAID:
            raise InvalidPaymentError(
                f"order {order.id!r} is already paid",
                code=PaymentErrorCode.DUPLICATE_ATTEMPT,
                order_id=order.id,
            )
        if order.status not in _SETTLEABLE:
            raise InvalidPaymentError(
                f"order {order.id!r} is {order.status}; it cannot be paid or settled",
                code=PaymentErrorCode.VALIDATION,
                order_id=order.id,
            )

    def _after_lost_race(self, order_id: EntityId) -> Order:
        """The order as a concurrent call left it, once a conditional change of it failed;
        raises the error of :meth:`_refuse_payment` when it can no longer be paid."""
        current = self._load_order(order_id)
        self._refuse_payment(current)
        return current

    def pay_order(self, order_id: EntityId) -> Order:
        """A new payment intent for a pending, refused or failed order (back to ``pending``)."""
        order = self._load_order(order_id)
        self._refuse_payment(order)
        if order.parent_id is not None:
            raise InvalidPaymentError(
                "a bundle item is paid with its bundle order", order_id=order.id
            )
        return self._attach_intent(order, set(_SETTLEABLE))

    def after_execute(self, order_or_id: Order | EntityId) -> UserCredits:
        """Settle an order after the client-side payment, with the outcome the payment client
        reports. Raises InvalidPaymentError (DUPLICATE_ATTEMPT) for an order already paid,
        also when a concurrent settlement paid it first."""
        order = self._load_order(order_or_id)
        self._refuse_payment(order)
        if not order.payment_intent_id:
            raise InvalidPaymentError(
                f"order {order.id!r} has no payment intent to settle", order_id=order.id
            )
        self._apply_outcome(order, self._client.after_payment_executed(copy.deepcopy(order)))
        credits = self._credits.find_by_user_id(order.user_id)
        return credits if credits is not None else self._credits.get_or_create(order.user_id)

    def _client_entry(
        self, order: Order, outcome: Order, status: Status, default: str
    ) -> OrderStatus:
        """The history entry the payment client appended to its copy of ``order``, dated by the
        service's clock (``default`` is the message when it appended none)."""
        added = outcome.history[len(order.history) :]
        last = added[-1] if added else OrderStatus()
        return self._entry(status, last.message or default, last.payload)

    def _apply_outcome(self, order: Order, outcome: Order) -> Order:
        entry = self._client_entry(order, outcome, outcome.status, f"Payment {outcome.status}")
        if outcome.status is Status.PAID:
            return self._settle(order, entry)
        if outcome.status is Status.PENDING:
            stored = self._orders.transition(
                order.id, {Status.PENDING}, {"updated_at": entry.date}, entry
            )
        elif outcome.status in (Status.REFUSED, Status.ERROR, Status.INCONSISTENT):
            stored = self._orders.transition(
                order.id, _SETTLEABLE, {"status": outcome.status, "updated_at": entry.date}, entry
            )
            if stored is not None:
                self._set_subscriptions(stored, {"status": outcome.status})
        else:
            raise InvalidPaymentError(
                f"the payment client reported an unexpected status {outcome.status!r}",
                code=PaymentErrorCode.GATEWAY,
                order_id=order.id,
            )
        if stored is None:
            return self._after_lost_race(order.id)
        return stored

    def _settle(self, order: Order, entry: OrderStatus) -> Order:
        """Mark the order paid (exactly once), then open its windows and grant its tokens."""
        now = entry.date or self.now()
        paid = self._orders.transition(
            order.id, _SETTLEABLE, {"status": Status.PAID, "updated_at": now}, entry
        )
        if paid is None:
            return self._after_lost_race(order.id)
        offer = self._offers.find_by_id(paid.offer_id)
        starts, expires = self._window(
            paid,
            paid.offer_group,
            paid.cycle,
            paid.custom_cycle,
            paid.quantity,
            append=bool(offer and offer.append_date),
            explicit=paid.starts,
            now=now,
        )
        items: list[CombinedOrder] = []
        for item in paid.combined_items:
            item_offer = self._offers.find_by_id(item.offer_id)
            if item_offer is not None and item_offer.append_date:
                istarts, iexpires = self._window(
                    paid,
                    item.offer_group,
                    item.cycle or paid.cycle,
                    item.custom_cycle,
                    item.quantity,
                    append=True,
                    explicit=None,
                    now=now,
                )
            else:
                istarts, iexpires = starts, expires
                self._credits.open_window(paid.user_id, item.offer_group, istarts, iexpires)
            items.append(dataclasses.replace(item, starts=istarts, expires=iexpires))
        settled = self._orders.transition(
            paid.id,
            {Status.PAID},
            {"starts": starts, "expires": expires, "combined_items": items, "updated_at": now},
        )
        settled = settled or paid
        self._grant(
            settled.user_id, settled.offer_group, settled.token_count, settled.id, expires, now
        )
        self._credits.update_subscriptions(
            settled.user_id,
            settled.id,
            {"status": Status.PAID, "starts": starts, "expires": expires},
            offer_id=settled.offer_id,
            offer_group=settled.offer_group,
        )
        for item in items:
            child = self._orders.create(
                Order(
                    user_id=settled.user_id,
                    offer_id=item.offer_id,
                    offer_group=item.offer_group,
                    status=Status.PAID,
                    quantity=item.quantity,
                    total=Decimal(0),
                    currency=settled.currency,
                    cycle=item.cycle or settled.cycle,
                    custom_cycle=item.custom_cycle,
                    token_count=item.token_count,
                    starts=item.starts,
                    expires=item.expires,
                    parent_id=settled.id,
                    history=[
                        OrderStatus(
                            date=now,
                            status=Status.PAID,
                            message=f"Paid with bundle order {settled.id}",
                        )
                    ],
                    created_at=now,
                    updated_at=now,
                )
            )
            self._grant(
                child.user_id, child.offer_group, child.token_count, child.id, child.expires, now
            )
            self._credits.update_subscriptions(
                settled.user_id,
                settled.id,
                {"status": Status.PAID, "starts": item.starts, "expires": item.expires},
                offer_id=item.offer_id,
                offer_group=item.offer_group,
            )
        return settled

    def _window(
        self,
        order: Order,
        offer_group: str,
        cycle: Cycle,
        custom_cycle: int | None,
        units: int,
        *,
        append: bool,
        explicit: datetime | None,
        now: datetime,
    ) -> tuple[datetime, datetime | None]:
        def length(start: datetime) -> datetime | None:
            return window_end(start, cycle, custom_cycle, units)

        if explicit is None and append:
            return self._credits.chain_window(order.user_id, offer_group, now, length)
        starts = explicit or now
        expires = length(starts)
        self._credits.open_window(order.user_id, offer_group, starts, expires)
        return starts, expires

    def _grant(
        self,
        user_id: UserId,
        offer_group: str,
        tokens: int,
        order_id: EntityId,
        expires: datetime | None,
        now: datetime,
    ) -> None:
        if tokens <= 0:
            return
        line = TokenTimetable(
            user_id=user_id,
            offer_group=offer_group,
            tokens=tokens,
            created_at=now,
            order_id=order_id,
            reason=LedgerReason.PURCHASE,
            expires=expires,
        )
        _, created = self._ledger.insert_once(line)
        if created:
            self._credits.add_tokens(user_id, offer_group, tokens, now=now)

    def _set_subscriptions(
        self, order: Order, changes: Mapping[str, Any], *, own: bool = False
    ) -> None:
        """Change the order's subscriptions: a bundle item's own one; a root order's and, unless
        ``own``, its items' too (they follow the root until it is paid)."""
        if order.parent_id is not None or own:
            self._credits.update_subscriptions(
                order.user_id,
                order.id if order.parent_id is None else order.parent_id,
                changes,
                offer_id=order.offer_id,
                offer_group=order.offer_group,
            )
        else:
            self._credits.update_subscriptions(order.user_id, order.id, changes)

    # -- refunds and webhooks ----------------------------------------------------------

    def refund(self, order_id: EntityId) -> Order:
        """Refund a paid (or expired) order through the payment client, then mark it and its
        bundle items ``refunded`` and revoke the tokens they still hold."""
        order = self._load_order(order_id)
        if order.parent_id is not None:
            raise InvalidPaymentError(
                "refund the bundle order, not one of its items", order_id=order.id
            )
        if order.status is Status.REFUNDED:
            raise InvalidPaymentError(
                f"order {order.id!r} is already refunded",
                code=PaymentErrorCode.DUPLICATE_ATTEMPT,
                order_id=order.id,
            )
        if order.status not in _REFUNDABLE:
            raise InvalidPaymentError(
                f"order {order.id!r} is {order.status}; only paid orders can be refunded",
                order_id=order.id,
            )
        outcome = self._client.refund(copy.deepcopy(order))
        return self._apply_refund(
            order, self._client_entry(order, outcome, Status.REFUNDED, "Refunded")
        )

    def _apply_refund(self, order: Order, entry: OrderStatus) -> Order:
        refunded = self._orders.transition(
            order.id, _REFUNDABLE, {"status": Status.REFUNDED, "updated_at": entry.date}, entry
        )
        if refunded is None:
            return self._load_order(order.id)
        touched = {refunded.offer_group}
        self._set_subscriptions(refunded, {"status": Status.REFUNDED})
        if refunded.token_count > 0:
            self._revoke(refunded, LedgerReason.REFUND)
        for child in self._orders.find_children(refunded.id):
            done = self._orders.transition(
                child.id,
                _REFUNDABLE,
                {"status": Status.REFUNDED, "updated_at": entry.date},
                OrderStatus(
                    date=entry.date, status=Status.REFUNDED, message="Bundle order refunded"
                ),
            )
            if done is not None:
                touched.add(done.offer_group)
                self._set_subscriptions(done, {"status": Status.REFUNDED})
                if done.token_count > 0:
                    self._revoke(done, LedgerReason.REFUND)
        for group in touched:
            live = self._orders.find_paid(refunded.user_id, group)
            starts = min((o.starts for o in live if o.starts is not None), default=None)
            ends = [o.expires for o in live if o.expires is not None]
            # With no live order left, the group's window closes now: the expiry routine
            # then drops the group once its balance is spent.
            self._credits.reset_window(
                refunded.user_id,
                group,
                starts,
                max(ends, default=None if live else entry.date),
                any(o.expires is None for o in live),
            )
        return refunded

    def handle_webhook(self, payload: bytes | str, signature: str | None) -> WebhookResult:
        """Verify a gateway event and apply it once: a payment outcome settles its order, a
        refund revokes the order's unused tokens. Replays change nothing; unknown types are
        acknowledged and ignored; a bad signature raises PaymentError."""
        event = self._client.handle_webhook(payload, signature)
        result = WebhookResult(event_id=event.id, event_type=event.type)
        if event.kind is WebhookEventKind.OTHER:
            result.message = f"event type {event.type!r} ignored"
            return result
        order = (
            self._orders.find_by_payment_intent_id(event.payment_intent_id)
            if event.payment_intent_id
            else None
        )
        if order is None:
            result.message = f"no order has payment intent {event.payment_intent_id!r}"
            logger.warning("webhook %s: %s", event.id, result.message)
            return result
        result.order = order
        if not self._orders.claim_webhook_event(order.id, event.id):
            result.duplicate = True
            result.message = "event already applied"
            return result
        try:
            if event.kind is WebhookEventKind.REFUNDED:
                result.order = self._apply_refund(
                    order,
                    self._entry(
                        Status.REFUNDED, f"Refund reported by event {event.id}", event.payload
                    ),
                )
            elif order.status in _SETTLEABLE:
                outcome = self._client.after_payment_executed(copy.deepcopy(order))
                result.order = self._apply_outcome(order, outcome)
            else:
                result.message = f"order is {order.status}; nothing to settle"
        except InvalidPaymentError as e:
            result.message = str(e)
            result.order = self._load_order(order.id)
        except BaseException:
            self._orders.release_webhook_event(order.id, event.id)
            raise
        result.handled = True
        return result

    # -- consumption -------------------------------------------------------------------

    @staticmethod
    def _check_consumption(offer_group: str, count: Any, idempotency_key: str | None) -> None:
        if not _is_count(count):
            raise ValueError(f"count must be a positive int, got {count!r}")
        if not isinstance(offer_group, str) or not offer_group:
            raise ValueError(f"offer_group must be a non-empty str, got {offer_group!r}")
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not idempotency_key
        ):
            raise ValueError(f"idempotency_key must be a non-empty str, got {idempotency_key!r}")

    @staticmethod
    def _same_consumption(line: TokenTimetable, offer_group: str, count: int) -> TokenTimetable:
        if (
            line.offer_group != offer_group
            or line.tokens != -count
            or line.reason is not LedgerReason.CONSUMPTION
        ):
            raise IdempotencyConflictError(
                f"idempotency key {line.idempotency_key!r} was used for {-line.tokens} tokens of "
                f"{line.offer_group!r}, not {count} tokens of {offer_group!r}"
            )
        return line

    def tokens_consumed(
        self, user_id: UserId, offer_group: str, count: int, *, idempotency_key: str | None = None
    ) -> TokenTimetable:
        """Record a consumption of ``count`` tokens, even beyond the balance (post-paid use);
        a retry with the same ``idempotency_key`` returns the first line and consumes nothing."""
        self._check_user(user_id)
        self._check_consumption(offer_group, count, idempotency_key)
        now = self.now()
        line = TokenTimetable(
            user_id=user_id,
            offer_group=offer_group,
            tokens=-count,
            created_at=now,
            reason=LedgerReason.CONSUMPTION,
            idempotency_key=idempotency_key,
        )
        stored, created = self._ledger.insert_once(line)
        if not created:
            return self._same_consumption(stored, offer_group, count)
        self._credits.add_tokens(user_id, offer_group, -count, now=now)
        return stored

    def consume_tokens(
        self,
        user_id: UserId,
        offer_group: str,
        count: int,
        *,
        allow_negative: bool = False,
        idempotency_key: str | None = None,
    ) -> TokenTimetable:
        """Atomically check the balance and consume ``count`` tokens; raises
        InsufficientCreditsError (nothing changed, key not used up) when the balance would go
        below zero, unless ``allow_negative``. Idempotent like :meth:`tokens_consumed`."""
        self._check_user(user_id)
        self._check_consumption(offer_group, count, idempotency_key)
        if idempotency_key is not None:
            known = self._ledger.find_by_idempotency_key(user_id, idempotency_key)
            if known is not None:
                return self._same_consumption(known, offer_group, count)
        now = self.now()
        balance = self._credits.add_tokens(
            user_id, offer_group, -count, now=now, floor=None if allow_negative else 0
        )
        if balance is None:
            if idempotency_key is not None:
                known = self._wait_for_key(user_id, idempotency_key)
                if known is not None:
                    return self._same_consumption(known, offer_group, count)
            current = self.remaining_tokens(user_id, offer_group)
            raise InsufficientCreditsError(
                f"user {user_id!r} has {current} tokens in {offer_group!r}; {count} requested",
                balance=current,
                requested=count,
            )
        line = TokenTimetable(
            user_id=user_id,
            offer_group=offer_group,
            tokens=-count,
            created_at=now,
            reason=LedgerReason.CONSUMPTION,
            idempotency_key=idempotency_key,
        )
        stored, created = self._ledger.insert_once(line)
        if not created:
            # A racing retry recorded the key first: give the tokens back, answer like it.
            self._credits.add_tokens(user_id, offer_group, count, now=now)
            return self._same_consumption(stored, offer_group, count)
        return stored

    def _wait_for_key(self, user_id: UserId, key: str) -> TokenTimetable | None:
        """The line recorded with ``key``, waiting briefly for a racing call with the same key
        that took the tokens first but has not recorded its line yet."""
        for attempt in range(_KEY_WAITS):
            known = self._ledger.find_by_idempotency_key(user_id, key)
            if known is not None or attempt == _KEY_WAITS - 1:
                return known
            time.sleep(0.001 * 2**attempt)
        return None

    def remaining_tokens(self, user_id: UserId, offer_group: str) -> int:
        """The user's balance in ``offer_group`` (0 when the user has no such group)."""
        offer = self._credits.get_activated_offer(user_id, offer_group)
        return 0 if offer is None else offer.tokens

    def is_user_already_subscribed(self, user_id: UserId, offer_id: EntityId) -> Order | None:
        """The user's paid order of this offer, None when there is none."""
        return self._orders.find_one(
            {"user_id": user_id, "offer_id": offer_id, "status": Status.PAID}
        )

    def load_user_credits(self, user_id: UserId) -> UserCredits | None:
        """The user's credits, None when the user never ordered nor consumed."""
        return self._credits.find_by_user_id(user_id)

    # -- expiry ------------------------------------------------------------------------

    def check_for_expired_orders(
        self,
        user_id: UserId,
        warn_before: timedelta | None = None,
        low: Mapping[str, int] | None = None,
    ) -> ExpiryReport:
        """Expire the user's paid orders whose window ended (each exactly once, removing the
        tokens its grant still holds), drop spent groups, and report warnings."""
        self._check_user(user_id)
        if warn_before is not None and (
            not isinstance(warn_before, timedelta) or warn_before < timedelta(0)
        ):
            raise ValueError(f"warn_before must be a non-negative timedelta, got {warn_before!r}")
        if low is not None and not all(
            isinstance(g, str) and isinstance(v, int) and not isinstance(v, bool)
            for g, v in low.items()
        ):
            raise ValueError(f"low must map offer groups to int minimums, got {low!r}")
        now = self.now()
        report = ExpiryReport(user_id=user_id)
        for order in self._orders.find_due(user_id, now):
            expired = self._orders.transition(
                order.id,
                {Status.PAID},
                {"status": Status.EXPIRED, "updated_at": now},
                OrderStatus(date=now, status=Status.EXPIRED, message="Expired"),
            )
            if expired is None:
                continue
            report.expired_orders.append(expired)
            # Bundle items expire as child orders, each with its own window.
            self._set_subscriptions(expired, {"status": Status.EXPIRED}, own=True)
        # Ending one grant leaves the others' remainders as they were: one replay per group.
        states: dict[str, GroupState] = {}
        for expired in report.expired_orders:
            if expired.token_count <= 0:
                continue
            group = expired.offer_group
            if group not in states:
                states[group] = replay(self._ledger.find_group(user_id, group))
            removed = self._revoke(expired, LedgerReason.EXPIRY, states[group])
            if removed:
                report.removed_tokens[group] = report.removed_tokens.get(group, 0) + removed
        credits = self._credits.find_by_user_id(user_id)
        if credits is None:
            return report
        for offer in credits.offers:
            if offer.tokens == 0 and offer.expires is not None and offer.expires <= now:
                gone = self._credits.remove_offer_if_spent(user_id, offer.offer_group, now)
                if gone is not None:
                    report.expired.append(gone)
        gone_groups = {o.offer_group for o in report.expired}
        for offer in credits.offers:
            if offer.offer_group in gone_groups:
                continue
            if (
                warn_before is not None
                and offer.expires is not None
                and now < offer.expires <= now + warn_before
            ):
                report.warnings.append(
                    ExpiryWarning(
                        offer_group=offer.offer_group,
                        reason="expiring",
                        expires=offer.expires,
                        tokens=offer.tokens,
                    )
                )
            if (
                low is not None
                and offer.offer_group in low
                and offer.tokens <= low[offer.offer_group]
            ):
                report.warnings.append(
                    ExpiryWarning(
                        offer_group=offer.offer_group,
                        reason="low_balance",
                        expires=offer.expires,
                        tokens=offer.tokens,
                    )
                )
        return report

    def _revoke(self, order: Order, reason: LedgerReason, state: GroupState | None = None) -> int:
        """Remove what the order's grant still holds (from ``state``, a fresh replay of its
        group, when given; it is brought up to date afterwards); how many tokens were removed.

        The balance is lowered only while it is not below the replayed ledger's sum (a
        consumption landing meanwhile makes it replay again), then the line is recorded and
        checked against the lines before it: if a racing line made the grant hold less, the
        line and the balance are corrected, so a grant never loses more than it held."""
        user_id, group = order.user_id, order.offer_group
        now = self.now()
        removed = 0
        replayed = state
        for attempt in range(_REVOKE_ATTEMPTS):
            if replayed is None or attempt > 0:
                replayed = replay(self._ledger.find_group(user_id, group))
            if str(order.id) in replayed.ended:
                return 0
            remainder = replayed.remainder(order.id)
            if remainder <= 0:
                return 0
            floor = replayed.balance - remainder
            taken = self._credits.add_tokens(user_id, group, -remainder, now=now, floor=floor)
            if taken is not None:
                removed = remainder
                break
            # The balance and the ledger disagree: a consumption or grant is in flight.
            time.sleep(0.001 * 2**attempt)
        else:
            current = self.remaining_tokens(user_id, group)
            removed = min(remainder, max(current, 0))
            if (
                removed <= 0
                or self._credits.add_tokens(user_id, group, -removed, now=now, floor=0) is None
            ):
                return 0
            logger.warning(
                "order %s: removed %d of %d expired tokens, the rest was consumed meanwhile",
                order.id,
                removed,
                remainder,
            )
        line = TokenTimetable(
            user_id=user_id,
            offer_group=group,
            tokens=-removed,
            created_at=now,
            order_id=order.id,
            reason=reason,
        )
        stored, created = self._ledger.insert_once(line)
        if not created:
            self._credits.add_tokens(user_id, group, removed, now=now)
            return 0
        lines = self._ledger.find_group(user_id, group)
        position = next((i for i, x in enumerate(lines) if str(x.id) == str(stored.id)), None)
        if position is None:
            return removed
        held = max(replay(lines[:position]).remainder(order.id), 0)
        if held < removed:
            # A line recorded between our replay and our line drew from this grant first.
            self._ledger.update_by_id(stored.id, {"tokens": -held})
            self._credits.add_tokens(user_id, group, removed - held, now=now)
            logger.warning(
                "order %s: %d tokens were drawn meanwhile; removed %d, not %d",
                order.id,
                removed - held,
                held,
                removed,
            )
            lines[position] = dataclasses.replace(lines[position], tokens=-held)
            removed = held
        if state is not None:
            fresh = replay(lines)
            state.grants, state.unattributed = fresh.grants, fresh.unattributed
            state.debt, state.ended = fresh.debt, fresh.ended
        return removed


def _best_unlocked(key: str, offers: list[Offer]) -> Offer:
    """The unlocked offer that wins ``key``: highest weight, then smallest ``str(id)``."""
    ranked = sorted(offers, key=lambda o: (-o.weight, str(o.id)))
    tied = [o for o in ranked if o.weight == ranked[0].weight]
    if len(tied) > 1:
        logger.warning(
            "offers %s unlock the same overriding key %r with the same weight %d; %r wins",
            ", ".join(repr(str(o.id)) for o in tied),
            key,
            ranked[0].weight,
            str(ranked[0].id),
        )
    return ranked[0]
