"""What both example applications do, through their framework's test client.

:class:`AppContract` is subclassed once per application; the subclass provides ``http``, a
:class:`Http` on the running application (the fixtures of ``conftest.py`` give the
container it must be built on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import pytest

from usercredits import FrozenClock, Offer, Status, WebhookEventKind
from usercredits.testing.fakes import FakePaymentClient
from usercredits.testing.faults import BEFORE, FaultyDaoFactory

AI_TOKENS = "ai-tokens"


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


class Http(Protocol):
    """An application's test client, the same for both frameworks."""

    def get(self, path: str) -> Answer: ...

    def post(
        self,
        path: str,
        json: Any = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer: ...


def order(http: Http, user: str, offer: Offer, **fields: Any) -> dict[str, Any]:
    answer = http.post(f"/users/{user}/orders", {"offer_id": str(offer.id), **fields})
    assert answer.status == 201, answer
    body: dict[str, Any] = answer.body
    return body


def webhook(http: Http, payload: bytes, signature: str) -> Answer:
    return http.post("/stripe/webhook", content=payload, headers={"Stripe-Signature": signature})


def buy(http: Http, gateway: FakePaymentClient, user: str, offer: Offer) -> dict[str, Any]:
    """Order the offer and let the gateway's webhook report its payment."""
    created = order(http, user, offer)
    payload, signature = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, created["id"])
    assert webhook(http, payload, signature).status == 200
    return created


def consume(http: Http, user: str, count: Any, key: str | None = None) -> Answer:
    headers = {"Idempotency-Key": key} if key else None
    return http.post(
        f"/users/{user}/consumptions", {"offer_group": AI_TOKENS, "count": count}, headers=headers
    )


def balance(http: Http, user: str) -> int:
    answer = http.get(f"/users/{user}/credits/{AI_TOKENS}")
    assert answer.status == 200, answer
    tokens: int = answer.body["balance"]
    return tokens


