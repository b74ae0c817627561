"""``AsyncPaymentService``: the service's calls as coroutines, in a bounded thread pool."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import pytest

from usercredits import (
    FrozenClock,
    InMemoryDaoFactory,
    InsufficientCreditsError,
    ManualPaymentClient,
    Offer,
    PaymentService,
)
from usercredits.aio import AsyncPaymentService

SYNC = {"now", "get_dao_factory", "equals"}


@pytest.fixture
def service() -> PaymentService:
    return PaymentService(InMemoryDaoFactory(), ManualPaymentClient(), clock=FrozenClock())


def public(kind: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(kind) if not name.startswith("_")}


def test_every_call_of_the_service_is_offered() -> None:
    assert public(PaymentService) <= public(AsyncPaymentService)


def test_every_call_that_may_wait_is_a_coroutine() -> None:
    for name in public(PaymentService) - SYNC:
        assert inspect.iscoroutinefunction(getattr(AsyncPaymentService, name)), name


def test_a_coroutine_returns_what_the_call_returns(service: PaymentService) -> None:
    offers = service.get_dao_factory().get_offer_dao()
    free = offers.create(
        Offer(name="Free", kind="tokens", offer_group="ai", cycle="monthly", price=0, token_count=9)
    )

    async def play() -> tuple[Any, int]:
        async with AsyncPaymentService(service, max_workers=2) as facade:
            order = await facade.create_order(free.id, "alice")
            return order, await facade.remaining_tokens("alice", "ai")

    order, balance = asyncio.run(play())
    assert order == service.get_dao_factory().get_order_dao().find_by_id(order.id)
    assert balance == 9


def test_a_coroutine_raises_what_the_call_raises(service: PaymentService) -> None:
    async def play() -> None:
        async with AsyncPaymentService(service) as facade:
            await facade.consume_tokens("alice", "ai", 1)

    with pytest.raises(InsufficientCreditsError):
        asyncio.run(play())


def test_calls_run_in_the_pool_not_in_the_event_loop(service: PaymentService) -> None:
    seen: list[str] = []
    facade = AsyncPaymentService(service, max_workers=1)
    original = service.remaining_tokens

    def spy(user_id: Any, offer_group: str) -> int:
        seen.append(threading.current_thread().name)
        return original(user_id, offer_group)

    service.remaining_tokens = spy  # type: ignore[method-assign]

    async def play() -> str:
        await facade.remaining_tokens("alice", "ai")
        await facade.aclose()
        return threading.current_thread().name

    loop_thread = asyncio.run(play())
    assert len(seen) == 1
    assert seen[0].startswith("usercredits")
    assert seen[0] != loop_thread


def test_concurrent_coroutines_never_overdraw(service: PaymentService) -> None:
    service.grant_tokens("alice", "ai", 20)

    async def play() -> list[Any]:
        async with AsyncPaymentService(service, max_workers=8) as facade:
            calls = [facade.consume_tokens("alice", "ai", 1) for _ in range(50)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(play())
    refused = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, InsufficientCreditsError) for r in refused)
    assert len(results) - len(refused) == 20
    assert service.remaining_tokens("alice", "ai") == 0
