"""Fixtures of the command line tests: a prepared in-memory container the commands run on."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from dependency_injector import providers

from usercredits import (
    FrozenClock,
    InMemoryDaoFactory,
    ManualPaymentClient,
    Offer,
    PaymentService,
)
from usercredits.cli import main
from usercredits.containers import UserCreditsContainer

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

Invoke = Callable[..., Result]


def mongo_backend_available() -> bool:
    """Whether the mongo extra provides ``MongoDaoFactory`` (the CLI's ``mongodb`` backend)."""
    if importlib.util.find_spec("usercredits_mongo") is None:
        return False
    import usercredits_mongo

    return hasattr(usercredits_mongo, "MongoDaoFactory")


needs_mongo = pytest.mark.skipif(
    not mongo_backend_available(), reason="usercredits_mongo.MongoDaoFactory is not available"
)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every command line test runs in an empty working directory (where the default SQLite
    file would be created), without the backend variables of the caller's environment."""
    for name in ("USERCREDITS_DB", "USERCREDITS_MONGO_URI", "USERCREDITS_MONGO_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def sql_backend() -> None:
    """Skip the test when the SQL backend (the ``sql`` extra) cannot be imported."""
    pytest.importorskip(
        "usercredits_sql", reason="the SQL backend is not installed: pip install 'usercredits[sql]'"
    )


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def container(clock: FrozenClock) -> Any:
    """A container on a fresh in-memory backend, a frozen clock and the manual client."""
    return UserCreditsContainer(
        dao_factory=providers.Object(InMemoryDaoFactory()),
        payment_client=providers.Object(ManualPaymentClient()),
        clock=providers.Object(clock),
    )


@pytest.fixture
def service(container: Any) -> PaymentService:
    result: PaymentService = container.service()
    return result


@pytest.fixture
def invoke(container: Any) -> Invoke:
    """Run the real ``usercredits`` entry point on the fixture's container."""

    def run(args: Sequence[str], **kwargs: Any) -> Result:
        return CliRunner().invoke(main, list(args), obj=container, **kwargs)

    return run


def free_monthly_pack(service: PaymentService, tokens: int = 100, group: str = "credits") -> Offer:
    """A free monthly offer of ``tokens`` tokens, stored through the service's backend."""
    offers = service.get_dao_factory().get_offer_dao()
    return offers.create(
        Offer(
            key=f"free-{group}",
            name=f"Free {group}",
            kind="tokens",
            offer_group=group,
            cycle="monthly",
            price=0,
            token_count=tokens,
        )
    )
