"""Fixtures of the example applications' tests: an in-memory container with a frozen clock
and the fake gateway, and the catalogue the tests sell.

The applications live in ``examples/`` at the repository's root, which is not installed:
the root is put first on ``sys.path`` so that ``import examples`` finds them.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from dependency_injector import providers

from usercredits import FrozenClock, InMemoryDaoFactory, Offer
from usercredits.containers import UserCreditsContainer
from usercredits.testing.fakes import FakePaymentClient
from usercredits.testing.faults import FaultyDaoFactory

from .app_contract import AI_TOKENS

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2025, 1, 15, 12, 0, tzinfo=UTC))


@pytest.fixture
def gateway() -> FakePaymentClient:
    return FakePaymentClient()


@pytest.fixture
def storage() -> FaultyDaoFactory:
    """The in-memory backend, whose next write a test can make fail."""
    return FaultyDaoFactory(InMemoryDaoFactory())


@pytest.fixture
def container(
    clock: FrozenClock, gateway: FakePaymentClient, storage: FaultyDaoFactory
) -> UserCreditsContainer:
    return UserCreditsContainer(
        dao_factory=providers.Object(storage),
        payment_client=providers.Object(gateway),
        clock=providers.Object(clock),
    )


@pytest.fixture
def pack(storage: FaultyDaoFactory) -> Offer:
    """1,000 AI tokens for a month, 9.90 USD."""
    return storage.get_offer_dao().create(
        Offer(
            key="tokens-1k",
            name="1,000 AI tokens",
            kind="tokens",
            offer_group=AI_TOKENS,
            cycle="monthly",
            price=Decimal("9.90"),
            currency="usd",
            token_count=1000,
            tags=["web"],
        )
    )


@pytest.fixture
def free_plan(storage: FaultyDaoFactory) -> Offer:
    """100 AI tokens a month, free (once at a time)."""
    return storage.get_offer_dao().create(
        Offer(
            key="free",
            name="Free plan",
            kind="subscription",
            offer_group=AI_TOKENS,
            cycle="monthly",
            price=Decimal("0"),
            currency="usd",
            token_count=100,
        )
    )


@pytest.fixture
def vip_pack(storage: FaultyDaoFactory) -> Offer:
    """5,000 AI tokens for 39.00 USD, for sale only to buyers of a pack."""
    return storage.get_offer_dao().create(
        Offer(
            key="tokens-5k-vip",
            name="5,000 AI tokens (VIP)",
            kind="tokens",
            offer_group=AI_TOKENS,
            cycle="monthly",
            price=Decimal("39.00"),
            currency="usd",
            token_count=5000,
            unlocked_by=[AI_TOKENS],
        )
    )
