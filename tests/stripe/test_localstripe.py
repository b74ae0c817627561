"""The whole payment flow against localstripe, a stateful fake Stripe server on loopback.

The test plays the browser's part (Stripe.js) with the SDK: it gives the intent a
test payment method and confirms it, as a customer would. localstripe knows the
test methods ``pm_card_visa`` (succeeds) and ``pm_card_chargeCustomerFail``
(declined when charged). localstripe sends no thin events: those are signed here
(:mod:`payloads`) and name objects that live on the server, which the client fetches.
Customers are stored in the shop's in-memory backend, or for the race of two
processes in one SQLite database.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import stripe

from usercredits import (
    Cycle,
    InMemoryDaoFactory,
    LedgerReason,
    Offer,
    OfferKind,
    Order,
    PaymentError,
    PaymentService,
    Status,
    WebhookResult,
)
from usercredits.containers import UserCreditsContainer
from usercredits_stripe import StripePaymentClient
from usercredits_stripe.containers import StripeContainer

from .payloads import sign, thin_event

pytestmark = pytest.mark.localstripe

USER = "user-1"
KEY = "sk_test_usercredits"
SECRET = "whsec_test_usercredits"
DELIVERY_WAIT = 15.0


@pytest.fixture
def sdk(localstripe: str) -> stripe.StripeClient:
    """The SDK as the browser side and as an observer of the server's state."""
    return stripe.StripeClient(KEY, base_addresses={"api": localstripe}, max_network_retries=0)


@pytest.fixture
def live_client(localstripe: str, factory: InMemoryDaoFactory) -> StripePaymentClient:
    return StripePaymentClient(
        KEY,
        SECRET,
        api_base=localstripe,
        max_network_retries=0,
        customers=factory.get_customer_dao(),
    )


@pytest.fixture
def live_shop(
    live_client: StripePaymentClient,
    make_shop_for: Callable[..., Any],
    factory: InMemoryDaoFactory,
) -> Any:
    return make_shop_for(live_client, None, factory)


def _pay(sdk: stripe.StripeClient, intent_id: str, payment_method: str) -> stripe.PaymentIntent:
    sdk.v1.payment_intents.update(intent_id, params={"payment_method": payment_method})
    return sdk.v1.payment_intents.confirm(intent_id)


def _order(shop: Any, order_id: Any) -> Order:
    order: Order = shop.service.get_dao_factory().get_order_dao().find_by_id(order_id)
    return order


def test_an_order_creates_its_intent_on_the_server(
    live_shop: Any, sdk: stripe.StripeClient
) -> None:
    customer_id = live_shop.client.ensure_customer(USER, "ada@example.com")

    order = live_shop.service.create_order(live_shop.offer("pack").id, USER)

    intent = sdk.v1.payment_intents.retrieve(order.payment_intent_id)
    assert (intent.amount, intent.currency, intent.customer) == (1999, "usd", customer_id)
    assert intent.metadata.to_dict() == {
        "order_id": str(order.id),
        "user_id": USER,
        "offer_id": str(live_shop.offer("pack").id),
    }
    assert order.payment_intent_secret == intent.client_secret


def test_a_confirmed_card_payment_grants_the_tokens(
    live_shop: Any, sdk: stripe.StripeClient
) -> None:
    order = live_shop.service.create_order(live_shop.offer("pack").id, USER)
    assert _pay(sdk, order.payment_intent_id, "pm_card_visa").status == "succeeded"

    credits = live_shop.service.after_execute(order.id)

    assert credits.balance("ai") == 100
    settled = _order(live_shop, order.id)
    assert settled.status is Status.PAID
    assert json.loads(settled.history[-1].payload or "")["id"] == order.payment_intent_id


