"""The FastAPI example (examples/fastapi_app.py) through FastAPI's test client."""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from dependency_injector import providers
from fastapi.routing import APIRoute

from examples.fastapi_app import build_app, router
from usercredits import InMemoryDaoFactory
from usercredits.aio import AsyncPaymentService
from usercredits.containers import UserCreditsContainer

from .app_contract import Answer, AppContract, Http

with warnings.catch_warnings():
    # Starlette's test client warns that it will move from httpx to httpx2.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


class FastApiHttp:
    def __init__(self, client: TestClient):
        self.client = client

    def get(self, path: str) -> Answer:
        response = self.client.get(path)
        return Answer(response.status_code, response.json())

    def post(
        self,
        path: str,
        json: Any = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        response = self.client.post(path, json=json, content=content, headers=headers)
        return Answer(response.status_code, response.json())


class TestFastApiApp(AppContract):
    @pytest.fixture
    def http(self, container: UserCreditsContainer) -> Iterator[Http]:
        with TestClient(build_app(container)) as client:
            yield FastApiHttp(client)


def test_every_endpoint_is_a_coroutine() -> None:
    routes = [route for route in router.routes if isinstance(route, APIRoute)]

    assert len(routes) == 12
    assert all(inspect.iscoroutinefunction(route.endpoint) for route in routes)


def test_a_body_with_an_unknown_field_is_422(container: UserCreditsContainer) -> None:
    with TestClient(build_app(container)) as client:
        answer = client.post("/users/alice/orders", json={"offer_id": "x", "price": "0"})

    assert answer.status_code == 422


def test_shutdown_stops_the_facade_and_closes_the_containers_resources() -> None:
    closed: list[InMemoryDaoFactory] = []

    def open_storage() -> Iterator[InMemoryDaoFactory]:
        storage = InMemoryDaoFactory()
        yield storage
        closed.append(storage)

    container = UserCreditsContainer(dao_factory=providers.Resource(open_storage))
    app = build_app(container)
    with TestClient(app) as client:
        client.get("/users/alice/offers")
        service: AsyncPaymentService = app.state.credits

    assert closed == [service.get_dao_factory()]
    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(service.load_offers("alice"))
