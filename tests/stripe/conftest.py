"""Fixtures of the Stripe tests.

Two doubles of Stripe are used:

- ``FakeStripe``, a transport plugged into the SDK (``http_client=``): the SDK
  builds its real requests and parses real-looking responses, while intents,
  charges, refunds, disputes and customers live in dicts the tests can shape (any
  intent status, amount mismatches, failed refunds). It honours idempotency keys
  like Stripe does, and answers several threads at once.
- ``localstripe``, a stateful fake Stripe server, started once per session in a
  subprocess on 127.0.0.1 and emptied before each test that uses it.

Webhook payloads are built and signed by :mod:`payloads`.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import stripe

from usercredits import (
    Cycle,
    FrozenClock,
    InMemoryDaoFactory,
    Offer,
    OfferKind,
    PaymentService,
)
from usercredits_stripe import StripePaymentClient

from .payloads import WEBHOOK_SECRET, charge, sign

API_KEY = "sk_test_usercredits"
START = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)


# -- a Stripe transport double ---------------------------------------------------------


@dataclass
class FakeRequest:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)

    def metadata(self) -> dict[str, str]:
        return {k[9:-1]: v for k, v in self.params.items() if k.startswith("metadata[")}


class FakeStripe(stripe.HTTPClient):
    """Stripe's API for intents, charges, refunds, disputes and customers, answered from
    memory."""

    name = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[FakeRequest] = []
        self.intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.refund_status = "succeeded"
        self.offline = False
        self.error: tuple[int, dict[str, Any]] | None = None
        self._ids = itertools.count(1)
        self._replies: dict[str, tuple[str, int, dict[str, str]]] = {}
        self._lock = threading.RLock()

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, dict[str, str]]:
        if self.offline:
            raise stripe.APIConnectionError("Connection refused by the fake network")  # type: ignore[no-untyped-call]
        split = urlsplit(url)
        query = post_data if method.lower() == "post" else split.query
        params = dict(parse_qsl(query or "", keep_blank_values=True))
        request = FakeRequest(method.lower(), split.path, params, dict(headers or {}))
        with self._lock:
            self.requests.append(request)
            if self.error is not None:
                status, error = self.error
                return json.dumps({"error": error}), status, {}
            key = request.headers.get("Idempotency-Key")
            if request.method == "post" and key in self._replies:
                return self._replies[key]
            status, body = self._answer(request)
            reply: tuple[str, int, dict[str, str]] = (json.dumps(body), status, {})
            if request.method == "post" and key and status < 400:
                self._replies[key] = reply
            return reply

    def close(self) -> None:
        pass

    def posts(self, path: str) -> list[FakeRequest]:
        return [r for r in self.requests if r.method == "post" and r.path == path]

    def gets(self, path: str) -> list[FakeRequest]:
        return [r for r in self.requests if r.method == "get" and r.path == path]

    def succeed(self, intent_id: str) -> dict[str, Any]:
        """Make the intent succeed with a charge of its amount; the charge."""
        with self._lock:
            intent = self.intents[intent_id]
            paid = charge(
                intent_id,
                amount=intent["amount"],
                currency=intent["currency"],
                order_id=intent["metadata"].get("order_id"),
                charge_id=self._id("ch"),
            )
            self.charges[paid["id"]] = paid
            intent.update(status="succeeded", amount_received=intent["amount"])
            intent["latest_charge"] = paid["id"]
            return paid

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Keep a Stripe object (a charge, refund, dispute or intent) to be retrieved."""
        tables = {
            "charge": self.charges,
            "refund": self.refunds,
            "dispute": self.disputes,
            "payment_intent": self.intents,
        }
        with self._lock:
            tables[obj["object"]][obj["id"]] = obj
        return obj

    def put_customer(self, email: str, metadata: dict[str, str]) -> str:
        """Keep a customer created by someone else (a dashboard, another system); its id."""
        with self._lock:
            customer_id = self._id("cus")
            self.customers[customer_id] = {
                "id": customer_id,
                "object": "customer",
                "created": 1721948530 + len(self.customers),
                "email": email,
                "metadata": metadata,
                "balance": 0,
                "currency": None,
            }
            return customer_id

    def _id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids)}"

    def _answer(self, request: FakeRequest) -> tuple[int, dict[str, Any]]:
        parts = request.path.strip("/").split("/")[1:]
        p = request.params
        if parts == ["payment_intents"] and request.method == "post":
            intent_id = self._id("pi")
            self.intents[intent_id] = {
                "id": intent_id,
                "object": "payment_intent",
                "amount": int(p["amount"]),
                "amount_received": 0,
                "currency": p["currency"],
                "customer": p.get("customer"),
                "metadata": request.metadata(),
                "status": "requires_payment_method",
                "client_secret": f"{intent_id}_secret_fake",
                "last_payment_error": None,
                "latest_charge": None,
                "cancellation_reason": None,
            }
            return 200, self.intents[intent_id]
        if parts == ["refunds"] and request.method == "post":
            return self._refund(request)
        if parts == ["customers"] and request.method == "post":
            customer_id = self.put_customer(p.get("email", ""), request.metadata())
            return 200, self.customers[customer_id]
        if parts == ["customers"]:
            found = [c for c in self.customers.values() if c["email"] == p.get("email")]
            found.sort(key=lambda c: c["created"], reverse=True)
            limit = int(p.get("limit") or 10)
            page = {"object": "list", "data": found[:limit], "has_more": False, "url": "/v1/x"}
            return 200, page
        tables = {
            "payment_intents": self.intents,
            "charges": self.charges,
            "refunds": self.refunds,
            "disputes": self.disputes,
            "customers": self.customers,
        }
        if len(parts) == 2 and parts[0] in tables and parts[1] in tables[parts[0]]:
            return 200, tables[parts[0]][parts[1]]
        return 404, {"error": {"type": "invalid_request_error", "message": "No such object"}}

    def _refund(self, request: FakeRequest) -> tuple[int, dict[str, Any]]:
        p = request.params
        intent = self.intents[p["payment_intent"]]
        paid = self.charges.get(intent.get("latest_charge") or "")
        refunded = 0 if paid is None else paid["amount_refunded"]
        amount = int(p.get("amount") or intent["amount"] - refunded)
        if refunded + amount > intent["amount"]:
            message = f"Refund amount ({amount}) is greater than unrefunded amount on charge"
            return 400, {"error": {"type": "invalid_request_error", "message": message}}
        refund_id = self._id("re")
        self.refunds[refund_id] = {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "charge": None if paid is None else paid["id"],
            "currency": intent["currency"],
            "metadata": request.metadata(),
            "payment_intent": intent["id"],
            "status": self.refund_status,
            "failure_reason": "expired_or_canceled_card"
            if self.refund_status == "failed"
            else None,
        }
        if paid is not None and self.refund_status not in ("failed", "canceled"):
            paid["amount_refunded"] = refunded + amount
            paid["refunded"] = paid["amount_refunded"] >= paid["amount"]
        return 200, self.refunds[refund_id]