def test_a_zero_decimal_currency_is_charged_in_whole_units(
    live_shop: Any, sdk: stripe.StripeClient
) -> None:
    order = live_shop.service.create_order(live_shop.offer("yen").id, USER)
    _pay(sdk, order.payment_intent_id, "pm_card_visa")

    credits = live_shop.service.after_execute(order.id)

    assert sdk.v1.payment_intents.retrieve(order.payment_intent_id).amount == 500
    assert credits.balance("ai") == 10


def test_a_declined_card_refuses_the_order(live_shop: Any, sdk: stripe.StripeClient) -> None:
    order = live_shop.service.create_order(live_shop.offer("pack").id, USER)
    with pytest.raises(stripe.CardError):
        _pay(sdk, order.payment_intent_id, "pm_card_chargeCustomerFail")

    credits = live_shop.service.after_execute(order.id)

    refused = _order(live_shop, order.id)
    assert refused.status is Status.REFUSED
    assert "declined" in refused.history[-1].message
    assert credits.balance("ai") == 0


def test_a_refused_order_is_paid_with_a_new_intent(
    live_shop: Any, sdk: stripe.StripeClient
) -> None:
    order = live_shop.service.create_order(live_shop.offer("pack").id, USER)
    with pytest.raises(stripe.CardError):
        _pay(sdk, order.payment_intent_id, "pm_card_chargeCustomerFail")
    live_shop.service.after_execute(order.id)

    again = live_shop.service.pay_order(order.id)
    _pay(sdk, again.payment_intent_id, "pm_card_visa")
    credits = live_shop.service.after_execute(order.id)

    assert again.payment_intent_id != order.payment_intent_id
    assert sdk.v1.payment_intents.retrieve(again.payment_intent_id).status == "succeeded"
    assert _order(live_shop, order.id).payment_intent_id == again.payment_intent_id
    assert credits.balance("ai") == 100


def test_a_canceled_intent_refuses_the_order(live_shop: Any, sdk: stripe.StripeClient) -> None:
    order = live_shop.service.create_order(live_shop.offer("pack").id, USER)
    sdk.v1.payment_intents.cancel(order.payment_intent_id)

    live_shop.service.after_execute(order.id)

    assert _order(live_shop, order.id).status is Status.REFUSED


def test_a_card_asking_for_authentication_puts_the_order_in_error(
    live_shop: Any, sdk: stripe.StripeClient
) -> None:
    method = sdk.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4000002500003155", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    order = live_shop.service.create_order(live_shop.offer("pack").id, USER)
    assert _pay(sdk, order.payment_intent_id, method.id).status == "requires_action"

    live_shop.service.after_execute(order.id)

    assert _order(live_shop, order.id).status is Status.ERROR


def test_an_unconfirmed_intent_leaves_the_order_pending(live_shop: Any) -> None:
    order = live_shop.service.create_order(live_shop.offer("pack").id, USER)

    live_shop.service.after_execute(order.id)

    assert _order(live_shop, order.id).status is Status.PENDING


def test_a_refund_refunds_the_charge_and_revokes_the_unused_tokens(
    live_shop: Any, sdk: stripe.StripeClient
) -> None:
    order = live_shop.service.create_order(live_shop.offer("pack").id, USER)
    _pay(sdk, order.payment_intent_id, "pm_card_visa")
    live_shop.service.after_execute(order.id)
    live_shop.service.tokens_consumed(USER, "ai", 30)

    refunded = live_shop.service.refund(order.id)

    assert refunded.status is Status.REFUNDED
    assert live_shop.service.remaining_tokens(USER, "ai") == 0
    ledger = live_shop.service.get_dao_factory().get_token_timetable_dao().find({"user_id": USER})
    assert [line.tokens for line in ledger if line.reason is LedgerReason.REFUND] == [-70]
    refunds = sdk.v1.refunds.list(params={"payment_intent": order.payment_intent_id})
    assert [(r.amount, r.status) for r in refunds.data] == [(1999, "succeeded")]


