"""Domain model: offers, orders, the token ledger and a user's credits.

Plain keyword-only dataclasses. Enum fields accept their string values, money is
:class:`~decimal.Decimal` (never ``float``), ids are opaque (``str`` in memory,
``ObjectId`` in Mongo) and user ids are the application's own, kept as given.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeAlias

from usercredits.errors import InvalidOfferError, InvalidPaymentError, PaymentErrorCode

EntityId: TypeAlias = Any
"""An entity id: ``str`` in memory, ``bson.ObjectId`` in Mongo; methods also take its ``str()``."""

UserId: TypeAlias = Any
"""The application's own user id (``str``, ``int``, ``UUID``, ``ObjectId``...), stored as given."""

DEFAULT_PRIORITY = 50
"""The priority of a grant when none is given: lower priorities are drawn first."""


class Cycle(enum.StrEnum):
    """How long a purchase stays valid (per unit of quantity)."""

    ONCE = "once"
    DAILY = "daily"
    WEEKLY = "weekly"
    BI_WEEKLY = "bi-weekly"
    MONTHLY = "monthly"
    TRIMESTER = "trimester"
    SEMESTER = "semester"
    YEARLY = "yearly"
    CUSTOM = "custom"


class Status(enum.StrEnum):
    """The state of an order (and of the subscriptions it produced)."""

    PENDING = "pending"
    PAID = "paid"
    REFUSED = "refused"
    ERROR = "error"
    INCONSISTENT = "inconsistent"
    PARTIAL = "partial"
    EXPIRED = "expired"
    REFUNDED = "refunded"


class OfferKind(enum.StrEnum):
    """What an offer sells."""

    SUBSCRIPTION = "subscription"
    TOKENS = "tokens"
    EXPERTISE = "expertise"


class LedgerReason(enum.StrEnum):
    """Why a ledger line moved tokens."""

    PURCHASE = "purchase"
    CONSUMPTION = "consumption"
    EXPIRY = "expiry"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"
    GRANT = "grant"
    VOID = "void"
    HOLD = "hold"
    RELEASE = "release"


class GrantSource(enum.StrEnum):
    """Where a grant of tokens comes from."""

    PURCHASE = "purchase"
    PROMOTIONAL = "promotional"
    ADJUSTMENT = "adjustment"


class HoldStatus(enum.StrEnum):
    """The state of a hold: active until captured, released, or past its ``expires_at``."""

    ACTIVE = "active"
    CAPTURED = "captured"
    RELEASED = "released"
    EXPIRED = "expired"


class GrantStatus(enum.StrEnum):
    """The state of a grant: live until it expires, is refunded or is voided."""

    LIVE = "live"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    VOIDED = "voided"


def _enum(kind: type[enum.StrEnum], value: Any, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidOfferError(f"unknown {what} {value!r} (expected one of: {allowed})") from None


def _optional_cycle(value: Any) -> Cycle | None:
    return None if value is None else _enum(Cycle, value, "cycle")


INT_RANGE = range(-(2**63), 2**63)
"""The integers every backend stores exactly (64-bit signed): counts beyond are refused."""


def is_storable_int(value: Any) -> bool:
    """Whether ``value`` is an int (not a bool) every backend can store."""
    return isinstance(value, int) and not isinstance(value, bool) and value in INT_RANGE


_is_int = is_storable_int


def _check_cycle(cycle: Cycle | None, custom_cycle: Any, owner: str) -> None:
    if cycle is Cycle.CUSTOM:
        if not _is_int(custom_cycle) or custom_cycle <= 0:
            raise InvalidOfferError(
                f"{owner}: cycle 'custom' needs custom_cycle, a positive number of seconds "
                f"(got {custom_cycle!r})"
            )
    elif custom_cycle is not None:
        raise InvalidOfferError(f"{owner}: custom_cycle is only allowed with cycle 'custom'")


def to_decimal(value: Any, what: str = "amount") -> Decimal:
    """Convert an exact amount (Decimal, int or numeric string) to Decimal; floats are refused."""
    if isinstance(value, bool | float):
        raise InvalidOfferError(
            f"{what} must be a Decimal, an int or a numeric string, not {value!r}"
        )
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | str):
        try:
            result = Decimal(value)
        except InvalidOperation:
            raise InvalidOfferError(f"{what} {value!r} is not a number") from None
    else:
        raise InvalidOfferError(f"{what} must be a Decimal, not {type(value).__name__}")
    if not result.is_finite():
        raise InvalidOfferError(f"{what} must be finite, got {value!r}")
    return result


