"""The HTTP status of each error of usercredits (examples/http_errors.py)."""

from __future__ import annotations

import pytest

from examples.http_errors import error_body, http_status
from usercredits import (
    AlreadySubscribedError,
    DuplicateEntityError,
    EntityNotFoundError,
    HoldExpiredError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidInputError,
    InvalidOfferError,
    InvalidOrderError,
    InvalidPaymentError,
    OfferNotAvailableError,
    PaymentError,
    PaymentErrorCode,
    StorageError,
    UserCreditsError,
)

STATUSES = [
    (InsufficientCreditsError("too few"), 402),
    (EntityNotFoundError("no such order"), 404),
    (AlreadySubscribedError("free plan held"), 409),
    (IdempotencyConflictError("key reused"), 409),
    (HoldExpiredError("hold ended"), 409),
    (InvalidPaymentError("paid", code=PaymentErrorCode.DUPLICATE_ATTEMPT), 409),
    (InvalidPaymentError("refunded", code=PaymentErrorCode.VALIDATION), 409),
    (InvalidPaymentError("odd status", code=PaymentErrorCode.GATEWAY), 502),
    (InvalidInputError("count 0"), 422),
    (InvalidOrderError("quantity 0"), 422),
    (InvalidOfferError("bad cycle"), 422),
    (OfferNotAvailableError("locked"), 422),
    (PaymentError("gateway down"), 502),
    (StorageError("database down"), 503),
    (DuplicateEntityError("unique index"), 503),
    (UserCreditsError("anything else"), 500),
]


@pytest.mark.parametrize(
    ("error", "status"), STATUSES, ids=[f"{type(e).__name__}-{s}" for e, s in STATUSES]
)
def test_each_error_has_its_status(error: UserCreditsError, status: int) -> None:
    assert http_status(error) == status


def test_a_4xx_body_shows_the_message_and_the_details() -> None:
    error = InsufficientCreditsError("user 'a' has 3 tokens", balance=3, requested=5)

    assert error_body(error, 402) == {
        "error": "InsufficientCreditsError",
        "message": "user 'a' has 3 tokens",
        "balance": 3,
        "requested": 5,
    }


def test_a_payment_conflict_body_has_its_code() -> None:
    error = InvalidPaymentError("order paid", code=PaymentErrorCode.DUPLICATE_ATTEMPT)

    assert error_body(error, 409)["code"] == "duplicate_attempt"


def test_a_5xx_body_hides_the_message() -> None:
    body = error_body(StorageError("cannot reach db.internal:5432 as admin"), 503)

    assert "db.internal" not in body["message"]
