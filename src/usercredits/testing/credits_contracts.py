"""Service-level contracts of the credits API (SPEC §10): selling rules, grants, holds, history.

Subscribe a backend like the other service contracts::

    class TestMyGrants(GrantContract):
        def make_dao_factory(self) -> DaoFactory:
            return MyDaoFactory(...)
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from usercredits.clock import FrozenClock
from usercredits.errors import (
    AlreadySubscribedError,
    EntityNotFoundError,
    HoldExpiredError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidInputError,
    OfferNotAvailableError,
)
from usercredits.manual import ManualPaymentClient
from usercredits.models import (
    Cycle,
    GrantSource,
    GrantStatus,
    HoldStatus,
    LedgerReason,
    Status,
)
from usercredits.service import PaymentService
from usercredits.testing.service_contracts import (
    START,
    THREADS,
    USER,
    ServiceContract,
    add_offer,
    at,
    buy,
    failures,
    ledger,
    lines,
    race,
    registrations,
)

__all__ = ["GrantContract", "HistoryContract", "HoldContract", "SellingRuleContract"]


# -- selling rules -----------------------------------------------------------------------------


class SellingRuleContract(ServiceContract):
    """SPEC §10: offers a user may not buy are refused, with nothing stored."""

    def test_an_offer_unlocked_by_a_group_the_user_lacks_is_not_for_sale(
        self, service: PaymentService
    ) -> None:
        vip = add_offer(service, "vip", unlocked_by=["business"])
        with pytest.raises(OfferNotAvailableError, match="business"):
            service.create_order(vip.id, USER)
        orders = service.get_dao_factory().get_order_dao()
        assert (orders.count({}), registrations(service, USER)) == (0, 0)

    def test_a_live_purchase_in_the_unlocking_group_puts_the_offer_on_sale(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        buy(service, manual, add_offer(service, "business"))
        vip = add_offer(service, "vip", unlocked_by=["business"])
        assert service.create_order(vip.id, USER).status is Status.PENDING

    def test_a_free_offer_held_live_cannot_be_ordered_again(self, service: PaymentService) -> None:
        free = add_offer(service, "free", price="0", tokens=500)
        service.create_order(free.id, USER)
        with pytest.raises(AlreadySubscribedError):
            service.create_order(free.id, USER)
        assert service.get_dao_factory().get_order_dao().count({"user_id": USER}) == 1
        assert service.remaining_tokens(USER, "free") == 500

    def test_a_free_offer_may_be_ordered_again_once_its_window_ended(
        self, service: PaymentService, clock: FrozenClock
    ) -> None:
        free = add_offer(service, "free", price="0", tokens=500)
        first = service.create_order(free.id, USER)
        clock.set(at(2025, 2, 20))
        again = service.create_order(free.id, USER)
        orders = service.get_dao_factory().get_order_dao()
        assert orders.find_by_id(first.id).status is Status.EXPIRED  # type: ignore[union-attr]
        assert again.status is Status.PAID
        assert service.remaining_tokens(USER, "free") == 500

    def test_a_priced_offer_may_be_ordered_again(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        pack = add_offer(service, "pack")
        buy(service, manual, pack)
        buy(service, manual, pack)
        assert service.remaining_tokens(USER, "pack") == 200

    def test_racing_orders_of_a_free_offer_grant_it_once(self, service: PaymentService) -> None:
        free = add_offer(service, "free", price="0", tokens=500)
        results = race([lambda: service.create_order(free.id, USER)] * THREADS)
        refused = failures(results)
        assert len(refused) == THREADS - 1
        assert all(isinstance(e, AlreadySubscribedError) for e in refused)
        assert service.remaining_tokens(USER, "free") == 500


# -- grants ------------------------------------------------------------------------------------


class GrantContract(ServiceContract):
    """SPEC §10: grants without orders, burn order by priority, voids, per-grant warnings."""

    def test_a_direct_grant_credits_the_group(
        self, service: PaymentService, clock: FrozenClock
    ) -> None:
        expires = at(2025, 3, 1)
        grant = service.grant_tokens(USER, "ai", 200, expires=expires, priority=10, note="promo")
        assert (grant.tokens, grant.remaining, grant.priority) == (200, 200, 10)
        assert (grant.source, grant.status, grant.expires) == (
            GrantSource.PROMOTIONAL,
            GrantStatus.LIVE,
            expires,
        )
        assert grant.order_id is None
        [line] = ledger(service, USER, "ai")
        assert (line.reason, line.tokens, line.note) == (LedgerReason.GRANT, 200, "promo")
        assert service.remaining_tokens(USER, "ai") == 200

    def test_an_adjustment_grant_is_recorded_as_an_adjustment(
        self, service: PaymentService
    ) -> None:
        grant = service.grant_tokens(USER, "ai", 5, source=GrantSource.ADJUSTMENT)
        assert grant.source is GrantSource.ADJUSTMENT
        assert [line.reason for line in ledger(service, USER, "ai")] == [LedgerReason.ADJUSTMENT]

    def test_a_grant_repays_debt_first(self, service: PaymentService) -> None:
        service.tokens_consumed(USER, "ai", 30)
        grant = service.grant_tokens(USER, "ai", 100)
        assert (grant.tokens, grant.remaining) == (100, 70)
        assert service.remaining_tokens(USER, "ai") == 70

    def test_a_retry_with_the_same_key_returns_the_same_grant(
        self, service: PaymentService
    ) -> None:
        first = service.grant_tokens(USER, "ai", 100, idempotency_key="welcome")
        again = service.grant_tokens(USER, "ai", 100, idempotency_key="welcome")
        assert again.id == first.id
        assert len(ledger(service, USER, "ai")) == 1
        assert service.remaining_tokens(USER, "ai") == 100

    def test_a_key_used_for_another_grant_or_a_consumption_is_a_conflict(
        self, service: PaymentService
    ) -> None:
        service.grant_tokens(USER, "ai", 100, idempotency_key="welcome")
        with pytest.raises(IdempotencyConflictError):
            service.grant_tokens(USER, "ai", 50, idempotency_key="welcome")
        with pytest.raises(IdempotencyConflictError):
            service.tokens_consumed(USER, "ai", 100, idempotency_key="welcome")
        assert service.remaining_tokens(USER, "ai") == 100

    @pytest.mark.parametrize(
        "bad",
        [
            {"count": 0},
            {"count": True},
            {"expires": START - timedelta(days=1)},
            {"expires": datetime(2030, 1, 1)},  # noqa: DTZ001 - naive on purpose
            {"source": "gift"},
            {"priority": 1.5},
            {"idempotency_key": ""},
        ],
    )
    def test_bad_grants_are_refused_and_store_nothing(
        self, service: PaymentService, bad: dict[str, object]
    ) -> None:
        arguments: dict[str, object] = {"count": 10, **bad}
        count = arguments.pop("count")
        with pytest.raises(InvalidInputError):
            service.grant_tokens(USER, "ai", count, **arguments)  # type: ignore[arg-type]
        assert ledger(service, USER, "ai") == []

    def test_the_lowest_priority_is_drawn_first_whatever_the_expiry(
        self, service: PaymentService
    ) -> None:
        soon = service.grant_tokens(USER, "ai", 50, expires=at(2025, 2, 1), priority=50)
        first = service.grant_tokens(USER, "ai", 50, priority=10)
        service.tokens_consumed(USER, "ai", 30)
        remaining = {g.id: g.remaining for g in service.grants(USER, "ai")}
        assert remaining == {first.id: 20, soon.id: 50}

    def test_equal_priorities_burn_the_soonest_expiry_then_the_oldest(
        self, service: PaymentService
    ) -> None:
        never = service.grant_tokens(USER, "ai", 10)
        late = service.grant_tokens(USER, "ai", 10, expires=at(2025, 6, 1))
        soon = service.grant_tokens(USER, "ai", 10, expires=at(2025, 3, 1))
        soon_too = service.grant_tokens(USER, "ai", 10, expires=at(2025, 3, 1))
        assert [g.id for g in service.grants(USER, "ai")] == [
            soon.id,
            soon_too.id,
            late.id,
            never.id,
        ]

    def test_an_offer_priority_is_the_priority_of_its_orders_grants(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack", priority=5))
        [grant] = service.grants(USER, "pack")
        assert (grant.id, grant.order_id, grant.priority, grant.source) == (
            str(order.id),
            str(order.id),
            5,
            GrantSource.PURCHASE,
        )

    def test_grants_are_listed_per_group(self, service: PaymentService) -> None:
        service.grant_tokens(USER, "ai", 10)
        service.grant_tokens(USER, "support", 20)
        assert [g.offer_group for g in service.grants(USER)] == ["ai", "support"]
        assert [g.tokens for g in service.grants(USER, "support")] == [20]
        assert service.grants("nobody") == []

    def test_a_void_removes_what_the_grant_still_holds(self, service: PaymentService) -> None:
        grant = service.grant_tokens(USER, "ai", 100)
        service.tokens_consumed(USER, "ai", 40)
        voided = service.void_grant(grant.id)
        assert (voided.status, voided.remaining) == (GrantStatus.VOIDED, 0)
        assert [line.tokens for line in lines(service, USER, "ai", LedgerReason.VOID)] == [-60]
        assert service.remaining_tokens(USER, "ai") == 0
        assert service.grants(USER, "ai") == []

    def test_a_second_void_changes_nothing(self, service: PaymentService) -> None:
        grant = service.grant_tokens(USER, "ai", 100)
        service.void_grant(grant.id)
        again = service.void_grant(grant.id)
        assert again.status is GrantStatus.VOIDED
        assert len(lines(service, USER, "ai", LedgerReason.VOID)) == 1

    def test_an_orders_purchase_grant_is_voided_by_the_orders_id(
        self, service: PaymentService, manual: ManualPaymentClient
    ) -> None:
        order = buy(service, manual, add_offer(service, "pack"))
        assert service.void_grant(order.id).status is GrantStatus.VOIDED
        assert service.remaining_tokens(USER, "pack") == 0

    def test_voiding_an_unknown_grant_is_not_found(self, service: PaymentService) -> None:
        with pytest.raises(EntityNotFoundError):
            service.void_grant("no-such-grant")

    def test_ended_grants_are_listed_with_their_status_on_demand(
        self, service: PaymentService, clock: FrozenClock
    ) -> None:
        voided = service.grant_tokens(USER, "ai", 10)
        service.void_grant(voided.id)
        expiring = service.grant_tokens(USER, "ai", 20, expires=at(2025, 2, 1))
        live = service.grant_tokens(USER, "ai", 30)
        clock.set(at(2025, 2, 2))
        service.check_for_expired_orders(USER)
        everything = {g.id: g.status for g in service.grants(USER, include_ended=True)}
        assert everything == {
            voided.id: GrantStatus.VOIDED,
            expiring.id: GrantStatus.EXPIRED,
            live.id: GrantStatus.LIVE,
        }

    def test_a_direct_grant_expires_with_the_expiry_routine(
        self, service: PaymentService, clock: FrozenClock
    ) -> None:
        service.grant_tokens(USER, "ai", 100, expires=at(2025, 2, 1))
        service.tokens_consumed(USER, "ai", 25)
        clock.set(at(2025, 2, 1))
        report = service.check_for_expired_orders(USER)
        assert report.removed_tokens == {"ai": 75}
        assert service.remaining_tokens(USER, "ai") == 0

    def test_each_grant_expiring_soon_is_warned_with_its_remaining_tokens(
        self, service: PaymentService, manual: ManualPaymentClient, clock: FrozenClock
    ) -> None:
        buy(service, manual, add_offer(service, "monthly", group="ai", tokens=1000))
        buy(service, manual, add_offer(service, "pack", group="ai", tokens=2000, cycle=Cycle.ONCE))
        [monthly, _] = service.grants(USER, "ai")
        service.tokens_consumed(USER, "ai", 300)
        clock.set(at(2025, 2, 10))
        report = service.check_for_expired_orders(USER, warn_before=timedelta(days=7))
        [warning] = [w for w in report.warnings if w.reason == "tokens_expiring"]
        assert (warning.grant_id, warning.tokens, warning.expires) == (
            monthly.id,
            700,
            at(2025, 2, 15),
        )
        assert [w.reason for w in report.warnings] == ["tokens_expiring"]


# -- holds -------------------------------------------------------------------------------------


class HoldContract(ServiceContract):
    """SPEC §10: reserve before a long job, capture the real usage, release the rest."""

    @pytest.fixture
    def funded(self, service: PaymentService) -> None:
        service.grant_tokens(USER, "ai", 100)

    def test_a_hold_lowers_the_available_tokens_not_the_balance(
        self, service: PaymentService, funded: None
    ) -> None:
        hold = service.reserve(USER, "ai", 60)
        assert (hold.tokens, hold.status, hold.offer_group) == (60, HoldStatus.ACTIVE, "ai")
        assert hold.expires_at == START + timedelta(minutes=10)
        assert (service.remaining_tokens(USER, "ai"), service.available_tokens(USER, "ai")) == (
            100,
            40,
        )

    def test_safe_consumption_cannot_take_held_tokens(
        self, service: PaymentService, funded: None
    ) -> None:
        service.reserve(USER, "ai", 60)
        with pytest.raises(InsufficientCreditsError):
            service.consume_tokens(USER, "ai", 41)
        service.consume_tokens(USER, "ai", 40)
        assert service.available_tokens(USER, "ai") == 0

    def test_post_paid_consumption_ignores_holds(
        self, service: PaymentService, funded: None
    ) -> None:
        service.reserve(USER, "ai", 60)
        service.tokens_consumed(USER, "ai", 90)
        assert (service.remaining_tokens(USER, "ai"), service.available_tokens(USER, "ai")) == (
            10,
            -50,
        )

    def test_reserving_more_than_available_is_refused_and_holds_nothing(
        self, service: PaymentService, funded: None
    ) -> None:
        service.reserve(USER, "ai", 60)
        with pytest.raises(InsufficientCreditsError):
            service.reserve(USER, "ai", 41)
        assert service.available_tokens(USER, "ai") == 40
        assert len(lines(service, USER, "ai", LedgerReason.HOLD)) == 1

    def test_a_capture_consumes_the_held_amount_by_default(
        self, service: PaymentService, funded: None
    ) -> None:
        hold = service.reserve(USER, "ai", 60)
        line = service.capture(hold.id)
        assert (line.tokens, line.reason) == (-60, LedgerReason.CONSUMPTION)
        assert (service.remaining_tokens(USER, "ai"), service.available_tokens(USER, "ai")) == (
            40,
            40,
        )

    def test_a_capture_for_less_frees_the_rest(self, service: PaymentService, funded: None) -> None:
        hold = service.reserve(USER, "ai", 60)
        service.capture(hold.id, 25)
        assert (service.remaining_tokens(USER, "ai"), service.available_tokens(USER, "ai")) == (
            75,
            75,
        )

    def test_a_capture_beyond_the_hold_takes_available_tokens_only(
        self, service: PaymentService, funded: None
    ) -> None:
        other = service.reserve(USER, "ai", 30)
        hold = service.reserve(USER, "ai", 50)
        with pytest.raises(InsufficientCreditsError):
            service.capture(hold.id, 71)
        assert service.capture(hold.id, 70).tokens == -70
        assert service.available_tokens(USER, "ai") == 0
        assert service.capture(other.id).tokens == -30

    def test_a_capture_takes_effect_once(self, service: PaymentService, funded: None) -> None:
        hold = service.reserve(USER, "ai", 60)
        first = service.capture(hold.id, 20)
        again = service.capture(hold.id, 20)
        assert again.id == first.id
        assert service.remaining_tokens(USER, "ai") == 80

    def test_a_release_frees_the_tokens_and_is_idempotent(
        self, service: PaymentService, funded: None
    ) -> None:
        hold = service.reserve(USER, "ai", 60)
        assert service.release(hold.id).status is HoldStatus.RELEASED
        assert service.release(hold.id).status is HoldStatus.RELEASED
        assert service.available_tokens(USER, "ai") == 100
        assert len(lines(service, USER, "ai", LedgerReason.RELEASE)) == 1
        with pytest.raises(HoldExpiredError):
            service.capture(hold.id)

    def test_a_hold_past_its_end_frees_its_tokens_by_itself(
        self, service: PaymentService, clock: FrozenClock, funded: None
    ) -> None:
        hold = service.reserve(USER, "ai", 60, ttl=timedelta(minutes=5))
        clock.advance(minutes=5)
        assert service.available_tokens(USER, "ai") == 100
        with pytest.raises(HoldExpiredError):
            service.capture(hold.id)
        assert service.release(hold.id).status is HoldStatus.EXPIRED
        assert service.remaining_tokens(USER, "ai") == 100

    def test_a_reserve_retried_with_its_key_returns_the_same_hold(
        self, service: PaymentService, funded: None
    ) -> None:
        first = service.reserve(USER, "ai", 60, idempotency_key="job-1")
        again = service.reserve(USER, "ai", 60, idempotency_key="job-1")
        assert again.id == first.id
        assert service.available_tokens(USER, "ai") == 40
        with pytest.raises(IdempotencyConflictError):
            service.reserve(USER, "ai", 10, idempotency_key="job-1")

    def test_bad_holds_are_refused(self, service: PaymentService, funded: None) -> None:
        with pytest.raises(InvalidInputError):
            service.reserve(USER, "ai", 0)
        with pytest.raises(InvalidInputError):
            service.reserve(USER, "ai", 10, ttl=timedelta(0))
        with pytest.raises(EntityNotFoundError):
            service.capture("no-such-hold")
        assert lines(service, USER, "ai", LedgerReason.HOLD) == []

    def test_racing_holds_and_consumptions_never_take_held_tokens(
        self, service: PaymentService, funded: None
    ) -> None:
        def hold_and_capture() -> object:
            return service.capture(service.reserve(USER, "ai", 15).id)

        def consume() -> object:
            return service.consume_tokens(USER, "ai", 15)

        results = race([hold_and_capture, consume] * THREADS)
        done = len(results) - len(failures(results))
        assert all(isinstance(e, InsufficientCreditsError) for e in failures(results))
        assert done == 100 // 15
        assert service.remaining_tokens(USER, "ai") == 100 - 15 * done
        assert service.available_tokens(USER, "ai") >= 0


# -- history -----------------------------------------------------------------------------------


class HistoryContract(ServiceContract):
    """SPEC §10: a user's ledger lines, newest first, page by page."""

    def test_history_is_newest_first(self, service: PaymentService) -> None:
        service.grant_tokens(USER, "ai", 100)
        for count in (1, 2, 3):
            service.tokens_consumed(USER, "ai", count)
        assert [line.tokens for line in service.history(USER)] == [-3, -2, -1, 100]

    def test_history_pages_with_a_cursor(self, service: PaymentService) -> None:
        for count in range(1, 8):
            service.tokens_consumed(USER, "ai", count)
        pages = []
        before = None
        while True:
            page = service.history(USER, limit=3, before=before)
            if not page:
                break
            pages.append([-line.tokens for line in page])
            before = page[-1].id
        assert pages == [[7, 6, 5], [4, 3, 2], [1]]

    def test_history_of_one_group(self, service: PaymentService) -> None:
        service.tokens_consumed(USER, "ai", 1)
        service.tokens_consumed(USER, "support", 2)
        assert [line.offer_group for line in service.history(USER, "support")] == ["support"]
        assert service.history("nobody") == []

    @pytest.mark.parametrize("limit", [0, -1, 1001, 2.5, True])
    def test_a_bad_limit_is_refused(self, service: PaymentService, limit: object) -> None:
        with pytest.raises(InvalidInputError):
            service.history(USER, limit=limit)  # type: ignore[arg-type]
