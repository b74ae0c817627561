"""A FastAPI application selling AI tokens with usercredits.

Run it from the repository's root with ``uvicorn examples.fastapi_app:app``: the database and
the payment gateway come from the environment (:mod:`examples.wiring`). Tests, and
applications with their own wiring, call :func:`build_app` with their container.

The endpoints are ``async def`` and await an :class:`~usercredits.aio.AsyncPaymentService`:
each service call (database, payment gateway) runs in the facade's bounded thread pool, so
the event loop never waits on it. Answers are the models' ``to_dict()``; errors are answered
by one exception handler (:mod:`examples.http_errors`). The user id is part of the path to
keep the example short: a real application takes it from its authentication, and checks
that an order or a hold belongs to the signed-in user.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from examples.http_errors import BAD_WEBHOOK, error_body, http_status
from examples.wiring import container_from_env
from usercredits import PaymentError, UserCredits, UserCreditsError
from usercredits.aio import AsyncPaymentService
from usercredits.containers import UserCreditsContainer


class JsonBody(BaseModel):
    """A request body: a JSON object with exactly these fields, numbers as JSON numbers."""

    model_config = ConfigDict(strict=True, extra="forbid")


class OrderRequest(JsonBody):
    offer_id: str
    quantity: int | None = None


class ConsumptionRequest(JsonBody):
    offer_group: str
    count: int


class HoldRequest(JsonBody):
    offer_group: str
    count: int
    ttl_seconds: int = 600


class CaptureRequest(JsonBody):
    count: int | None = None


async def credits_service(request: Request) -> AsyncPaymentService:
    """The application's service, built by the lifespan handler."""
    service: AsyncPaymentService = request.app.state.credits
    return service


Service = Annotated[AsyncPaymentService, Depends(credits_service)]

router = APIRouter()


@router.get("/users/{user_id}/offers")
async def list_offers(
    user_id: str, service: Service, tag: Annotated[list[str] | None, Query()] = None
) -> list[dict[str, Any]]:
    """The offers the user may order now (with every ``tag`` given), unlocked ones included."""
    return [offer.to_dict() for offer in await service.load_offers(user_id, tag)]


@router.post("/users/{user_id}/orders", status_code=201)
async def create_order(user_id: str, request: OrderRequest, service: Service) -> dict[str, Any]:
    """A pending order; the browser confirms its payment with ``payment_intent_secret``.
    A free order is paid at once."""
    order = await service.create_order(request.offer_id, user_id, request.quantity)
    return order.to_dict()


@router.post("/orders/{order_id}/settle")
async def settle_order(order_id: str, service: Service) -> dict[str, Any]:
    """Called by the browser once the payment is confirmed: the order as settled, also when
    the webhook settled it first."""
    return (await service.settle(order_id)).to_dict()


@router.post("/stripe/webhook", response_model=None)
async def stripe_webhook(
    request: Request,
    service: Service,
    stripe_signature: Annotated[str | None, Header()] = None,
) -> dict[str, Any] | JSONResponse:
    """The gateway's events, verified on the raw body exactly as received."""
    payload = await request.body()
    try:
        result = await service.handle_webhook(payload, stripe_signature)
    except PaymentError as error:  # a bad signature or body: nothing was changed
        return JSONResponse(error_body(error, BAD_WEBHOOK), status_code=BAD_WEBHOOK)
    return result.to_dict()


@router.post("/users/{user_id}/consumptions", status_code=201)
async def consume(
    user_id: str,
    request: ConsumptionRequest,
    service: Service,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Consume tokens, or answer 402 when the balance is too low (nothing consumed). A retry
    with the same ``Idempotency-Key`` header answers the first line and consumes nothing."""
    line = await service.consume_tokens(
        user_id, request.offer_group, request.count, idempotency_key=idempotency_key
    )
    return line.to_dict()


@router.get("/users/{user_id}/credits")
async def user_credits(user_id: str, service: Service) -> dict[str, Any]:
    """Everything the user holds: a balance and a window per offer group, the subscriptions."""
    credits = await service.load_user_credits(user_id)
    return (credits or UserCredits(user_id=user_id)).to_dict()


@router.get("/users/{user_id}/credits/{offer_group}")
async def group_balance(user_id: str, offer_group: str, service: Service) -> dict[str, Any]:
    """The balance of one group, and what is available to consume (outside holds)."""
    return {
        "offer_group": offer_group,
        "balance": await service.remaining_tokens(user_id, offer_group),
        "available": await service.available_tokens(user_id, offer_group),
    }


@router.get("/users/{user_id}/grants")
async def list_grants(
    user_id: str,
    service: Service,
    offer_group: str | None = None,
    include_ended: bool = False,
) -> list[dict[str, Any]]:
    """The user's grants in burn order: the tokens of each purchase or promotion left."""
    grants = await service.grants(user_id, offer_group, include_ended=include_ended)
    return [grant.to_dict() for grant in grants]


@router.get("/users/{user_id}/history")
async def history(
    user_id: str,
    service: Service,
    offer_group: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> dict[str, Any]:
    """A page of the user's ledger, newest first; ``next`` is the ``before`` of the next page
    (None on the last page)."""
    lines = await service.history(user_id, offer_group, limit=limit, before=before)
    page = [line.to_dict() for line in lines]
    return {"lines": page, "next": page[-1]["id"] if len(page) == limit else None}


@router.post("/users/{user_id}/holds", status_code=201)
async def reserve(user_id: str, request: HoldRequest, service: Service) -> dict[str, Any]:
    """Hold tokens before a long job; 402 when fewer are available."""
    hold = await service.reserve(
        user_id, request.offer_group, request.count, ttl=timedelta(seconds=request.ttl_seconds)
    )
    return hold.to_dict()


@router.post("/holds/{hold_id}/capture")
async def capture(hold_id: str, request: CaptureRequest, service: Service) -> dict[str, Any]:
    """Consume what the job used (default: all the hold) and free the rest; 409 when the hold
    ended."""
    return (await service.capture(hold_id, request.count)).to_dict()


@router.post("/holds/{hold_id}/release")
async def release(hold_id: str, service: Service) -> dict[str, Any]:
    """Free the hold's tokens (the job was abandoned)."""
    return (await service.release(hold_id)).to_dict()


def build_app(container: UserCreditsContainer, *, max_workers: int | None = None) -> FastAPI:
    """The application on ``container``'s service. The lifespan handler builds the service
    at startup, and at shutdown waits for the calls under way, stops the facade's threads
    and closes the container's resources (database connections)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = AsyncPaymentService(container.service(), max_workers=max_workers)
        app.state.credits = service
        try:
            yield
        finally:
            await service.aclose()
            container.shutdown_resources()

    app = FastAPI(title="AI tokens", lifespan=lifespan)
    app.include_router(router)

    @app.exception_handler(UserCreditsError)
    async def usercredits_error(request: Request, error: UserCreditsError) -> JSONResponse:
        """The one handler of the library's errors (statuses: examples/http_errors.py)."""
        status = http_status(error)
        return JSONResponse(error_body(error, status), status_code=status)

    return app


app = build_app(container_from_env())
