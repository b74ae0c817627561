"""The Flask example (examples/flask_app.py) through Flask's test client."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from examples.flask_app import create_app
from usercredits.containers import UserCreditsContainer

from .app_contract import Answer, AppContract, Http


class FlaskHttp:
    def __init__(self, client: FlaskClient):
        self.client = client

    def get(self, path: str) -> Answer:
        response = self.client.get(path)
        return Answer(response.status_code, response.get_json())

    def post(
        self,
        path: str,
        json: Any = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        if json is not None:
            response = self.client.post(path, json=json, headers=headers)
        else:
            response = self.client.post(path, data=content, headers=headers)
        return Answer(response.status_code, response.get_json())


class TestFlaskApp(AppContract):
    @pytest.fixture
    def http(self, container: UserCreditsContainer) -> Http:
        return FlaskHttp(create_app(container).test_client())


def test_a_body_that_is_not_a_json_object_is_422(container: UserCreditsContainer) -> None:
    client = create_app(container).test_client()

    answer = client.post("/users/alice/orders", json=["offer"])

    assert answer.status_code == 422
    assert answer.get_json()["error"] == "InvalidInputError"


def test_a_body_without_a_required_field_is_422(container: UserCreditsContainer) -> None:
    client = create_app(container).test_client()

    answer = client.post("/users/alice/consumptions", json={"offer_group": "ai-tokens"})

    assert answer.status_code == 422
    assert answer.get_json()["message"] == "the request body has no 'count'"


def test_without_a_container_the_app_is_built_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USERCREDITS_DB", "memory://")
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)

    answer = create_app().test_client().get("/users/alice/offers")

    assert (answer.status_code, answer.get_json()) == (200, [])