class AppContract:
    @pytest.fixture
    def http(self) -> Http:
        raise NotImplementedError

    # -- offers ----------------------------------------------------------------------------

    def test_offers_are_listed_with_prices_as_strings(self, http: Http, pack: Offer) -> None:
        answer = http.get("/users/alice/offers")

        assert answer.status == 200
        assert [(o["id"], o["key"], o["price"]) for o in answer.body] == [
            (str(pack.id), "tokens-1k", "9.90")
        ]

    def test_offers_can_be_filtered_by_tag(self, http: Http, pack: Offer, free_plan: Offer) -> None:
        answer = http.get("/users/alice/offers?tag=web")

        assert [o["key"] for o in answer.body] == ["tokens-1k"]

    def test_offers_unlocked_by_a_purchase_are_listed_once_it_is_paid(
        self, http: Http, gateway: FakePaymentClient, pack: Offer, vip_pack: Offer
    ) -> None:
        before = [o["key"] for o in http.get("/users/alice/offers").body]
        buy(http, gateway, "alice", pack)
        after = [o["key"] for o in http.get("/users/alice/offers").body]

        assert before == ["tokens-1k"]
        assert sorted(after) == ["tokens-1k", "tokens-5k-vip"]

    # -- orders ----------------------------------------------------------------------------

    def test_an_order_is_answered_with_its_client_secret(self, http: Http, pack: Offer) -> None:
        answer = http.post("/users/alice/orders", {"offer_id": str(pack.id), "quantity": 2})

        assert answer.status == 201
        assert answer.body["status"] == "pending"
        assert answer.body["total"] == "19.80"
        assert answer.body["payment_intent_secret"].startswith(answer.body["payment_intent_id"])

    def test_a_free_order_is_paid_at_once(self, http: Http, free_plan: Offer) -> None:
        created = order(http, "alice", free_plan)

        assert (created["status"], created["total"]) == ("paid", "0")
        assert created["payment_intent_secret"] is None
        assert balance(http, "alice") == 100

    def test_ordering_a_free_plan_held_already_is_409(self, http: Http, free_plan: Offer) -> None:
        order(http, "alice", free_plan)

        answer = http.post("/users/alice/orders", {"offer_id": str(free_plan.id)})

        assert answer.status == 409
        assert answer.body["error"] == "AlreadySubscribedError"

    def test_ordering_an_unknown_offer_is_404(self, http: Http) -> None:
        answer = http.post("/users/alice/orders", {"offer_id": "no-such-offer"})

        assert answer.status == 404
        assert answer.body["error"] == "EntityNotFoundError"

    def test_ordering_an_offer_the_user_has_not_unlocked_is_422(
        self, http: Http, vip_pack: Offer
    ) -> None:
        answer = http.post("/users/alice/orders", {"offer_id": str(vip_pack.id)})

        assert answer.status == 422
        assert answer.body["error"] == "OfferNotAvailableError"

    def test_ordering_a_quantity_of_zero_is_422(self, http: Http, pack: Offer) -> None:
        answer = http.post("/users/alice/orders", {"offer_id": str(pack.id), "quantity": 0})

        assert answer.status == 422

    def test_a_gateway_failure_is_502_without_its_message(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        gateway.fail_next("create_payment_intent")

        answer = http.post("/users/alice/orders", {"offer_id": str(pack.id)})

        assert answer.status == 502
        assert answer.body == {
            "error": "PaymentError",
            "message": "the payment gateway failed, try again later",
        }

    def test_a_storage_failure_is_503_without_its_message(
        self, http: Http, storage: FaultyDaoFactory, pack: Offer
    ) -> None:
        storage.arm(1, BEFORE)

        answer = http.post("/users/alice/orders", {"offer_id": str(pack.id)})

        assert answer.status == 503
        assert answer.body == {
            "error": "InjectedFault",
            "message": "the storage is unavailable, try again later",
        }

    # -- the webhook and settling ----------------------------------------------------------

    def test_the_webhook_on_the_raw_body_settles_the_order(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        created = order(http, "alice", pack)
        payload, signature = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, created["id"])

        answer = webhook(http, payload, signature)

        assert answer.status == 200
        assert (answer.body["handled"], answer.body["duplicate"]) == (True, False)
        assert answer.body["order"]["status"] == "paid"
        assert balance(http, "alice") == 1000

    def test_a_redelivered_webhook_changes_nothing(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        created = order(http, "alice", pack)
        payload, signature = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, created["id"])
        webhook(http, payload, signature)

        answer = webhook(http, payload, signature)

        assert answer.status == 200
        assert answer.body["duplicate"] is True
        assert balance(http, "alice") == 1000

    def test_a_webhook_with_a_bad_signature_is_400_and_changes_nothing(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        created = order(http, "alice", pack)
        payload, _ = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, created["id"])

        answer = webhook(http, payload, "forged")

        assert answer.status == 400
        assert answer.body["error"] == "PaymentError"
        assert balance(http, "alice") == 0

    def test_a_webhook_whose_body_was_reencoded_is_400(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        created = order(http, "alice", pack)
        payload, signature = gateway.event(WebhookEventKind.PAYMENT_SUCCEEDED, created["id"])

        answer = webhook(http, payload.replace(b'", "', b'","'), signature)

        assert answer.status == 400

    def test_a_signed_webhook_that_is_not_an_event_is_400(
        self, http: Http, gateway: FakePaymentClient
    ) -> None:
        answer = webhook(http, b"not an event", gateway.sign(b"not an event"))

        assert answer.status == 400

    def test_settling_after_the_webhook_answers_the_paid_order(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        created = buy(http, gateway, "alice", pack)

        answer = http.post(f"/orders/{created['id']}/settle")

        assert answer.status == 200
        assert (answer.body["id"], answer.body["status"]) == (created["id"], "paid")
        assert balance(http, "alice") == 1000

    def test_settling_before_the_webhook_asks_the_gateway(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        created = order(http, "alice", pack)
        gateway.set_outcome(created["id"], Status.PAID)

        answer = http.post(f"/orders/{created['id']}/settle")

        assert answer.body["status"] == "paid"
        assert balance(http, "alice") == 1000

    def test_settling_a_declined_payment_answers_the_refused_order(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        created = order(http, "alice", pack)
        gateway.set_outcome(created["id"], Status.REFUSED, "Your card was declined.")

        answer = http.post(f"/orders/{created['id']}/settle")

        assert answer.status == 200
        assert answer.body["status"] == "refused"
        assert answer.body["history"][-1]["message"] == "Your card was declined."

    def test_settling_an_unknown_order_is_404(self, http: Http) -> None:
        assert http.post("/orders/no-such-order/settle").status == 404

    # -- consumption -----------------------------------------------------------------------

    def test_consumption_answers_the_ledger_line(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        buy(http, gateway, "alice", pack)

        answer = consume(http, "alice", 250)

        assert answer.status == 201
        assert (answer.body["tokens"], answer.body["reason"]) == (-250, "consumption")
        assert balance(http, "alice") == 750

    def test_consumption_beyond_the_balance_is_402_and_consumes_nothing(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        buy(http, gateway, "alice", pack)

        answer = consume(http, "alice", 1001)

        assert answer.status == 402
        assert answer.body["error"] == "InsufficientCreditsError"
        assert (answer.body["balance"], answer.body["requested"]) == (1000, 1001)
        assert balance(http, "alice") == 1000

    def test_consumption_without_credits_is_402(self, http: Http) -> None:
        assert consume(http, "bob", 1).status == 402

    @pytest.mark.parametrize("count", [0, -5, "3", 2.5])
    def test_consumption_of_a_count_that_is_not_a_positive_int_is_422(
        self, http: Http, count: Any
    ) -> None:
        assert consume(http, "alice", count).status == 422

    def test_a_retried_consumption_with_the_same_key_consumes_once(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        buy(http, gateway, "alice", pack)

        first = consume(http, "alice", 250, key="job-1")
        retry = consume(http, "alice", 250, key="job-1")

        assert retry.status == 201
        assert retry.body["id"] == first.body["id"]
        assert balance(http, "alice") == 750

    def test_a_key_reused_for_another_count_is_409(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        buy(http, gateway, "alice", pack)
        consume(http, "alice", 250, key="job-1")

        answer = consume(http, "alice", 300, key="job-1")

        assert answer.status == 409
        assert answer.body["error"] == "IdempotencyConflictError"

    # -- balances, grants, history ---------------------------------------------------------

    def test_the_credits_show_each_group_and_subscription(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        created = buy(http, gateway, "alice", pack)
        consume(http, "alice", 250)

        credits = http.get("/users/alice/credits").body

        assert credits["user_id"] == "alice"
        assert [(g["offer_group"], g["tokens"]) for g in credits["offers"]] == [(AI_TOKENS, 750)]
        assert credits["offers"][0]["expires"] == "2025-02-15T12:00:00+00:00"
        assert [(s["order_id"], s["total"]) for s in credits["subscriptions"]] == [
            (created["id"], "9.90")
        ]

    def test_the_credits_of_an_unknown_user_are_empty(self, http: Http) -> None:
        answer = http.get("/users/nobody/credits")

        assert answer.status == 200
        assert (answer.body["offers"], answer.body["subscriptions"]) == ([], [])

    def test_grants_show_what_each_purchase_has_left(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        created = buy(http, gateway, "alice", pack)
        consume(http, "alice", 250)

        grants = http.get("/users/alice/grants").body

        assert [(g["order_id"], g["tokens"], g["remaining"], g["status"]) for g in grants] == [
            (created["id"], 1000, 750, "live")
        ]

    def test_history_pages_follow_the_cursor_newest_first(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        buy(http, gateway, "alice", pack)
        for count in (1, 2, 3):
            consume(http, "alice", count)

        pages, cursor = [], ""
        while cursor is not None:
            page = http.get(f"/users/alice/history?limit=2{cursor}").body
            pages.append([line["tokens"] for line in page["lines"]])
            cursor = None if page["next"] is None else f"&before={page['next']}"

        assert pages == [[-3, -2], [-1, 1000], []]

    def test_a_history_page_of_zero_lines_is_422(self, http: Http) -> None:
        assert http.get("/users/alice/history?limit=0").status == 422

    # -- holds -----------------------------------------------------------------------------

    def test_a_hold_keeps_its_tokens_from_other_consumptions(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        buy(http, gateway, "alice", pack)

        hold = http.post("/users/alice/holds", {"offer_group": AI_TOKENS, "count": 800})

        assert hold.status == 201
        assert hold.body["status"] == "active"
        assert http.get(f"/users/alice/credits/{AI_TOKENS}").body == {
            "offer_group": AI_TOKENS,
            "balance": 1000,
            "available": 200,
        }
        assert consume(http, "alice", 201).status == 402

    def test_capturing_a_hold_consumes_what_the_job_used(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        buy(http, gateway, "alice", pack)
        hold = http.post("/users/alice/holds", {"offer_group": AI_TOKENS, "count": 800}).body

        line = http.post(f"/holds/{hold['id']}/capture", {"count": 300})

        assert line.status == 200
        assert (line.body["tokens"], line.body["hold_id"]) == (-300, hold["id"])
        assert balance(http, "alice") == 700

    def test_a_released_hold_frees_its_tokens(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        buy(http, gateway, "alice", pack)
        hold = http.post("/users/alice/holds", {"offer_group": AI_TOKENS, "count": 800}).body

        released = http.post(f"/holds/{hold['id']}/release")

        assert released.body["status"] == "released"
        assert http.get(f"/users/alice/credits/{AI_TOKENS}").body["available"] == 1000

    def test_holding_more_than_is_available_is_402(
        self, http: Http, gateway: FakePaymentClient, pack: Offer
    ) -> None:
        buy(http, gateway, "alice", pack)

        answer = http.post("/users/alice/holds", {"offer_group": AI_TOKENS, "count": 1001})

        assert answer.status == 402

    def test_capturing_an_expired_hold_is_409(
        self, http: Http, gateway: FakePaymentClient, clock: FrozenClock, pack: Offer
    ) -> None:
        buy(http, gateway, "alice", pack)
        hold = http.post(
            "/users/alice/holds", {"offer_group": AI_TOKENS, "count": 100, "ttl_seconds": 60}
        ).body
        clock.advance(timedelta(minutes=2))

        answer = http.post(f"/holds/{hold['id']}/capture", {})

        assert answer.status == 409
        assert answer.body["error"] == "HoldExpiredError"
        assert balance(http, "alice") == 1000
