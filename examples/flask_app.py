"""A Flask application selling AI tokens with usercredits.

Run it from the repository's root with ``flask --app examples.flask_app run``: Flask calls
:func:`create_app` without a container, which builds one from the environment
(:mod:`examples.wiring`). Tests, and applications with their own wiring, pass their
container.

The views are plain ``def`` and call the synchronous :class:`~usercredits.PaymentService`:
Flask serves each request on a thread of its server, and the service is safe to share
between threads. Answers are the models' ``to_dict()``; errors are answered by one error
handler (:mod:`examples.http_errors`). The user id is part of the path to keep the example
short: a real application takes it from its authentication, and checks that an order or a
hold belongs to the signed-in user.
"""

from __future__ import annotations

import atexit
from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, current_app, request

from examples.http_errors import BAD_WEBHOOK, error_body, http_status
from examples.wiring import container_from_env
from usercredits import (
    InvalidInputError,
    PaymentError,
    PaymentService,
    UserCredits,
    UserCreditsError,
)
from usercredits.containers import UserCreditsContainer

EXTENSION = "usercredits"

credits_api = Blueprint("credits", __name__)


def service() -> PaymentService:
    """The application's service, built by :func:`create_app`."""
    found: PaymentService = current_app.extensions[EXTENSION]
    return found


def json_body() -> dict[str, Any]:
    """The request's JSON object; InvalidInputError (422) for anything else."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInputError("the request body must be a JSON object")
    return body


def required(body: dict[str, Any], name: str) -> Any:
    """A field the request body must have; InvalidInputError (422) when it is missing."""
    if name not in body:
        raise InvalidInputError(f"the request body has no {name!r}")
    return body[name]


@credits_api.get("/users/<user_id>/offers")
def list_offers(user_id: str) -> list[dict[str, Any]]:
    """The offers the user may order now (with every ``tag`` given), unlocked ones included."""
    tags = request.args.getlist("tag") or None
    return [offer.to_dict() for offer in service().load_offers(user_id, tags)]


@credits_api.post("/users/<user_id>/orders")
def create_order(user_id: str) -> tuple[dict[str, Any], int]:
    """A pending order; the browser confirms its payment with ``payment_intent_secret``.
    A free order is paid at once."""
    body = json_body()
    order = service().create_order(required(body, "offer_id"), user_id, body.get("quantity"))
    return order.to_dict(), 201


@credits_api.post("/orders/<order_id>/settle")
def settle_order(order_id: str) -> dict[str, Any]:
    """Called by the browser once the payment is confirmed: the order as settled, also when
    the webhook settled it first."""
    return service().settle(order_id).to_dict()


@credits_api.post("/stripe/webhook")
def stripe_webhook() -> dict[str, Any] | tuple[dict[str, Any], int]:
    """The gateway's events, verified on the raw body exactly as received."""
    payload = request.get_data()
    try:
        result = service().handle_webhook(payload, request.headers.get("Stripe-Signature"))
    except PaymentError as error:  # a bad signature or body: nothing was changed
        return error_body(error, BAD_WEBHOOK), BAD_WEBHOOK
    return result.to_dict()


@credits_api.post("/users/<user_id>/consumptions")
def consume(user_id: str) -> tuple[dict[str, Any], int]:
    """Consume tokens, or answer 402 when the balance is too low (nothing consumed). A retry
    with the same ``Idempotency-Key`` header answers the first line and consumes nothing."""
    body = json_body()
    line = service().consume_tokens(
        user_id,
        required(body, "offer_group"),
        required(body, "count"),
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    return line.to_dict(), 201


@credits_api.get("/users/<user_id>/credits")
def user_credits(user_id: str) -> dict[str, Any]:
    """Everything the user holds: a balance and a window per offer group, the subscriptions."""
    credits = service().load_user_credits(user_id)
    return (credits or UserCredits(user_id=user_id)).to_dict()


@credits_api.get("/users/<user_id>/credits/<offer_group>")
def group_balance(user_id: str, offer_group: str) -> dict[str, Any]:
    """The balance of one group, and what is available to consume (outside holds)."""
    return {
        "offer_group": offer_group,
        "balance": service().remaining_tokens(user_id, offer_group),
        "available": service().available_tokens(user_id, offer_group),
    }


@credits_api.get("/users/<user_id>/grants")
def list_grants(user_id: str) -> list[dict[str, Any]]:
    """The user's grants in burn order: the tokens of each purchase or promotion left."""
    include_ended = request.args.get("include_ended", "false").lower() in ("1", "true")
    grants = service().grants(user_id, request.args.get("offer_group"), include_ended=include_ended)
    return [grant.to_dict() for grant in grants]


@credits_api.get("/users/<user_id>/history")
def history(user_id: str) -> dict[str, Any]:
    """A page of the user's ledger, newest first; ``next`` is the ``before`` of the next page
    (None on the last page)."""
    limit = request.args.get("limit", 50, type=int)
    lines = service().history(
        user_id, request.args.get("offer_group"), limit=limit, before=request.args.get("before")
    )
    page = [line.to_dict() for line in lines]
    return {"lines": page, "next": page[-1]["id"] if len(page) == limit else None}


@credits_api.post("/users/<user_id>/holds")
def reserve(user_id: str) -> tuple[dict[str, Any], int]:
    """Hold tokens before a long job; 402 when fewer are available."""
    body = json_body()
    ttl = body.get("ttl_seconds", 600)
    if type(ttl) is not int:
        raise InvalidInputError(f"ttl_seconds must be an int, got {ttl!r}")
    hold = service().reserve(
        user_id, required(body, "offer_group"), required(body, "count"), ttl=timedelta(seconds=ttl)
    )
    return hold.to_dict(), 201


@credits_api.post("/holds/<hold_id>/capture")
def capture(hold_id: str) -> dict[str, Any]:
    """Consume what the job used (default: all the hold) and free the rest; 409 when the hold
    ended."""
    return service().capture(hold_id, json_body().get("count")).to_dict()


@credits_api.post("/holds/<hold_id>/release")
def release(hold_id: str) -> dict[str, Any]:
    """Free the hold's tokens (the job was abandoned)."""
    return service().release(hold_id).to_dict()


def usercredits_error(error: UserCreditsError) -> tuple[dict[str, Any], int]:
    """The one handler of the library's errors (statuses: examples/http_errors.py)."""
    status = http_status(error)
    return error_body(error, status), status


def create_app(container: UserCreditsContainer | None = None) -> Flask:
    """The application on ``container``'s service, built now. The caller owns the container
    and closes its resources (``container.shutdown_resources()``) when the application
    stops; without one, a container from the environment, closed when the process exits."""
    if container is None:
        container = container_from_env()
        atexit.register(container.shutdown_resources)
    app = Flask(__name__)
    app.extensions[EXTENSION] = container.service()
    app.register_blueprint(credits_api)
    app.register_error_handler(UserCreditsError, usercredits_error)
    return app
