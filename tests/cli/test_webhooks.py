"""``usercredits webhooks list`` and ``usercredits webhooks replay``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from click.testing import CliRunner, Result
from dependency_injector import providers

from usercredits import (
    FrozenClock,
    InMemoryDaoFactory,
    Offer,
    PaymentService,
    Status,
    WebhookEventKind,
)
from usercredits.cli import main
from usercredits.containers import UserCreditsContainer
from usercredits.testing.fakes import FakePaymentClient

from .conftest import START, Invoke


@pytest.fixture
def gateway() -> FakePaymentClient:
    return FakePaymentClient()


@pytest.fixture
def gateway_container(gateway: FakePaymentClient) -> Any:
    return UserCreditsContainer(
        dao_factory=providers.Object(InMemoryDaoFactory()),
        payment_client=providers.Object(gateway),
        clock=providers.Object(FrozenClock(START)),
    )


@pytest.fixture
def run(gateway_container: Any) -> Invoke:
    def invoke(args: Sequence[str], **kwargs: Any) -> Result:
        return CliRunner().invoke(main, list(args), obj=gateway_container, **kwargs)

    return invoke


@pytest.fixture
def received(gateway_container: Any, gateway: FakePaymentClient) -> list[str]:
    """Two events received: a success settling an order, then an unknown type."""
    service: PaymentService = gateway_container.service()

    offer = (
        service.get_dao_factory()
        .get_offer_dao()
        .create(
            Offer(
                name="Pack", kind="tokens", offer_group="ai", cycle="once", price=5, token_count=40
            )
        )
    )
    order = service.create_order(offer.id, "ann")
    first = service.handle_webhook(*gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, order.id))
    second = service.handle_webhook(*gateway.event(WebhookEventKind.OTHER, event_type="ping"))
    return [first.event_id, second.event_id]


def test_list_shows_the_events_the_last_received_first(run: Invoke, received: list[str]) -> None:
    result = run(["webhooks", "list", "--json"])
    assert result.exit_code == 0, result.output
    events = json.loads(result.stdout)["events"]
    assert [e["id"] for e in events] == received[::-1]
    assert [e["handled"] for e in events] == [True, True]
    assert events[1]["type"] == "payment_succeeded"


def test_list_pages_with_before(run: Invoke, received: list[str]) -> None:
    result = run(["webhooks", "list", "--limit", "1", "--json"])
    document = json.loads(result.stdout)
    assert document["next_before"] == received[1]
    older = json.loads(run(["webhooks", "list", "--before", received[1], "--json"]).stdout)
    assert [e["id"] for e in older["events"]] == [received[0]]


def test_list_prints_a_table(run: Invoke, received: list[str]) -> None:
    result = run(["webhooks", "list"])
    assert result.exit_code == 0
    assert received[0] in result.stdout
    assert "payment_succeeded" in result.stdout


def test_replaying_an_applied_event_changes_nothing(
    run: Invoke, received: list[str], gateway_container: Any
) -> None:
    result = run(["webhooks", "replay", received[0]])
    assert result.exit_code == 0, result.output
    assert "applied already" in result.stdout
    service: PaymentService = gateway_container.service()
    assert service.remaining_tokens("ann", "ai") == 40
    [order] = service.get_dao_factory().get_order_dao().find({})
    assert order.status is Status.PAID


def test_replaying_an_unknown_event_exits_1(run: Invoke) -> None:
    result = run(["webhooks", "replay", "evt_none"])
    assert result.exit_code == 1
    assert "evt_none" in result.stderr