def test_one_customer_per_email(live_shop: Any, sdk: stripe.StripeClient) -> None:
    first = live_shop.client.ensure_customer(USER, "ada@example.com")
    second = live_shop.client.ensure_customer(USER, "ada@example.com")

    customers = sdk.v1.customers.list(params={"email": "ada@example.com"}).data
    assert first == second
    assert [(c.id, c.to_dict()["metadata"]) for c in customers] == [(first, {"user_id": USER})]


def test_a_new_customer_holds_no_balance(live_shop: Any) -> None:
    live_shop.client.ensure_customer(USER, "ada@example.com")

    assert live_shop.client.fetch_user_balance(USER) == Decimal(0)


def test_an_unreachable_server_is_a_payment_error(make_shop_for: Callable[..., Any]) -> None:
    shop = make_shop_for(
        StripePaymentClient(KEY, SECRET, api_base="http://127.0.0.1:9", max_network_retries=0)
    )

    with pytest.raises(PaymentError) as caught:
        shop.service.create_order(shop.offer("pack").id, USER)

    assert isinstance(caught.value.original_error, stripe.APIConnectionError)


def test_the_container_wires_a_client_for_the_configured_server(
    localstripe: str, sdk: stripe.StripeClient
) -> None:
    payments = StripeContainer()
    payments.config.from_dict({"api_key": KEY, "webhook_secret": SECRET, "api_base": localstripe})
    core = UserCreditsContainer(payment_client=payments.payment_client)
    core.check_dependencies()
    service: PaymentService = core.service()
    offer = (
        core.dao_factory()
        .get_offer_dao()
        .create(
            Offer(
                name="100 tokens",
                kind=OfferKind.TOKENS,
                offer_group="ai",
                cycle=Cycle.MONTHLY,
                price=Decimal("19.99"),
                currency="usd",
                token_count=100,
            )
        )
    )

    order = service.create_order(offer.id, USER)

    assert sdk.v1.payment_intents.retrieve(str(order.payment_intent_id)).amount == 1999


# -- webhooks delivered by localstripe -------------------------------------------------


@dataclass
class Delivery:
    path: str
    body: bytes
    signature: str | None
    result: WebhookResult | None
    error: PaymentError | None


