"""Domain models (SPEC §2): keyword construction, defaults, enum values, validation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from usercredits import (
    ActivatedOffer,
    CombinedOffer,
    CombinedOrder,
    Cycle,
    InvalidOfferError,
    LedgerReason,
    Offer,
    OfferKind,
    Order,
    OrderStatus,
    Status,
    Subscription,
    TokenTimetable,
    UserCredits,
)


def offer(**fields: Any) -> Offer:
    base: dict[str, Any] = {
        "name": "pack",
        "kind": OfferKind.TOKENS,
        "offer_group": "pack",
        "cycle": Cycle.MONTHLY,
        "price": Decimal("9.99"),
    }
    return Offer(**{**base, **fields})


# -- enums


def test_cycle_values_are_the_specs() -> None:
    assert [c.value for c in Cycle] == [
        "once",
        "daily",
        "weekly",
        "bi-weekly",
        "monthly",
        "trimester",
        "semester",
        "yearly",
        "custom",
    ]


def test_status_values_are_the_specs() -> None:
    assert [s.value for s in Status] == [
        "pending",
        "paid",
        "refused",
        "error",
        "inconsistent",
        "partial",
        "expired",
        "refunded",
    ]


def test_offer_kind_values_are_the_specs() -> None:
    assert [k.value for k in OfferKind] == ["subscription", "tokens", "expertise"]


def test_enums_compare_and_print_as_their_values() -> None:
    assert Status.PAID == "paid"
    assert str(Status.PAID) == "paid"
    assert str(Cycle.BI_WEEKLY) == "bi-weekly"
    assert f"{OfferKind.TOKENS}" == "tokens"


# -- construction and defaults


@pytest.mark.parametrize(
    "model",
    [Order, OrderStatus, CombinedOrder, Subscription, ActivatedOffer, UserCredits, TokenTimetable],
)
def test_models_other_than_offers_have_defaults_for_every_field(model: type) -> None:
    instance = model()
    assert getattr(instance, "id", None) is None


def test_an_offer_needs_name_kind_group_cycle_and_price() -> None:
    with pytest.raises(TypeError):
        Offer(name="pack", kind=OfferKind.TOKENS, offer_group="pack", cycle=Cycle.ONCE)  # type: ignore[call-arg]


def test_a_bundle_item_needs_an_offer_id_and_a_group() -> None:
    with pytest.raises(TypeError):
        CombinedOffer(offer_id="x")  # type: ignore[call-arg]
    assert CombinedOffer(offer_id="x", offer_group="g").quantity == 1


def test_models_take_keyword_arguments_only() -> None:
    with pytest.raises(TypeError):
        ActivatedOffer("g")  # type: ignore[misc]


def test_offer_defaults() -> None:
    o = offer()
    assert (o.id, o.key, o.custom_cycle, o.currency, o.token_count, o.quantity_limit) == (
        None,
        None,
        None,
        None,
        None,
        None,
    )
    assert (o.append_date, o.has_dependent_offers, o.weight, o.popular) == (False, False, 0, None)
    assert (o.tags, o.unlocked_by, o.combined_items, o.overriding_key) == ([], [], [], None)


def test_list_defaults_are_not_shared_between_instances() -> None:
    first, second = offer(), offer()
    first.tags.append("web")
    assert second.tags == []
    credits = UserCredits()
    credits.offers.append(ActivatedOffer(offer_group="g"))
    assert UserCredits().offers == []


def test_an_order_defaults_to_a_pending_once_order_of_zero() -> None:
    order = Order()
    assert (order.status, order.cycle, order.quantity) == (Status.PENDING, Cycle.ONCE, 1)
    assert (order.total, order.token_count) == (Decimal(0), 0)
    assert (order.history, order.combined_items) == ([], [])


# -- enum fields accept their string values


def test_enum_fields_accept_their_string_values() -> None:
    o = offer(kind="expertise", cycle="bi-weekly")
    assert (o.kind, o.cycle) == (OfferKind.EXPERTISE, Cycle.BI_WEEKLY)
    assert Order(status="paid", cycle="yearly").status is Status.PAID
    assert OrderStatus(status="refused").status is Status.REFUSED
    assert Subscription(status="expired", cycle="daily").cycle is Cycle.DAILY
    assert TokenTimetable(reason="expiry").reason is LedgerReason.EXPIRY
    assert CombinedOffer(offer_id="x", offer_group="g", cycle="weekly").cycle is Cycle.WEEKLY
    assert CombinedOrder(cycle="semester").cycle is Cycle.SEMESTER


def test_an_unknown_cycle_is_refused_with_the_allowed_values() -> None:
    with pytest.raises(InvalidOfferError, match=r"'fortnightly'.*bi-weekly"):
        offer(cycle="fortnightly")


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(InvalidOfferError, match="'coupon'"):
        offer(kind="coupon")


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="'done'"):
        Order(status="done")


# -- offer validation


@pytest.mark.parametrize(
    ("price", "expected"),
    [(Decimal("9.99"), Decimal("9.99")), (5, Decimal(5)), ("0.5", Decimal("0.5"))],
)
def test_a_price_is_kept_exactly_as_a_decimal(price: Any, expected: Decimal) -> None:
    kept = offer(price=price).price
    assert isinstance(kept, Decimal)
    assert kept == expected


@pytest.mark.parametrize(
    "price", [9.99, True, "nine", Decimal("-1"), Decimal("NaN"), Decimal("Infinity"), None]
)
def test_a_price_that_is_not_an_exact_non_negative_amount_is_refused(price: Any) -> None:
    with pytest.raises(InvalidOfferError, match="price"):
        offer(price=price)


def test_a_currency_is_kept_in_lower_case() -> None:
    assert offer(currency="EUR").currency == "eur"


@pytest.mark.parametrize("currency", ["euro", "e1r", "", 978])
def test_a_currency_that_is_not_an_iso_code_is_refused(currency: Any) -> None:
    with pytest.raises(InvalidOfferError, match="currency"):
        offer(currency=currency)


@pytest.mark.parametrize("tokens", [-1, True, 2.5, "10"])
def test_a_token_count_must_be_a_non_negative_int(tokens: Any) -> None:
    with pytest.raises(InvalidOfferError, match="token_count"):
        offer(token_count=tokens)


@pytest.mark.parametrize("limit", [0, -2, 1.5, True])
def test_a_quantity_limit_must_be_a_positive_int(limit: Any) -> None:
    with pytest.raises(InvalidOfferError, match="quantity_limit"):
        offer(quantity_limit=limit)


def test_a_weight_must_be_an_int() -> None:
    with pytest.raises(InvalidOfferError, match="weight"):
        offer(weight=1.5)


@pytest.mark.parametrize("field", ["tags", "unlocked_by"])
@pytest.mark.parametrize("value", ["web", ["web", 3]])
def test_tags_and_unlocking_groups_are_lists_of_str(field: str, value: Any) -> None:
    with pytest.raises(InvalidOfferError, match=field):
        offer(**{field: value})


@pytest.mark.parametrize("name", ["", None])
def test_an_offer_needs_a_name(name: Any) -> None:
    with pytest.raises(InvalidOfferError, match="name"):
        offer(name=name)


def test_an_offer_needs_a_group() -> None:
    with pytest.raises(InvalidOfferError, match="offer_group"):
        offer(offer_group="")


def test_a_custom_cycle_needs_its_seconds() -> None:
    assert offer(cycle=Cycle.CUSTOM, custom_cycle=3600).custom_cycle == 3600
    with pytest.raises(InvalidOfferError, match="custom_cycle"):
        offer(cycle=Cycle.CUSTOM)
    with pytest.raises(InvalidOfferError, match="custom_cycle"):
        offer(cycle=Cycle.CUSTOM, custom_cycle=1.5)


def test_custom_seconds_are_refused_on_other_cycles() -> None:
    with pytest.raises(InvalidOfferError, match="only allowed with cycle 'custom'"):
        offer(cycle=Cycle.DAILY, custom_cycle=60)


def test_bundle_items_must_be_combined_offers() -> None:
    with pytest.raises(InvalidOfferError, match="combined_items"):
        offer(combined_items=[{"offer_id": "x", "offer_group": "g"}])


@pytest.mark.parametrize("quantity", [0, -1, True, 1.0])
def test_a_bundle_item_quantity_is_an_int_of_at_least_one(quantity: Any) -> None:
    with pytest.raises(InvalidOfferError, match="quantity"):
        CombinedOffer(offer_id="x", offer_group="g", quantity=quantity)


def test_a_bundle_item_needs_a_group() -> None:
    with pytest.raises(InvalidOfferError, match="offer_group"):
        CombinedOffer(offer_id="x", offer_group="")


def test_a_bundle_item_with_a_custom_cycle_needs_its_seconds() -> None:
    with pytest.raises(InvalidOfferError, match="custom_cycle"):
        CombinedOffer(offer_id="x", offer_group="g", cycle=Cycle.CUSTOM)


# -- unlocking helpers


def test_as_unlocking_offers_adds_their_groups_and_marks_them() -> None:
    vip = offer(name="vip", offer_group="vip")
    plan, pack = offer(name="plan", offer_group="plan"), offer(name="pack", offer_group="pack")
    assert vip.as_unlocking_offers([plan, pack]) == ["plan", "pack"]
    assert vip.unlocked_by == ["plan", "pack"]
    assert plan.has_dependent_offers
    assert pack.has_dependent_offers


def test_as_unlocking_offers_keeps_groups_distinct() -> None:
    vip = offer(name="vip", offer_group="vip", unlocked_by=["plan"])
    same_group = [offer(name="a", offer_group="plan"), offer(name="b", offer_group="plan")]
    assert vip.as_unlocking_offers(same_group) == ["plan"]


def test_as_unlocking_offer_groups_appends_distinct_groups_in_order() -> None:
    vip = offer(name="vip", offer_group="vip", unlocked_by=["a"])
    assert vip.as_unlocking_offer_groups(["b", "a", "c", "b"]) == ["a", "b", "c"]
    assert vip.unlocked_by == ["a", "b", "c"]


def test_as_unlocking_offer_groups_with_reset_replaces_the_groups() -> None:
    vip = offer(name="vip", offer_group="vip", unlocked_by=["a", "b"])
    assert vip.as_unlocking_offer_groups(["c", "c"], reset=True) == ["c"]
    assert vip.as_unlocking_offers([offer(name="d", offer_group="d")], reset=True) == ["d"]


# -- user credits helpers


def test_user_credits_give_the_balance_and_standing_of_a_group() -> None:
    expires = datetime(2025, 2, 1, tzinfo=UTC)
    credits = UserCredits(
        user_id=7,
        offers=[ActivatedOffer(offer_group="ai", tokens=-3, expires=expires)],
    )
    assert credits.balance("ai") == -3
    standing = credits.offer("ai")
    assert standing is not None
    assert standing.expires == expires


def test_user_credits_of_a_group_the_user_lacks_are_zero_and_none() -> None:
    credits = UserCredits(user_id=7)
    assert credits.balance("ai") == 0
    assert credits.offer("ai") is None