def to_json_value(value: Any, *, is_id: bool = False) -> Any:
    """``value`` ready for JSON: enums as their values, Decimal as str (keeping its exponent),
    datetimes in ISO 8601 UTC, models as dicts, ids (ObjectId, UUID...) as str."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Model):
        return value.to_dict()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo is None else value.astimezone(UTC)).isoformat()
    if isinstance(value, int):
        return str(value) if is_id else value
    if isinstance(value, str | float):
        return value
    if isinstance(value, list | tuple):
        return [to_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_json_value(item) for key, item in value.items()}
    return str(value)


class Model:
    """The base of the models: :meth:`to_dict` makes any of them ready for JSON."""

    def to_dict(self) -> dict[str, Any]:
        """The model as a dict of JSON values: ids as str (a user id that is an int stays
        one), Decimal as str keeping its exponent (``"9.90"``), datetimes as ISO 8601 UTC
        strings, enums as their values, nested models as dicts."""
        return {
            f.name: to_json_value(getattr(self, f.name), is_id=_is_id_field(f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }


def _is_id_field(name: str) -> bool:
    """Whether a field holds an entity id (a user id is the application's own)."""
    return name == "id" or (name.endswith("_id") and name != "user_id")


@dataclass(kw_only=True)
class CombinedOffer(Model):
    """One item of a bundle: ``quantity`` units of another offer, its tokens to ``offer_group``."""

    offer_id: EntityId
    offer_group: str
    quantity: int = 1
    cycle: Cycle | None = None
    custom_cycle: int | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.quantity) or self.quantity < 1:
            raise InvalidOfferError(
                f"bundle item {self.offer_id!r}: quantity must be an int >= 1, "
                f"got {self.quantity!r}"
            )
        if not isinstance(self.offer_group, str) or not self.offer_group:
            raise InvalidOfferError(
                f"bundle item {self.offer_id!r}: offer_group must be a non-empty str"
            )
        self.cycle = _optional_cycle(self.cycle)
        if self.cycle is not None:
            _check_cycle(self.cycle, self.custom_cycle, f"bundle item {self.offer_id!r}")


@dataclass(kw_only=True)
class Offer(Model):
    """A priced bundle of tokens and/or a validity period that users can order."""

    name: str
    kind: OfferKind
    offer_group: str
    cycle: Cycle
    price: Decimal
    id: EntityId = None
    key: str | None = None
    custom_cycle: int | None = None
    currency: str | None = None
    token_count: int | None = None
    quantity_limit: int | None = None
    append_date: bool = False
    tags: list[str] = field(default_factory=list)
    unlocked_by: list[str] = field(default_factory=list)
    has_dependent_offers: bool = False
    overriding_key: str | None = None
    weight: int = 0
    popular: int | None = None
    combined_items: list[CombinedOffer] = field(default_factory=list)
    priority: int = DEFAULT_PRIORITY
    """The priority of the grants this offer's orders make (lower is drawn first)."""

    def __post_init__(self) -> None:
        owner = f"offer {self.key or self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise InvalidOfferError(f"{owner}: name must be a non-empty str")
        if not isinstance(self.offer_group, str) or not self.offer_group:
            raise InvalidOfferError(f"{owner}: offer_group must be a non-empty str")
        self.kind = _enum(OfferKind, self.kind, "offer kind")
        self.cycle = _enum(Cycle, self.cycle, "cycle")
        _check_cycle(self.cycle, self.custom_cycle, owner)
        self.price = to_decimal(self.price, f"{owner}: price")
        if self.price < 0:
            raise InvalidOfferError(f"{owner}: price must not be negative, got {self.price}")
        if self.currency is not None:
            if (
                not isinstance(self.currency, str)
                or len(self.currency) != 3
                or not self.currency.isalpha()
            ):
                raise InvalidOfferError(
                    f"{owner}: currency must be an ISO 4217 code, got {self.currency!r}"
                )
            self.currency = self.currency.lower()
        if self.token_count is not None and (not _is_int(self.token_count) or self.token_count < 0):
            raise InvalidOfferError(
                f"{owner}: token_count must be an int >= 0, got {self.token_count!r}"
            )
        if self.quantity_limit is not None and (
            not _is_int(self.quantity_limit) or self.quantity_limit < 1
        ):
            raise InvalidOfferError(
                f"{owner}: quantity_limit must be an int >= 1, got {self.quantity_limit!r}"
            )
        if not _is_int(self.weight):
            raise InvalidOfferError(f"{owner}: weight must be an int, got {self.weight!r}")
        if not _is_int(self.priority):
            raise InvalidOfferError(f"{owner}: priority must be an int, got {self.priority!r}")
        if self.popular is not None and not _is_int(self.popular):
            raise InvalidOfferError(f"{owner}: popular must be an int, got {self.popular!r}")
        for name in ("tags", "unlocked_by"):
            values = getattr(self, name)
            if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                raise InvalidOfferError(f"{owner}: {name} must be a list of str, got {values!r}")
            setattr(self, name, list(values))
        for item in self.combined_items:
            if not isinstance(item, CombinedOffer):
                raise InvalidOfferError(
                    f"{owner}: combined_items must hold CombinedOffer, got {item!r}"
                )

    def as_unlocking_offers(self, offers: Iterable[Offer], reset: bool = False) -> list[str]:
        """Make this offer unlocked by buying any of ``offers``; marks them as having dependents."""
        offers = list(offers)
        for offer in offers:
            offer.has_dependent_offers = True
        return self.as_unlocking_offer_groups((o.offer_group for o in offers), reset=reset)

    def as_unlocking_offer_groups(self, groups: Iterable[str], reset: bool = False) -> list[str]:
        """Make a live purchase in any of ``groups`` unlock this offer; returns ``unlocked_by``."""
        merged = [] if reset else list(self.unlocked_by)
        for group in groups:
            if group not in merged:
                merged.append(group)
        self.unlocked_by = merged
        return self.unlocked_by