class Receiver:
    """A webhook endpoint on 127.0.0.1 handing the raw body and the ``Stripe-Signature``
    header to ``PaymentService.handle_webhook``: 200 when accepted, 400 when rejected."""

    def __init__(self, service: PaymentService) -> None:
        self._deliveries: list[Delivery] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                signature = self.headers.get("Stripe-Signature")
                try:
                    result, error = service.handle_webhook(body, signature), None
                except PaymentError as e:
                    result, error = None, e
                self.send_response(400 if error else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver._arrived:
                    receiver._deliveries.append(Delivery(self.path, body, signature, result, error))
                    receiver._arrived.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def delivery(self, path: str, intent_id: str | None) -> Delivery:
        """The delivery to ``path`` of an event about ``intent_id``, waiting at most
        DELIVERY_WAIT seconds (the server also sends, late, events of earlier tests)."""

        def find() -> Delivery | None:
            for delivery in self._deliveries:
                about = json.loads(delivery.body)["data"]["object"].get("id")
                if delivery.path == path and about == intent_id:
                    return delivery
            return None

        with self._arrived:
            found = self._arrived.wait_for(find, timeout=DELIVERY_WAIT)
        if found is None:
            raise AssertionError(f"no event about {intent_id} reached {path} in time")
        return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _register(localstripe: str, hook_id: str, url: str, secret: str, events: list[str]) -> None:
    request = urllib.request.Request(
        f"{localstripe}/_config/webhooks/{hook_id}",
        data=json.dumps({"url": url, "secret": secret, "events": events}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


@pytest.fixture
def receiver(live_shop: Any, localstripe: str) -> Iterator[Receiver]:
    """A receiver registered twice on localstripe: ``/hook`` with the client's secret and
    ``/forged`` with another one; both silenced again afterwards."""
    endpoint = Receiver(live_shop.service)
    events = ["payment_intent.succeeded", "payment_intent.payment_failed"]
    hooks = {"usercredits": ("/hook", SECRET), "forger": ("/forged", "whsec_forger")}
    for hook_id, (path, secret) in hooks.items():
        _register(localstripe, hook_id, endpoint.url(path), secret, events)
    try:
        yield endpoint
    finally:
        for hook_id, (path, secret) in hooks.items():
            _register(localstripe, hook_id, endpoint.url(path), secret, [])
        endpoint.close()


def test_a_webhook_from_the_server_settles_the_order(
    live_shop: Any, sdk: stripe.StripeClient, receiver: Receiver
) -> None:
    order = live_shop.service.create_order(live_shop.offer("pack").id, USER)

    _pay(sdk, order.payment_intent_id, "pm_card_visa")
    accepted = receiver.delivery("/hook", order.payment_intent_id)
    forged = receiver.delivery("/forged", order.payment_intent_id)

    assert accepted.error is None
    assert accepted.result is not None
    assert accepted.result.event_type == "payment_intent.succeeded"
    assert accepted.result.handled
    assert not accepted.result.duplicate
    assert _order(live_shop, order.id).status is Status.PAID
    assert live_shop.service.remaining_tokens(USER, "ai") == 100
    assert forged.result is None
    assert forged.error is not None


def test_a_webhook_replayed_later_is_applied_once(
    live_shop: Any, sdk: stripe.StripeClient, receiver: Receiver
) -> None:
    order = live_shop.service.create_order(live_shop.offer("pack").id, USER)
    _pay(sdk, order.payment_intent_id, "pm_card_visa")
    delivered = receiver.delivery("/hook", order.payment_intent_id)

    replay = live_shop.service.handle_webhook(delivered.body, delivered.signature)

    assert replay.duplicate
    assert live_shop.service.remaining_tokens(USER, "ai") == 100


def test_a_failed_payment_webhook_refuses_the_order(
    live_shop: Any, sdk: stripe.StripeClient, receiver: Receiver
) -> None:
    order = live_shop.service.create_order(live_shop.offer("pack").id, USER)
    with pytest.raises(stripe.CardError):
        _pay(sdk, order.payment_intent_id, "pm_card_chargeCustomerFail")

    delivered = receiver.delivery("/hook", order.payment_intent_id)

    assert delivered.result is not None
    assert delivered.result.event_type == "payment_intent.payment_failed"
    assert _order(live_shop, order.id).status is Status.REFUSED


# -- refunds, thin events and customers on the server --------------------------------------


def _paid(shop: Any, sdk: stripe.StripeClient) -> Order:
    order: Order = shop.service.create_order(shop.offer("pack").id, USER)
    _pay(sdk, str(order.payment_intent_id), "pm_card_visa")
    shop.service.after_execute(order.id)
    shop.service.tokens_consumed(USER, "ai", 30)
    return order


def _charge_id(sdk: stripe.StripeClient, order: Order) -> str:
    charge = sdk.v1.payment_intents.retrieve(str(order.payment_intent_id)).to_dict()[
        "latest_charge"
    ]
    return str(charge["id"] if isinstance(charge, dict) else charge)


def _refund_lines(shop: Any) -> list[int]:
    lines = shop.service.get_dao_factory().get_token_timetable_dao().find({"user_id": USER})
    return [line.tokens for line in lines if line.reason is LedgerReason.REFUND]


def test_a_partial_then_a_full_refund_refund_the_charge_in_two_parts(
    live_shop: Any, sdk: stripe.StripeClient
) -> None:
    order = _paid(live_shop, sdk)

    partial = live_shop.service.refund(order.id, Decimal("5.00"))
    full = live_shop.service.refund(order.id)

    assert (partial.status, full.status) == (Status.PARTIAL, Status.REFUNDED)
    assert _refund_lines(live_shop) == [-25, -45]
    charge = sdk.v1.charges.retrieve(_charge_id(sdk, order))
    assert (charge.amount_refunded, charge.refunded) == (1999, True)
    refunds = sdk.v1.refunds.list(params={"payment_intent": str(order.payment_intent_id)})
    assert sorted(r.amount for r in refunds.data) == [500, 1499]


def test_a_thin_success_event_settles_the_order_with_the_intent_read_from_the_server(
    live_shop: Any, sdk: stripe.StripeClient
) -> None:
    order = live_shop.service.create_order(live_shop.offer("pack").id, USER)
    _pay(sdk, order.payment_intent_id, "pm_card_visa")
    body = thin_event("v1.payment_intent.succeeded", order.payment_intent_id, "payment_intent")

    result = live_shop.service.handle_webhook(body, sign(body))

    assert result.handled
    assert _order(live_shop, order.id).status is Status.PAID
    assert live_shop.service.remaining_tokens(USER, "ai") == 100


def test_a_thin_refund_event_reads_the_refunded_amount_from_the_servers_charge(
    live_shop: Any, sdk: stripe.StripeClient
) -> None:
    order = _paid(live_shop, sdk)
    charge_id = _charge_id(sdk, order)
    sdk.v1.refunds.create(params={"charge": charge_id, "amount": 500})  # from the dashboard
    body = thin_event("v1.charge.refunded", charge_id, "charge")

    result = live_shop.service.handle_webhook(body, sign(body))

    assert result.order is not None
    assert (result.order.status, result.order.refunded_amount) == (Status.PARTIAL, Decimal(5))
    assert _refund_lines(live_shop) == [-25]


def test_a_customer_is_created_stored_and_reused(
    live_shop: Any, sdk: stripe.StripeClient, factory: InMemoryDaoFactory
) -> None:
    first = live_shop.client.ensure_customer(USER, "ada@example.com")
    second = live_shop.client.ensure_customer(USER, "ada@example.com")

    stored = factory.get_customer_dao().find_by_user("stripe", USER)
    assert first == second == (stored.customer_id if stored else None)
    assert len(sdk.v1.customers.list(params={"email": "ada@example.com"}).data) == 1


def test_a_customer_on_the_server_is_found_by_email(
    live_shop: Any, sdk: stripe.StripeClient
) -> None:
    existing = sdk.v1.customers.create(params={"email": "ada@example.com"})

    assert live_shop.client.ensure_customer(USER, "ada@example.com") == existing.id


def test_a_fresh_client_reads_the_balance_of_the_stored_customer(
    live_shop: Any, localstripe: str, factory: InMemoryDaoFactory
) -> None:
    live_shop.client.ensure_customer(USER, "ada@example.com")
    fresh = StripePaymentClient(
        KEY, SECRET, api_base=localstripe, customers=factory.get_customer_dao()
    )

    assert fresh.fetch_user_balance(USER) == Decimal(0)


def test_two_processes_asking_at_once_store_one_customer(
    localstripe: str,
    sdk: stripe.StripeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sql = pytest.importorskip("usercredits_sql")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    workers = importlib.import_module("stripe_workers")
    url = f"sqlite:///{tmp_path / 'customers.db'}"
    sql.SqlDaoFactory.from_url(url).close()
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(2), spawn.Queue()
    processes = [
        spawn.Process(
            target=workers.ensure_customer,
            args=(url, localstripe, (KEY, SECRET), USER, "ada@example.com", barrier, results),
        )
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    answers = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)

    factory = sql.SqlDaoFactory.from_url(url, create_schema=False)
    try:
        stored = factory.get_customer_dao().find({})
    finally:
        factory.close()
    assert [p.exitcode for p in processes] == [0, 0]
    assert [c.customer_id for c in stored] == [answers[0][1]]
    assert answers == [("ok", stored[0].customer_id)] * 2
    on_server = sdk.v1.customers.list(params={"email": "ada@example.com"}).data
    assert stored[0].customer_id in [c.id for c in on_server]
