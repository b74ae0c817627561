"""UserCreditsContainer (SPEC §7): in-memory and manual defaults, providers overridable."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

from usercredits import (
    Cycle,
    FrozenClock,
    InMemoryDaoFactory,
    ManualPaymentClient,
    Offer,
    OfferKind,
    PaymentService,
    Status,
)
from usercredits.containers import ThreadSafeResource, UserCreditsContainer
from usercredits.testing.fakes import FakePaymentClient


def test_an_empty_container_has_all_its_dependencies() -> None:
    UserCreditsContainer().check_dependencies()


def test_an_empty_container_serves_in_memory_storage_and_manual_payments() -> None:
    container = UserCreditsContainer()
    service = container.service()
    assert isinstance(service, PaymentService)
    assert isinstance(service.get_dao_factory(), InMemoryDaoFactory)
    assert isinstance(container.payment_client(), ManualPaymentClient)


def test_the_service_is_a_singleton_on_one_backend() -> None:
    container = UserCreditsContainer()
    assert container.service() is container.service()
    assert container.service().get_dao_factory() is container.dao_factory()


def test_an_empty_container_works_end_to_end() -> None:
    container = UserCreditsContainer()
    service = container.service()
    offer = (
        container.dao_factory()
        .get_offer_dao()
        .create(
            Offer(
                name="pack",
                kind=OfferKind.TOKENS,
                offer_group="pack",
                cycle=Cycle.ONCE,
                price=Decimal(3),
                token_count=10,
            )
        )
    )
    order = service.create_order(offer.id, "alice")
    container.payment_client().approve(order.id)
    service.after_execute(order.id)
    assert service.remaining_tokens("alice", "pack") == 10


def test_the_default_currency_comes_from_the_configuration() -> None:
    container = UserCreditsContainer()
    container.config.default_currency.from_value("EUR")
    offer = (
        container.dao_factory()
        .get_offer_dao()
        .create(Offer(name="p", kind="tokens", offer_group="p", cycle="once", price=Decimal(1)))
    )
    assert container.service().create_order(offer.id, "alice").currency == "eur"


def test_an_overridden_payment_client_is_used_and_checked() -> None:
    container = UserCreditsContainer()
    gateway = FakePaymentClient(default_outcome=Status.PAID)
    with container.payment_client.override(gateway):
        container.check_dependencies()
        service = container.service()
        offer = (
            service.get_dao_factory()
            .get_offer_dao()
            .create(Offer(name="p", kind="tokens", offer_group="p", cycle="once", price=Decimal(1)))
        )
        order = service.create_order(offer.id, "alice")
        service.after_execute(order.id)
    assert len(gateway.calls_to("create_payment_intent")) == 1
    assert len(gateway.calls_to("after_payment_executed")) == 1
    assert container.payment_client() is not gateway


def test_an_overridden_backend_and_clock_are_used() -> None:
    container = UserCreditsContainer()
    backend = InMemoryDaoFactory()
    clock = FrozenClock(datetime(2030, 1, 1, tzinfo=UTC))
    with container.dao_factory.override(backend), container.clock.override(clock):
        service = container.service()
        assert service.get_dao_factory() is backend
        assert service.now() == datetime(2030, 1, 1, tzinfo=UTC)
        service.tokens_consumed("alice", "api", 2)
    assert backend.get_user_credits_dao().find_record_id("alice") is not None


def test_threads_asking_a_fresh_container_at_once_get_one_service_and_one_backend() -> None:
    container = UserCreditsContainer()
    start = threading.Barrier(8)
    services: list[PaymentService] = []

    def ask() -> None:
        start.wait(timeout=10)
        services.append(container.service())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(services) == 8
    assert len({id(s) for s in services}) == 1
    assert len({id(s.get_dao_factory()) for s in services}) == 1


def test_a_thread_safe_resource_is_opened_once_by_threads_asking_at_once() -> None:
    opened: list[object] = []

    def open_slowly() -> Iterator[object]:
        time.sleep(0.05)
        opened.append(object())
        yield opened[-1]

    resource: ThreadSafeResource[object] = ThreadSafeResource(open_slowly)
    start = threading.Barrier(6)
    got: list[object] = []

    def ask() -> None:
        start.wait(timeout=10)
        got.append(resource())

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(opened) == 1
    assert {id(g) for g in got} == {id(opened[0])}
