"""The error hierarchy of usercredits.

Every error the library raises on purpose derives from :class:`UserCreditsError`.
Backends translate their driver's failures into :class:`StorageError` (with the
driver's exception chained as ``__cause__``); payment clients translate gateway
and network failures into :class:`PaymentError` carrying the original error.
"""

from __future__ import annotations

import enum


class UserCreditsError(Exception):
    """Base class of every error raised by usercredits."""


class InvalidInputError(UserCreditsError, ValueError):
    """An argument of a call is not valid (a count, a group, a key, a date...); nothing was
    stored. Also a ``ValueError``."""


class EntityNotFoundError(UserCreditsError, LookupError):
    """An offer, order or user credits record that does not exist was referenced."""


class InvalidOrderError(InvalidInputError):
    """An order cannot be created as asked (quantity, currency, start date...)."""


class OfferNotAvailableError(InvalidOrderError):
    """The offer is not for sale to this user: it is unlocked by a purchase the user lacks."""


class HoldExpiredError(UserCreditsError):
    """The hold is no longer active: it reached its ``expires_at``, or was released."""


class InvalidOfferError(InvalidInputError):
    """An offer (or a bundle item) is malformed: unknown cycle, bad price, missing field..."""


class AlreadySubscribedError(UserCreditsError):
    """The user already holds a paid order that excludes a new one."""


class InsufficientCreditsError(UserCreditsError):
    """A safe consumption was refused because the balance would go below zero."""

    def __init__(self, message: str, *, balance: int | None = None, requested: int | None = None):
        super().__init__(message)
        self.balance = balance
        self.requested = requested


class IdempotencyConflictError(UserCreditsError):
    """An idempotency key was reused for a different consumption (group or count)."""


class StorageError(UserCreditsError):
    """A storage backend failed; the backend's own error is chained as ``__cause__``."""


class DuplicateEntityError(StorageError):
    """A create would break a uniqueness rule of the storage (one per user, per key...)."""


class PaymentErrorCode(enum.StrEnum):
    """Why a payment operation was rejected."""

    AUTHORIZATION = "authorization"
    DUPLICATE_ATTEMPT = "duplicate_attempt"
    GATEWAY = "gateway"
    VALIDATION = "validation"


class PaymentError(UserCreditsError):
    """A payment gateway or webhook failure; ``original_error`` keeps the gateway's error."""

    def __init__(self, message: str, original_error: BaseException | None = None):
        super().__init__(message)
        self.message = message
        self.original_error = original_error


class InvalidPaymentError(PaymentError):
    """A payment operation is not allowed in the order's current state."""

    def __init__(
        self,
        message: str,
        code: PaymentErrorCode = PaymentErrorCode.VALIDATION,
        order_id: object = None,
        original_error: BaseException | None = None,
    ):
        super().__init__(message, original_error)
        self.code = code
        self.order_id = order_id
