"""The HTTP answer to each error of usercredits, shared by the example applications.

Every error the library raises on purpose is a :class:`~usercredits.UserCreditsError`, so
one exception handler per application answers them all with :func:`http_status` and
:func:`error_body`.
"""

from __future__ import annotations

import logging
from typing import Any

from usercredits import (
    AlreadySubscribedError,
    EntityNotFoundError,
    HoldExpiredError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidInputError,
    InvalidPaymentError,
    PaymentError,
    PaymentErrorCode,
    StorageError,
    UserCreditsError,
)

logger = logging.getLogger(__name__)

HTTP_STATUS: tuple[tuple[type[UserCreditsError], int], ...] = (
    (InsufficientCreditsError, 402),
    (EntityNotFoundError, 404),
    (AlreadySubscribedError, 409),
    (IdempotencyConflictError, 409),
    (HoldExpiredError, 409),
    (InvalidPaymentError, 409),
    (InvalidInputError, 422),
    (PaymentError, 502),
    (StorageError, 503),
)
"""The status of each error type; the first type the error is an instance of wins."""

HIDDEN = {
    502: "the payment gateway failed, try again later",
    503: "the storage is unavailable, try again later",
}
"""The message shown instead of a 5xx error's own."""

BAD_WEBHOOK = 400
"""The status of a PaymentError raised by ``handle_webhook``: a bad signature or body."""


def http_status(error: UserCreditsError) -> int:
    """The status answering ``error``: :data:`HTTP_STATUS`, except an InvalidPaymentError
    with code GATEWAY (the gateway answered nonsense), 502; 500 for any other error."""
    if isinstance(error, InvalidPaymentError) and error.code is PaymentErrorCode.GATEWAY:
        return 502
    return next((status for kind, status in HTTP_STATUS if isinstance(error, kind)), 500)


def error_body(error: UserCreditsError, status: int) -> dict[str, Any]:
    """The JSON body answering ``error``: its type and message, the payment error's code,
    the balance and request of a refused consumption. The message of a 5xx error is not
    shown (it may name hosts or tables): it is logged."""
    body: dict[str, Any] = {"error": type(error).__name__}
    if status >= 500:
        logger.error("answering %s to %r", status, error, exc_info=error)
        body["message"] = HIDDEN.get(status, "internal error")
        return body
    body["message"] = str(error)
    if isinstance(error, InvalidPaymentError):
        body["code"] = error.code.value
    if isinstance(error, InsufficientCreditsError):
        body["balance"] = error.balance
        body["requested"] = error.requested
    return body
