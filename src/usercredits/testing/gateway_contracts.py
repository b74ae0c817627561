"""Service-level contracts of gateway events (SPEC §12): partial refunds, disputes, failed
refunds, and the events stored once by id. Subscribe a backend like the other contracts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from usercredits.clock import FrozenClock
from usercredits.errors import EntityNotFoundError, InvalidInputError, PaymentError
from usercredits.manual import ManualPaymentClient
from usercredits.models import CombinedOffer, LedgerReason, Order, Status
from usercredits.payment import WebhookEventKind
from usercredits.service import PaymentService
from usercredits.testing.fakes import FakePaymentClient
from usercredits.testing.service_contracts import (
    USER,
    ServiceContract,
    add_offer,
    at,
    buy,
    lines,
    reload,
)

__all__ = ["DisputeContract", "PartialRefundContract", "WebhookStoreContract"]


def refunded_tokens(service: PaymentService, group: str) -> list[int]:
    """The tokens each refund line of the group took back, in order."""
    return [-line.tokens for line in lines(service, USER, group, LedgerReason.REFUND)]


class PartialRefundContract(ServiceContract):
    """SPEC §12: a refund of part of the total takes back that share of the tokens."""

    def test_a_partial_refund_marks_the_order_partial_and_takes_its_share(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", price="10", tokens=100))
        refunded = service.refund(order.id, Decimal("4"))
        assert (refunded.status, refunded.refunded_amount) == (Status.PARTIAL, Decimal("4"))
        assert refunded.history[-1].status is Status.PARTIAL
        assert refunded_tokens(service, "pack") == [40]
        assert service.remaining_tokens(USER, "pack") == 60

    def test_partial_refunds_add_up_and_round_down(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", price="3", tokens=100))
        service.refund(order.id, Decimal("1"))
        service.refund(order.id, Decimal("1"))
        assert refunded_tokens(service, "pack") == [33, 33]
        assert reload(service, order).refunded_amount == Decimal("2")

    def test_a_full_refund_after_a_partial_one_takes_the_rest(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", price="10", tokens=100))
        service.refund(order.id, Decimal("2.50"))
        service.tokens_consumed(USER, "pack", 10)
        done = service.refund(order.id)
        assert (done.status, done.refunded_amount) == (Status.REFUNDED, Decimal("10"))
        assert refunded_tokens(service, "pack") == [25, 65]
        assert service.remaining_tokens(USER, "pack") == 0

    def test_a_share_is_never_more_than_the_grant_still_holds(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", price="10", tokens=100))
        service.tokens_consumed(USER, "pack", 80)
        service.refund(order.id, Decimal("5"))
        assert refunded_tokens(service, "pack") == [20]
        assert service.remaining_tokens(USER, "pack") == 0

    def test_a_partial_refund_of_a_bundle_takes_each_items_share(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        item = add_offer(service, "ai", tokens=50)
        suite = add_offer(
            service,
            "suite",
            price="20",
            tokens=10,
            combined_items=[CombinedOffer(offer_id=item.id, offer_group="ai", quantity=2)],
        )
        order = buy(service, manual, suite)
        service.refund(order.id, Decimal("5"))
        assert (refunded_tokens(service, "suite"), refunded_tokens(service, "ai")) == ([2], [25])

    @pytest.mark.parametrize("amount", ["10.01", "0", "-1", 2.5, "abc"])
    def test_a_refund_of_more_than_is_left_or_not_an_amount_is_refused(
        self, service: PaymentService, manual: ManualPaymentClient, amount: object
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", price="10", tokens=100))
        service.refund(order.id, Decimal("4"))
        if amount == "10.01":
            amount = Decimal("6.01")
        elif isinstance(amount, str) and amount != "abc":
            amount = Decimal(amount)
        before = reload(service, order)
        with pytest.raises(InvalidInputError):
            service.refund(order.id, amount)  # type: ignore[arg-type]
        assert reload(service, order) == before
        assert service.remaining_tokens(USER, "pack") == 60

    def test_a_partially_refunded_order_still_expires_and_unlocks(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        add_offer(service, "vip", unlocked_by=["pack"])
        order = buy(service, manual, add_offer(service, "pack", price="10", tokens=100))
        service.refund(order.id, Decimal("5"))
        assert "vip" in [o.name for o in service.load_offers(USER)]
        clock.set(at(2025, 2, 20))
        report = service.check_for_expired_orders(USER)
        assert report.removed_tokens == {"pack": 50}
        assert reload(service, order).status is Status.EXPIRED

    def test_partial_refund_events_carry_the_total_refunded_so_far(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = self._paid(gateway_service, gateway)
        first = gateway.event(WebhookEventKind.REFUNDED, order.id, amount=Decimal("3"))
        second = gateway.event(WebhookEventKind.REFUNDED, order.id, amount=Decimal("7"))
        assert gateway_service.handle_webhook(*second).order.status is Status.PARTIAL  # type: ignore[union-attr]
        late = gateway_service.handle_webhook(*first)
        assert late.duplicate
        assert refunded_tokens(gateway_service, "pack") == [70]
        full = gateway.event(WebhookEventKind.REFUNDED, order.id, amount=Decimal("10"))
        assert gateway_service.handle_webhook(*full).order.status is Status.REFUNDED  # type: ignore[union-attr]
        assert gateway_service.remaining_tokens(USER, "pack") == 0

    def _paid(self, service: PaymentService, gateway: FakePaymentClient) -> Order:
        offer = add_offer(service, "pack", price="10", tokens=100)
        order = service.create_order(offer.id, USER)
        gateway.set_outcome(order.id, Status.PAID)
        service.after_execute(order.id)
        return reload(service, order)


class DisputeContract(ServiceContract):
    """SPEC §12: disputes and failed refunds, each recorded; a lost dispute refunds."""

    def _paid(self, service: PaymentService, gateway: FakePaymentClient) -> Order:
        offer = add_offer(service, "pack", price="10", tokens=100)
        order = service.create_order(offer.id, USER)
        gateway.set_outcome(order.id, Status.PAID)
        service.after_execute(order.id)
        service.tokens_consumed(USER, "pack", 30)
        return reload(service, order)

    def test_an_opened_dispute_is_recorded_once_and_takes_nothing(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = self._paid(gateway_service, gateway)
        event = gateway.event(WebhookEventKind.DISPUTE_OPENED, order.id, amount=Decimal("10"))
        gateway_service.handle_webhook(*event)
        gateway_service.replay_webhook(gateway.parse_event(event[0]).id)
        stored = reload(gateway_service, order)
        assert stored.status is Status.PAID
        assert [e.message.split(" (")[0] for e in stored.history].count(
            "Dispute opened for 10 usd"
        ) == 1
        assert gateway_service.remaining_tokens(USER, "pack") == 70

    def test_a_lost_dispute_refunds_the_order_and_takes_its_tokens_once(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = self._paid(gateway_service, gateway)
        event = gateway.event(WebhookEventKind.DISPUTE_LOST, order.id)
        result = gateway_service.handle_webhook(*event)
        assert result.order is not None
        assert result.order.status is Status.REFUNDED
        again = gateway.event(WebhookEventKind.DISPUTE_LOST, order.id)
        assert gateway_service.handle_webhook(*again).duplicate
        assert refunded_tokens(gateway_service, "pack") == [70]
        assert gateway_service.remaining_tokens(USER, "pack") == 0

    def test_a_won_dispute_and_a_failed_refund_are_recorded(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = self._paid(gateway_service, gateway)
        gateway_service.handle_webhook(*gateway.event(WebhookEventKind.DISPUTE_WON, order.id))
        gateway_service.handle_webhook(*gateway.event(WebhookEventKind.REFUND_FAILED, order.id))
        messages = [e.message for e in reload(gateway_service, order).history]
        assert any(m.startswith("Dispute won") for m in messages)
        assert any(m.startswith("Refund failed") for m in messages)
        assert gateway_service.remaining_tokens(USER, "pack") == 70


class WebhookStoreContract(ServiceContract):
    """SPEC §12: every verified event stored once by its id; duplicates recognised; replays."""

    def _pending(self, service: PaymentService) -> Order:
        return service.create_order(add_offer(service, "pack", price="10").id, USER)

    def test_a_verified_event_is_stored_with_what_was_done(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, clock: FrozenClock
    ) -> None:
        order = self._pending(gateway_service)
        payload, signature = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, order.id)
        result = gateway_service.handle_webhook(payload, signature)
        [record] = gateway_service.webhook_events()
        assert (record.id, record.type, record.handled) == (
            result.event_id,
            "payment_succeeded",
            True,
        )
        assert (record.received_at, record.payload) == (clock(), payload.decode())
        assert str(record.order_id) == str(order.id)

    def test_a_duplicate_delivery_is_recognised_by_its_id_whatever_came_between(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = self._pending(gateway_service)
        success = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, order.id)
        gateway_service.handle_webhook(*success)
        gateway_service.handle_webhook(*gateway.event(WebhookEventKind.REFUNDED, order.id))
        again = gateway_service.handle_webhook(*success)
        assert (again.duplicate, again.handled) == (True, False)
        assert reload(gateway_service, order).status is Status.REFUNDED
        assert len(gateway_service.webhook_events()) == 2

    def test_an_event_of_an_unknown_type_is_stored_and_ignored(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        event = gateway.event(WebhookEventKind.OTHER, event_type="customer.created")
        result = gateway_service.handle_webhook(*event)
        [record] = gateway_service.webhook_events()
        assert (record.type, record.handled, result.handled) == ("customer.created", True, False)

    def test_a_bad_signature_stores_nothing(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = self._pending(gateway_service)
        payload, _ = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, order.id)
        with pytest.raises(PaymentError):
            gateway_service.handle_webhook(payload, "bad")
        assert gateway_service.webhook_events() == []

    def test_a_replayed_event_is_applied_once(
        self, gateway_service: PaymentService, gateway: FakePaymentClient
    ) -> None:
        order = self._pending(gateway_service)
        result = gateway_service.handle_webhook(
            *gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, order.id)
        )
        replayed = gateway_service.replay_webhook(result.event_id)
        assert replayed.duplicate
        assert lines(gateway_service, USER, "pack", LedgerReason.PURCHASE)[0].tokens == 100
        assert len(lines(gateway_service, USER, "pack", LedgerReason.PURCHASE)) == 1

    def test_replaying_an_unknown_event_is_not_found(self, gateway_service: PaymentService) -> None:
        with pytest.raises(EntityNotFoundError):
            gateway_service.replay_webhook("evt_none")

    def test_events_are_listed_the_last_received_first(
        self, gateway_service: PaymentService, gateway: FakePaymentClient, clock: FrozenClock
    ) -> None:
        ids = []
        for _ in range(3):
            ids.append(
                gateway_service.handle_webhook(
                    *gateway.event(WebhookEventKind.OTHER, event_type="ping")
                ).event_id
            )
            clock.advance(seconds=1)
        page = gateway_service.webhook_events(limit=2)
        assert [r.id for r in page] == ids[::-1][:2]
        assert [r.id for r in gateway_service.webhook_events(before=page[-1].id)] == ids[:1]