# -- a service on the in-memory backend ------------------------------------------------


@dataclass
class Shop:
    """A payment service with a few offers, on the in-memory backend and a frozen clock."""

    service: PaymentService
    client: StripePaymentClient
    clock: FrozenClock
    offers: dict[str, Offer]

    def offer(self, key: str) -> Offer:
        return self.offers[key]


def _catalogue() -> list[Offer]:
    return [
        Offer(
            key="pack",
            name="100 tokens",
            kind=OfferKind.TOKENS,
            offer_group="ai",
            cycle=Cycle.MONTHLY,
            price=Decimal("19.99"),
            currency="usd",
            token_count=100,
        ),
        Offer(
            key="yen",
            name="Yen pack",
            kind=OfferKind.TOKENS,
            offer_group="ai",
            cycle=Cycle.ONCE,
            price=Decimal(500),
            currency="jpy",
            token_count=10,
        ),
        Offer(
            key="dinar",
            name="Dinar pack",
            kind=OfferKind.TOKENS,
            offer_group="ai",
            cycle=Cycle.ONCE,
            price=Decimal("1.250"),
            currency="kwd",
            token_count=10,
        ),
        Offer(
            key="free",
            name="Free plan",
            kind=OfferKind.SUBSCRIPTION,
            offer_group="free",
            cycle=Cycle.MONTHLY,
            price=Decimal(0),
            currency="usd",
        ),
        Offer(
            key="fraction",
            name="Fraction of a cent",
            kind=OfferKind.TOKENS,
            offer_group="ai",
            cycle=Cycle.ONCE,
            price=Decimal("0.005"),
            currency="usd",
            token_count=1,
        ),
    ]


