"""The error hierarchy (SPEC §6)."""

from __future__ import annotations

import pytest

from usercredits import (
    AlreadySubscribedError,
    DuplicateEntityError,
    EntityNotFoundError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidOfferError,
    InvalidOrderError,
    InvalidPaymentError,
    PaymentError,
    PaymentErrorCode,
    StorageError,
    UserCreditsError,
)


@pytest.mark.parametrize(
    "error",
    [
        EntityNotFoundError,
        InvalidOrderError,
        InvalidOfferError,
        AlreadySubscribedError,
        InsufficientCreditsError,
        IdempotencyConflictError,
        PaymentError,
        InvalidPaymentError,
        StorageError,
        DuplicateEntityError,
    ],
)
def test_every_error_is_a_user_credits_error(error: type[Exception]) -> None:
    assert issubclass(error, UserCreditsError)


def test_invalid_payment_errors_are_payment_errors_of_code_validation_by_default() -> None:
    error = InvalidPaymentError("nope")
    assert isinstance(error, PaymentError)
    assert (error.code, error.order_id, error.original_error) == (
        PaymentErrorCode.VALIDATION,
        None,
        None,
    )


def test_payment_errors_carry_the_gateways_error() -> None:
    cause = ConnectionError("reset")
    error = InvalidPaymentError(
        "down", code=PaymentErrorCode.GATEWAY, order_id="o1", original_error=cause
    )
    assert (error.message, error.code, error.order_id) == ("down", "gateway", "o1")
    assert error.original_error is cause


def test_payment_error_codes_are_the_specs() -> None:
    assert {c.name for c in PaymentErrorCode} == {
        "AUTHORIZATION",
        "DUPLICATE_ATTEMPT",
        "GATEWAY",
        "VALIDATION",
    }


def test_insufficient_credits_errors_tell_the_balance_and_the_request() -> None:
    error = InsufficientCreditsError("short", balance=2, requested=5)
    assert (error.balance, error.requested, str(error)) == (2, 5, "short")


def test_a_duplicate_entity_is_a_storage_error() -> None:
    assert issubclass(DuplicateEntityError, StorageError)


def test_validation_errors_are_value_errors_and_not_found_a_lookup_error() -> None:
    assert issubclass(InvalidOrderError, ValueError)
    assert issubclass(InvalidOfferError, ValueError)
    assert issubclass(EntityNotFoundError, LookupError)