@dataclass(kw_only=True)
class OrderStatus(Model):
    """One entry of an order's history."""

    date: datetime | None = None
    status: Status = Status.PENDING
    message: str = ""
    payload: str | None = None

    def __post_init__(self) -> None:
        self.status = Status(self.status)


@dataclass(kw_only=True)
class CombinedOrder(Model):
    """One item of a bundle order, with the tokens and window it grants."""

    offer_id: EntityId = None
    offer_group: str = ""
    quantity: int = 1
    cycle: Cycle | None = None
    custom_cycle: int | None = None
    token_count: int = 0
    starts: datetime | None = None
    expires: datetime | None = None
    offer_name: str = ""
    append_date: bool = False
    """Whether the item's window follows the latest window of its group (copied from its offer
    when the order is created, so editing the offer never changes how the order settles)."""
    priority: int = DEFAULT_PRIORITY

    def __post_init__(self) -> None:
        self.cycle = None if self.cycle is None else Cycle(self.cycle)


@dataclass(kw_only=True)
class Order(Model):
    """A user's order of an offer; ``token_count`` is the total it grants once paid."""

    id: EntityId = None
    user_id: UserId = None
    offer_id: EntityId = None
    offer_group: str = ""
    status: Status = Status.PENDING
    quantity: int = 1
    total: Decimal = Decimal(0)
    currency: str | None = None
    cycle: Cycle = Cycle.ONCE
    custom_cycle: int | None = None
    token_count: int = 0
    starts: datetime | None = None
    expires: datetime | None = None
    combined_items: list[CombinedOrder] = field(default_factory=list)
    history: list[OrderStatus] = field(default_factory=list)
    payment_intent_id: str | None = None
    payment_intent_secret: str | None = None
    parent_id: EntityId = None
    country: str | None = None
    tax_rate: Decimal | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    offer_name: str = ""
    append_date: bool = False
    """Whether the window follows the latest window of the group (copied from the offer)."""
    priority: int = DEFAULT_PRIORITY
    """The priority of the grant the order makes (copied from the offer)."""
    item_index: int | None = None
    """For a child order: the position of its item in the bundle order's ``combined_items``."""
    exclusive: bool = False
    """Set on free orders: a user holds at most one paid exclusive order of an offer."""
    refunded_amount: Decimal = Decimal(0)
    """How much of ``total`` has been refunded so far (partial refunds add up)."""
    in_progress: bool = False
    """True from a change of status until every effect of it (grants, revocations, child
    orders, windows) is applied; a retry of the call, the expiry routine or ``reconcile``
    completes it."""

    def __post_init__(self) -> None:
        self.status = Status(self.status)
        self.cycle = Cycle(self.cycle)
        self.refunded_amount = to_decimal(self.refunded_amount, "refunded_amount")

    # -- life cycle: which transitions the order allows ------------------------------------

    @property
    def is_child(self) -> bool:
        """Whether the order is an item of a bundle order, paid with it."""
        return self.parent_id is not None

    def payable(self) -> bool:
        """Whether a payment may settle the order (a new intent, or a reported success)."""
        return self.status in PAYABLE

    def refundable(self) -> bool:
        """Whether the order's payment may be refunded."""
        return self.status in REFUNDABLE

    def check_payable(self) -> None:
        """Raise InvalidPaymentError unless the order may be paid or settled: DUPLICATE_ATTEMPT
        for a paid order whose settlement is complete, VALIDATION for an expired, refunded or
        inconsistent one."""
        if self.status is Status.PAID:
            raise InvalidPaymentError(
                f"order {self.id!r} is already paid",
                code=PaymentErrorCode.DUPLICATE_ATTEMPT,
                order_id=self.id,
            )
        if not self.payable():
            raise InvalidPaymentError(
                f"order {self.id!r} is {self.status}; it cannot be paid or settled",
                code=PaymentErrorCode.VALIDATION,
                order_id=self.id,
            )

    @property
    def refundable_amount(self) -> Decimal:
        """What is left to refund of the order's total."""
        return self.total - self.refunded_amount

    def check_refundable(self) -> None:
        """Raise InvalidPaymentError unless the order may be refunded: DUPLICATE_ATTEMPT for a
        refunded order, VALIDATION for a bundle item or an order never paid."""
        if self.is_child:
            raise InvalidPaymentError(
                "refund the bundle order, not one of its items", order_id=self.id
            )
        if self.status is Status.REFUNDED:
            raise InvalidPaymentError(
                f"order {self.id!r} is already refunded",
                code=PaymentErrorCode.DUPLICATE_ATTEMPT,
                order_id=self.id,
            )
        if not self.refundable():
            raise InvalidPaymentError(
                f"order {self.id!r} is {self.status}; only paid orders can be refunded",
                order_id=self.id,
            )


