"""The payment service for asyncio applications (FastAPI, Starlette, aiohttp...).

:class:`AsyncPaymentService` offers every call of :class:`~usercredits.service.PaymentService`
as a coroutine that runs the synchronous call in a bounded thread pool, so that the event
loop never waits on the database or the payment gateway. Results and errors are those of
the synchronous call; its guarantees (atomicity, idempotency, no overdraft) hold whatever
the number of coroutines running at once::

    service = AsyncPaymentService(container.service(), max_workers=8)
    order = await service.create_order(offer_id, user_id)
    ...
    await service.aclose()
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from usercredits.dao import DaoFactory
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
    TokenTimetable,
    UserCredits,
    UserId,
    WebhookEventRecord,
    WebhookResult,
)
from usercredits.service import PaymentService

P = ParamSpec("P")
R = TypeVar("R")


class AsyncPaymentService:
    """Every call of ``service`` as a coroutine, run in a pool of at most ``max_workers``
    threads (default: Python's ``ThreadPoolExecutor`` default). Close it with :meth:`aclose`
    (or ``async with``) when the application stops."""

    def __init__(self, service: PaymentService, *, max_workers: int | None = None):
        self._service = service
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="usercredits")

    @property
    def service(self) -> PaymentService:
        """The synchronous service the coroutines call."""
        return self._service

    def now(self) -> datetime:
        """The service clock's reading (no I/O, so not a coroutine)."""
        return self._service.now()

    def get_dao_factory(self) -> DaoFactory:
        """The storage backend of the service."""
        return self._service.get_dao_factory()

    @staticmethod
    def equals(a: Any, b: Any) -> bool:
        """Whether two ids are the same, whatever their form."""
        return PaymentService.equals(a, b)

    async def _run(self, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(call, *args, **kwargs))

    async def aclose(self) -> None:
        """Wait for the calls under way, then stop the threads."""
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)

    async def __aenter__(self) -> AsyncPaymentService:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def after_execute(self, order_or_id: Order | EntityId) -> UserCredits:
        """:meth:`PaymentService.after_execute`, run in the thread pool."""
        return await self._run(self._service.after_execute, order_or_id)

    async def audit(self, user_id: UserId) -> AuditReport:
        """:meth:`PaymentService.audit`, run in the thread pool."""
        return await self._run(self._service.audit, user_id)

    async def available_tokens(self, user_id: UserId, offer_group: str) -> int:
        """:meth:`PaymentService.available_tokens`, run in the thread pool."""
        return await self._run(self._service.available_tokens, user_id, offer_group)

    async def capture(self, hold_id: EntityId, count: int | None = None) -> TokenTimetable:
        """:meth:`PaymentService.capture`, run in the thread pool."""
        return await self._run(self._service.capture, hold_id, count)

    async def check_for_expired_orders(
        self,
        user_id: UserId,
        warn_before: timedelta | None = None,
        low: Mapping[str, int] | None = None,
    ) -> ExpiryReport:
        """:meth:`PaymentService.check_for_expired_orders`, run in the thread pool."""
        return await self._run(self._service.check_for_expired_orders, user_id, warn_before, low)

    async def consume_tokens(
        self,
        user_id: UserId,
        offer_group: str,
        count: int,
        *,
        allow_negative: bool = False,
        idempotency_key: str | None = None,
    ) -> TokenTimetable:
        """:meth:`PaymentService.consume_tokens`, run in the thread pool."""
        return await self._run(
            self._service.consume_tokens,
            user_id,
            offer_group,
            count,
            allow_negative=allow_negative,
            idempotency_key=idempotency_key,
        )

    async def create_order(
        self,
        offer_id: EntityId,
        user_id: UserId,
        quantity: int | None = None,
        currency: str | None = None,
        *,
        starts: datetime | None = None,
    ) -> Order:
        """:meth:`PaymentService.create_order`, run in the thread pool."""
        return await self._run(
            self._service.create_order, offer_id, user_id, quantity, currency, starts=starts
        )

    async def grant_tokens(
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
        """:meth:`PaymentService.grant_tokens`, run in the thread pool."""
        return await self._run(
            self._service.grant_tokens,
            user_id,
            offer_group,
            count,
            expires=expires,
            priority=priority,
            source=source,
            idempotency_key=idempotency_key,
            note=note,
        )

    async def grants(
        self, user_id: UserId, offer_group: str | None = None, *, include_ended: bool = False
    ) -> list[Grant]:
        """:meth:`PaymentService.grants`, run in the thread pool."""
        return await self._run(
            self._service.grants, user_id, offer_group, include_ended=include_ended
        )

    async def handle_webhook(self, payload: bytes | str, signature: str | None) -> WebhookResult:
        """:meth:`PaymentService.handle_webhook`, run in the thread pool."""
        return await self._run(self._service.handle_webhook, payload, signature)

    async def history(
        self,
        user_id: UserId,
        offer_group: str | None = None,
        *,
        limit: int = 50,
        before: EntityId = None,
    ) -> list[TokenTimetable]:
        """:meth:`PaymentService.history`, run in the thread pool."""
        return await self._run(
            self._service.history, user_id, offer_group, limit=limit, before=before
        )

    async def is_user_already_subscribed(self, user_id: UserId, offer_id: EntityId) -> Order | None:
        """:meth:`PaymentService.is_user_already_subscribed`, run in the thread pool."""
        return await self._run(self._service.is_user_already_subscribed, user_id, offer_id)

    async def load_offers(
        self, user_id: UserId = None, env_tags: Collection[str] | None = None
    ) -> list[Offer]:
        """:meth:`PaymentService.load_offers`, run in the thread pool."""
        return await self._run(self._service.load_offers, user_id, env_tags)

    async def load_user_credits(self, user_id: UserId) -> UserCredits | None:
        """:meth:`PaymentService.load_user_credits`, run in the thread pool."""
        return await self._run(self._service.load_user_credits, user_id)

    async def pay_order(self, order_id: EntityId) -> Order:
        """:meth:`PaymentService.pay_order`, run in the thread pool."""
        return await self._run(self._service.pay_order, order_id)

    async def reconcile(self, user_id: UserId) -> ReconcileReport:
        """:meth:`PaymentService.reconcile`, run in the thread pool."""
        return await self._run(self._service.reconcile, user_id)

    async def refund(
        self,
        order_id: EntityId,
        amount: Decimal | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Order:
        """:meth:`PaymentService.refund`, run in the thread pool."""
        return await self._run(
            self._service.refund, order_id, amount, idempotency_key=idempotency_key
        )

    async def release(self, hold_id: EntityId) -> Hold:
        """:meth:`PaymentService.release`, run in the thread pool."""
        return await self._run(self._service.release, hold_id)

    async def remaining_tokens(self, user_id: UserId, offer_group: str) -> int:
        """:meth:`PaymentService.remaining_tokens`, run in the thread pool."""
        return await self._run(self._service.remaining_tokens, user_id, offer_group)

    async def replay_webhook(self, event_id: str) -> WebhookResult:
        """:meth:`PaymentService.replay_webhook`, run in the thread pool."""
        return await self._run(self._service.replay_webhook, event_id)

    async def reserve(
        self,
        user_id: UserId,
        offer_group: str,
        count: int,
        *,
        ttl: timedelta = timedelta(minutes=10),
        idempotency_key: str | None = None,
    ) -> Hold:
        """:meth:`PaymentService.reserve`, run in the thread pool."""
        return await self._run(
            self._service.reserve,
            user_id,
            offer_group,
            count,
            ttl=ttl,
            idempotency_key=idempotency_key,
        )

    async def settle(self, order_or_id: Order | EntityId) -> Order:
        """:meth:`PaymentService.settle`, run in the thread pool."""
        return await self._run(self._service.settle, order_or_id)

    async def tokens_consumed(
        self, user_id: UserId, offer_group: str, count: int, *, idempotency_key: str | None = None
    ) -> TokenTimetable:
        """:meth:`PaymentService.tokens_consumed`, run in the thread pool."""
        return await self._run(
            self._service.tokens_consumed,
            user_id,
            offer_group,
            count,
            idempotency_key=idempotency_key,
        )

    async def void_grant(self, grant_id: EntityId) -> Grant:
        """:meth:`PaymentService.void_grant`, run in the thread pool."""
        return await self._run(self._service.void_grant, grant_id)

    async def webhook_events(
        self, *, limit: int = 50, before: str | None = None
    ) -> list[WebhookEventRecord]:
        """:meth:`PaymentService.webhook_events`, run in the thread pool."""
        return await self._run(self._service.webhook_events, limit=limit, before=before)