def make_shop(
    client: StripePaymentClient,
    clock: FrozenClock | None = None,
    factory: InMemoryDaoFactory | None = None,
) -> Shop:
    """A shop on ``factory`` (a new in-memory one by default), which should be the one whose
    customer DAO the client was given."""
    factory = factory or InMemoryDaoFactory()
    clock = clock or FrozenClock(START)
    offers = {o.key or "": factory.get_offer_dao().create(o) for o in _catalogue()}
    service = PaymentService(factory, client, clock=clock)
    return Shop(service=service, client=client, clock=clock, offers=offers)


@pytest.fixture
def fake_stripe() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def factory() -> InMemoryDaoFactory:
    return InMemoryDaoFactory()


@pytest.fixture
def client(
    fake_stripe: FakeStripe, clock: FrozenClock, factory: InMemoryDaoFactory
) -> StripePaymentClient:
    return StripePaymentClient(
        API_KEY,
        WEBHOOK_SECRET,
        http_client=fake_stripe,
        max_network_retries=0,
        clock=clock,
        customers=factory.get_customer_dao(),
    )


@pytest.fixture
def shop(client: StripePaymentClient, clock: FrozenClock, factory: InMemoryDaoFactory) -> Shop:
    return make_shop(client, clock, factory)


# -- webhook signatures ----------------------------------------------------------------


@pytest.fixture
def signer() -> Callable[..., str]:
    return sign


def event_body(event_type: str, obj: dict[str, Any], event_id: str = "evt_test_1") -> str:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "livemode": False,
            "api_version": "2024-06-20",
            "data": {"object": obj},
        }
    )


@pytest.fixture
def make_event() -> Callable[..., str]:
    return event_body


@pytest.fixture
def make_shop_for() -> Callable[..., Shop]:
    return make_shop


# -- localstripe -----------------------------------------------------------------------

_SERVER = """
import sys

from aiohttp import web
from localstripe.resources import Store
from localstripe.server import app

# State stays in this process: nothing is read from or written to /tmp/localstripe.pickle.
Store.dump_to_disk = lambda self: None
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"localstripe exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"localstripe did not listen on 127.0.0.1:{port} in time")


@pytest.fixture(scope="session")
def localstripe_server() -> Iterator[str]:
    """The base URL of a localstripe server on loopback, for the whole session."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(port)], stdout=log, stderr=log
        )
        try:
            _wait_for_port(port, process, time.monotonic() + 20)
        except RuntimeError as e:
            _stop(process)
            log.seek(0)
            raise RuntimeError(f"{e}\n{log.read().decode(errors='replace')}") from None
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture
def localstripe(localstripe_server: str) -> str:
    """The localstripe URL, its data emptied first (``DELETE /_config/data``)."""
    request = urllib.request.Request(f"{localstripe_server}/_config/data", method="DELETE")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    return localstripe_server