PAYABLE = frozenset({Status.PENDING, Status.REFUSED, Status.ERROR})
"""Statuses from which a payment may settle an order."""
LIVE = frozenset({Status.PAID, Status.PARTIAL})
"""Statuses of an order whose window and tokens stand (partially refunded ones included)."""
REFUNDABLE = frozenset({Status.PAID, Status.PARTIAL, Status.EXPIRED})
"""Statuses from which an order may be refunded."""
OPEN = frozenset({Status.PENDING, Status.REFUSED, Status.ERROR, Status.INCONSISTENT})
"""Statuses of an order never paid: a refund reported by the gateway closes it as refunded."""


@dataclass(kw_only=True)
class Subscription(Model):
    """The summary of one order (or bundle item) kept in a user's credits."""

    offer_id: EntityId = None
    order_id: EntityId = None
    name: str = ""
    offer_group: str = ""
    cycle: Cycle = Cycle.ONCE
    custom_cycle: int | None = None
    quantity: int = 1
    status: Status = Status.PENDING
    starts: datetime | None = None
    expires: datetime | None = None
    tokens: int = 0
    total: Decimal = Decimal(0)
    currency: str | None = None

    def __post_init__(self) -> None:
        self.status = Status(self.status)
        self.cycle = Cycle(self.cycle)


@dataclass(kw_only=True)
class ActivatedOffer(Model):
    """A user's standing in one offer group: its window and its current token balance."""

    offer_group: str = ""
    starts: datetime | None = None
    expires: datetime | None = None
    tokens: int = 0


@dataclass(kw_only=True)
class UserCredits(Model):
    """Everything a user holds: one :class:`ActivatedOffer` per group and the subscriptions."""

    id: EntityId = None
    user_id: UserId = None
    offers: list[ActivatedOffer] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)

    def offer(self, offer_group: str) -> ActivatedOffer | None:
        """The user's standing in ``offer_group``, None when the user has none."""
        return next((o for o in self.offers if o.offer_group == offer_group), None)

    def balance(self, offer_group: str) -> int:
        """The token balance of ``offer_group`` (0 when the user has no such group)."""
        offer = self.offer(offer_group)
        return 0 if offer is None else offer.tokens


@dataclass(kw_only=True)
class TokenTimetable(Model):
    """One ledger line: ``tokens`` added (grant) or removed (consumption, expiry, refund)."""

    id: EntityId = None
    user_id: UserId = None
    offer_group: str = ""
    tokens: int = 0
    created_at: datetime | None = None
    order_id: EntityId = None
    reason: LedgerReason = LedgerReason.CONSUMPTION
    idempotency_key: str | None = None
    """The caller's key (consumptions, direct grants): unique per user."""
    expires: datetime | None = None
    """For a line that makes a grant: when the grant expires (None: never)."""
    seq: int = 0
    """The line's position in its account (user, offer group): 1, 2, 3... unique per account.
    Appending the line with the next number is what commits a change of the account."""
    grant_id: str | None = None
    """The grant the line makes (positive lines) or takes tokens back from (expiry, refund,
    void lines)."""
    priority: int | None = None
    """For a line that makes a grant: the grant's priority (lower is drawn first)."""
    operation_key: str | None = None
    """The library's own key for an operation done once per user (``purchase:<order id>``...):
    unique per user, so a retried operation never writes its line twice."""
    note: str | None = None
    """Free text recorded with the line (a promotion's reason...)."""
    hold_id: str | None = None
    """The hold a capture or release line closes."""
    held: int = 0
    """For a hold line: the tokens it reserves (its ``expires`` is the hold's end)."""

    def __post_init__(self) -> None:
        if type(self.reason) is not LedgerReason:
            self.reason = LedgerReason(self.reason)


