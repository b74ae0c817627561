"""usercredits: prepaid user credits for Python back-ends.

Declare offers, take orders, settle payments (Stripe or manual), grant tokens to
offer groups, record consumption, read balances in real time and expire unused
tokens, with storage in your own database (in memory by default, or MongoDB).
"""

from usercredits.clock import FrozenClock, system_clock
from usercredits.dao import (
    DaoFactory,
    OfferDao,
    OrderDao,
    TokenTimetableDao,
    UserCreditsDao,
)
from usercredits.errors import (
    AlreadySubscribedError,
    DuplicateEntityError,
    EntityNotFoundError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidInputError,
    InvalidOfferError,
    InvalidOrderError,
    InvalidPaymentError,
    PaymentError,
    PaymentErrorCode,
    StorageError,
    UserCreditsError,
)
from usercredits.manual import ManualPaymentClient
from usercredits.memory import InMemoryDaoFactory
from usercredits.models import (
    ActivatedOffer,
    AuditReport,
    CombinedOffer,
    CombinedOrder,
    Cycle,
    ExpiryReport,
    ExpiryWarning,
    Grant,
    GrantSource,
    GrantStatus,
    GroupAudit,
    LedgerReason,
    Offer,
    OfferKind,
    Order,
    OrderStatus,
    ReconcileReport,
    Status,
    Subscription,
    TokenTimetable,
    UserCredits,
    WebhookResult,
)
from usercredits.payment import PaymentClient, WebhookEvent, WebhookEventKind
from usercredits.service import PaymentService

__version__ = "0.1.0"

__all__ = [
    "ActivatedOffer",
    "AlreadySubscribedError",
    "AuditReport",
    "CombinedOffer",
    "CombinedOrder",
    "Cycle",
    "DaoFactory",
    "DuplicateEntityError",
    "EntityNotFoundError",
    "ExpiryReport",
    "ExpiryWarning",
    "FrozenClock",
    "Grant",
    "GrantSource",
    "GrantStatus",
    "GroupAudit",
    "IdempotencyConflictError",
    "InMemoryDaoFactory",
    "InsufficientCreditsError",
    "InvalidInputError",
    "InvalidOfferError",
    "InvalidOrderError",
    "InvalidPaymentError",
    "LedgerReason",
    "ManualPaymentClient",
    "Offer",
    "OfferDao",
    "OfferKind",
    "Order",
    "OrderDao",
    "OrderStatus",
    "PaymentClient",
    "PaymentError",
    "PaymentErrorCode",
    "PaymentService",
    "ReconcileReport",
    "Status",
    "StorageError",
    "Subscription",
    "TokenTimetable",
    "TokenTimetableDao",
    "UserCredits",
    "UserCreditsDao",
    "UserCreditsError",
    "WebhookEvent",
    "WebhookEventKind",
    "WebhookResult",
    "__version__",
    "system_clock",
]
