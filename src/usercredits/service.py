"""The payment service: the public facade over the use cases of :mod:`usercredits.usecases`.

Every call that writes commits with one atomic write and then applies its
effects idempotently (see :mod:`usercredits.accounts` and
:mod:`usercredits.usecases.effects`): a call interrupted by a crash or a failed
database call is completed by retrying it, by the expiry routine or by
:meth:`PaymentService.reconcile`. Time comes from the injected clock (UTC,
whole milliseconds), money is Decimal.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from usercredits.clock import Clock, system_clock
from usercredits.dao import DaoFactory
from usercredits.errors import InvalidInputError
from usercredits.models import (
    DEFAULT_PRIORITY,
    AuditReport,
    EntityId,
    ExpiryReport,
    Grant,
    GrantSource,
    Hold,
    Offer,
    Order,
    ReconcileReport,
    Status,
    TokenTimetable,
    UserCredits,
    UserId,
    WebhookEventRecord,
    WebhookResult,
)
from usercredits.payment import PaymentClient
from usercredits.usecases import (
    consumption,
    expiry,
    granting,
    holds,
    ordering,
    refunds,
    settlement,
    storefront,
    upkeep,
    views,
)
from usercredits.usecases.context import Context


class PaymentService:
    """Sell offers, settle their payments, and keep users' token balances.

    Safe to share between threads, and between processes sharing one database:
    settling an order, expiring it, refunding it and applying a webhook each take
    effect once, balances always equal the sum of their ledger lines, and no safe
    consumption can overdraw, whatever runs concurrently.
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
            raise InvalidInputError(
                f"default_currency must be an ISO 4217 code, got {default_currency!r}"
            )
        self._ctx = Context(
            factory=dao_factory,
            client=payment_client,
            clock=clock or system_clock,
            currency=default_currency.lower(),
        )

    # -- helpers -----------------------------------------------------------------------

    def now(self) -> datetime:
        """The injected clock's reading, UTC, truncated to milliseconds."""
        return self._ctx.now()

    def get_dao_factory(self) -> DaoFactory:
        """The storage backend this service works on."""
        return self._ctx.factory

    @staticmethod
    def equals(a: Any, b: Any) -> bool:
        """Whether two ids are the same, whatever their form (an id equals its ``str()``)."""
        if a is None or b is None:
            return a is b
        return str(a) == str(b)

    # -- storefront and orders ---------------------------------------------------------

    def load_offers(
        self, user_id: UserId = None, env_tags: Collection[str] | None = None
    ) -> list[Offer]:
        """The offers a user may order now: regular offers (with every tag of ``env_tags``),
        where offers unlocked by the user's live paid orders replace the regular offer
        sharing their ``overriding_key`` (highest ``weight`` first, then smallest id)."""
        return storefront.load_offers(self._ctx, user_id, env_tags)

    def create_order(
        self,
        offer_id: EntityId,
        user_id: UserId,
        quantity: int | None = None,
        currency: str | None = None,
        *,
        starts: datetime | None = None,
    ) -> Order:
        """Create a pending order and its payment intent; a free order is paid at once.
        Invalid input raises before anything is stored."""
        return ordering.create_order(self._ctx, offer_id, user_id, quantity, currency, starts)

    def pay_order(self, order_id: EntityId) -> Order:
        """A new payment intent for a pending, refused or failed order (back to ``pending``)."""
        return ordering.pay_order(self._ctx, order_id)

    def after_execute(self, order_or_id: Order | EntityId) -> UserCredits:
        """Settle an order after the client-side payment, with the outcome the payment client
        reports; the user's credits afterwards. A settlement that was interrupted is
        completed. Raises InvalidPaymentError (DUPLICATE_ATTEMPT) for an order whose
        settlement is complete, also when a concurrent settlement completed it first."""
        order = settlement.settle(self._ctx, order_or_id, strict=True)
        credits = views.load_user_credits(self._ctx, order.user_id)
        return credits if credits is not None else UserCredits(user_id=order.user_id)

    def settle(self, order_or_id: Order | EntityId) -> Order:
        """Settle like :meth:`after_execute` and return the order as stored afterwards; an
        order whose settlement is already complete is returned as it is, without error, so
        a browser's call and the gateway's webhook may race."""
        return settlement.settle(self._ctx, order_or_id, strict=False)

    def is_user_already_subscribed(self, user_id: UserId, offer_id: EntityId) -> Order | None:
        """The user's paid order of this offer, None when there is none."""
        return self._ctx.orders.find_one(
            {"user_id": user_id, "offer_id": offer_id, "status": Status.PAID}
        )

    # -- refunds and webhooks ----------------------------------------------------------

    def refund(
        self,
        order_id: EntityId,
        amount: Decimal | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Order:
        """Refund ``amount`` of a paid (or expired) order through the payment client (None: all
        that is left of its total). A refund of all that is left marks the order and its
        bundle items ``refunded`` and takes back the tokens they still hold; a part of it marks
        the order ``partial`` and takes back that share of its tokens (floor(tokens x refunded
        / total), less what earlier partial refunds took, never more than a grant holds).
        Refunding more than what is left is an InvalidInputError, nothing changed. A full
        refund is safe to retry; a partial one is made again by a retry unless it carries an
        ``idempotency_key``, recorded in the order's history."""
        return refunds.refund(self._ctx, order_id, amount, idempotency_key)

    def replay_webhook(self, event_id: str) -> WebhookResult:
        """Apply a stored gateway event again; idempotent."""
        return refunds.replay_webhook(self._ctx, event_id)

    def webhook_events(
        self, *, limit: int = 50, before: str | None = None
    ) -> list[WebhookEventRecord]:
        """The gateway events received, the last first: at most ``limit`` (1 to 1000), received
        before the event ``before`` when given."""
        return views.webhook_events(self._ctx, limit, before)

    def handle_webhook(self, payload: bytes | str, signature: str | None) -> WebhookResult:
        """Verify a gateway event, store it once by its id and apply it: a payment outcome
        settles its order, a refund (partial or full) or a lost dispute takes back the order's
        tokens, an opened or won dispute and a failed refund are recorded in its history.
        Duplicate deliveries change nothing; unknown types are stored, acknowledged and
        ignored; a bad signature raises PaymentError and stores nothing."""
        return refunds.handle_webhook(self._ctx, payload, signature)

    # -- consumption -------------------------------------------------------------------

    def tokens_consumed(
        self, user_id: UserId, offer_group: str, count: int, *, idempotency_key: str | None = None
    ) -> TokenTimetable:
        """Record a consumption of ``count`` tokens, even beyond the balance (post-paid use);
        a retry with the same ``idempotency_key`` returns the first line and consumes nothing."""
        return consumption.consume(
            self._ctx, user_id, offer_group, count, floor=None, idempotency_key=idempotency_key
        )

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
        return consumption.consume(
            self._ctx,
            user_id,
            offer_group,
            count,
            floor=None if allow_negative else 0,
            idempotency_key=idempotency_key,
        )

    def remaining_tokens(self, user_id: UserId, offer_group: str) -> int:
        """The user's balance in ``offer_group`` (0 when the user has no such group)."""
        return consumption.remaining_tokens(self._ctx, user_id, offer_group)

    def load_user_credits(self, user_id: UserId) -> UserCredits | None:
        """The user's credits, None when the user never ordered nor consumed."""
        return views.load_user_credits(self._ctx, user_id)

    def history(
        self,
        user_id: UserId,
        offer_group: str | None = None,
        *,
        limit: int = 50,
        before: EntityId = None,
    ) -> list[TokenTimetable]:
        """The user's ledger lines (of one group when given), newest first: at most ``limit``
        (1 to 1000), recorded before the line ``before`` when given (a cursor: pass the id of
        the last line of a page to get the next page)."""
        return views.history(self._ctx, user_id, offer_group, limit, before)

    # -- grants ------------------------------------------------------------------------

    def grants(
        self, user_id: UserId, offer_group: str | None = None, *, include_ended: bool = False
    ) -> list[Grant]:
        """The user's live grants (of one group when given), in burn order within each group:
        lowest priority first, then the soonest expiry (never-expiring last), then the oldest.
        With ``include_ended``, every grant made, expired, refunded or voided too (read from
        the whole ledger)."""
        return granting.grants(self._ctx, user_id, offer_group, include_ended)

    def grant_tokens(
        self,
        user_id: UserId,
        offer_group: str,
        count: int,
        *,
        expires: datetime | None = None,
        priority: int = DEFAULT_PRIORITY,
        source: GrantSource | str = GrantSource.PROMOTIONAL,
        idempotency_key: str | None = None,
        note: str | None = None,
    ) -> Grant:
        """Credit ``count`` tokens without an order (a promotion, a compensation), expiring at
        ``expires`` (None: never). Like any grant it repays the group's debt first. A retry
        with the same ``idempotency_key`` returns the same grant; a key used for anything
        else raises IdempotencyConflictError."""
        return granting.grant_tokens(
            self._ctx,
            user_id,
            offer_group,
            count,
            expires=expires,
            priority=priority,
            source=source,
            idempotency_key=idempotency_key,
            note=note,
        )

    def void_grant(self, grant_id: EntityId) -> Grant:
        """Remove what the grant (a direct grant's id, or an order's id for its purchase
        grant) still holds, now; idempotent. EntityNotFoundError for an unknown grant."""
        return granting.void_grant(self._ctx, grant_id)

    # -- holds -------------------------------------------------------------------------

    def reserve(
        self,
        user_id: UserId,
        offer_group: str,
        count: int,
        *,
        ttl: timedelta = timedelta(minutes=10),
        idempotency_key: str | None = None,
    ) -> Hold:
        """Hold ``count`` tokens for a job until now + ``ttl``: safe consumptions and other
        holds cannot take them meanwhile. InsufficientCreditsError (nothing held) when fewer
        tokens are available. A retry with the same key returns the same hold."""
        return holds.reserve(
            self._ctx, user_id, offer_group, count, ttl=ttl, idempotency_key=idempotency_key
        )

    def available_tokens(self, user_id: UserId, offer_group: str) -> int:
        """The balance minus the tokens of the active holds."""
        return holds.available_tokens(self._ctx, user_id, offer_group)

    def capture(self, hold_id: EntityId, count: int | None = None) -> TokenTimetable:
        """Consume ``count`` tokens of the hold (default: all it holds; more only if the
        excess is available, else InsufficientCreditsError) and free the rest; exactly once:
        a retry returns the same line. HoldExpiredError when the hold ended or was released."""
        return holds.capture(self._ctx, hold_id, count)

    def release(self, hold_id: EntityId) -> Hold:
        """Free the hold's tokens; idempotent."""
        return holds.release(self._ctx, hold_id)

    # -- expiry and upkeep -------------------------------------------------------------

    def check_for_expired_orders(
        self,
        user_id: UserId,
        warn_before: timedelta | None = None,
        low: Mapping[str, int] | None = None,
    ) -> ExpiryReport:
        """Expire the user's paid orders whose window ended (each exactly once, removing the
        tokens its grant still holds), close spent groups, and report warnings. Completes
        every operation of the user left in progress first."""
        return expiry.check_for_expired_orders(self._ctx, user_id, warn_before, low)

    def reconcile(self, user_id: UserId) -> ReconcileReport:
        """Complete every operation of the user that was interrupted (settlements, expiries,
        refunds) and bring derived state up to date with the ledger; idempotent."""
        return upkeep.reconcile(self._ctx, user_id)

    def audit(self, user_id: UserId) -> AuditReport:
        """Check each of the user's groups: balance == ledger sum == live remainders - debt."""
        return upkeep.audit(self._ctx, user_id)