@dataclass(kw_only=True)
class Hold(Model):
    """Tokens reserved before a long job: they cannot be consumed by others until the hold
    is captured (consumed, up to what the job used) or released, or ends at ``expires_at``."""

    id: str = ""
    user_id: UserId = None
    offer_group: str = ""
    tokens: int = 0
    expires_at: datetime | None = None
    status: HoldStatus = HoldStatus.ACTIVE

    def __post_init__(self) -> None:
        self.status = HoldStatus(self.status)


@dataclass(kw_only=True)
class Grant(Model):
    """Tokens granted to a user's offer group, by an order or directly, drawn in burn order:
    lowest ``priority`` first, then the soonest ``expires`` (never-expiring last), then the
    oldest. ``remaining`` is what the grant still holds."""

    id: str = ""
    user_id: UserId = None
    offer_group: str = ""
    order_id: EntityId = None
    source: GrantSource = GrantSource.PURCHASE
    tokens: int = 0
    remaining: int = 0
    priority: int = DEFAULT_PRIORITY
    starts: datetime | None = None
    expires: datetime | None = None
    status: GrantStatus = GrantStatus.LIVE

    def __post_init__(self) -> None:
        self.source = GrantSource(self.source)
        self.status = GrantStatus(self.status)


@dataclass(kw_only=True)
class ExpiryWarning(Model):
    """A warning of the expiry routine: a group ``"expiring"`` soon, a grant's
    ``"tokens_expiring"`` soon, or a group with a ``"low_balance"``."""

    offer_group: str
    reason: str
    expires: datetime | None = None
    tokens: int = 0
    grant_id: str | None = None
    """Set on ``"tokens_expiring"`` warnings: the grant whose tokens expire."""


@dataclass(kw_only=True)
class ExpiryReport(Model):
    """What one run of ``check_for_expired_orders`` did for a user."""

    user_id: UserId = None
    expired_orders: list[Order] = field(default_factory=list)
    removed_tokens: dict[str, int] = field(default_factory=dict)
    expired: list[ActivatedOffer] = field(default_factory=list)
    warnings: list[ExpiryWarning] = field(default_factory=list)


@dataclass(kw_only=True)
class WebhookResult(Model):
    """What ``handle_webhook`` did with one gateway event."""

    event_id: str
    event_type: str
    handled: bool = False
    duplicate: bool = False
    order: Order | None = None
    message: str = ""


@dataclass(kw_only=True)
class ReconcileReport(Model):
    """What ``reconcile`` completed for a user: the orders whose interrupted operation it
    finished and the offer groups whose derived state it brought up to date."""

    user_id: UserId = None
    completed_orders: list[EntityId] = field(default_factory=list)
    repaired_groups: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class GroupAudit(Model):
    """One offer group checked against its ledger: ``ok`` when
    ``balance == ledger_sum == live_remainders - debt``."""

    offer_group: str
    balance: int
    ledger_sum: int
    live_remainders: int
    debt: int
    ok: bool


@dataclass(kw_only=True)
class AuditReport(Model):
    """The audit of one user's groups; ``ok`` when every group agrees with its ledger."""

    user_id: UserId = None
    ok: bool = True
    groups: list[GroupAudit] = field(default_factory=list)


@dataclass(kw_only=True)
class Customer(Model):
    """A user's customer record at a payment processor (one per user and per e-mail)."""

    id: EntityId = None
    user_id: UserId = None
    email: str = ""
    processor: str = ""
    customer_id: str = ""
    created_at: datetime | None = None


@dataclass(kw_only=True)
class WebhookEventRecord(Model):
    """A verified gateway event as received: stored once by its ``id`` (the gateway's)."""

    id: str = ""
    type: str = ""
    created: datetime | None = None
    """When the gateway created the event."""
    received_at: datetime | None = None
    payload: str | None = None
    order_id: EntityId = None
    handled: bool = False
    """Whether its processing finished (applied, found applied already, or ignored)."""
    message: str = ""
