"""The grant model: what an account's ledger lines add up to.

An *account* is one user's offer group. Its ledger lines, numbered 1, 2, 3...
(``seq``), fold into a :class:`Snapshot`: the live grants with what each still
holds, the debt, and the active holds. The fold is pure and total:

* a positive line makes a grant (``grant_id``), which first repays debt;
* a consumption draws from the live grants in *burn order* -- lowest
  ``priority`` first, then the soonest ``expires`` (never-expiring last), then
  the oldest -- and what no grant covers becomes debt;
* an expiry, refund or void line takes its tokens from the grant it names;
* a grant holding nothing leaves the snapshot: it can never hold anything again;
* a hold line reserves tokens until its ``expires``; a capture (a consumption naming
  the hold) or a release line ends it, and so does any line dated after its end.

So whatever the lines, ``snapshot.balance == sum(line.tokens)`` and equals the
live remainders minus the debt. The services decide each line from the snapshot
of the line before it (see :mod:`usercredits.ledger`), so an expiry removes
exactly what its grant still held.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from usercredits.clock import from_iso, to_iso
from usercredits.models import DEFAULT_PRIORITY, GrantSource, LedgerReason, TokenTimetable

SOURCES = {
    LedgerReason.PURCHASE: GrantSource.PURCHASE,
    LedgerReason.GRANT: GrantSource.PROMOTIONAL,
    LedgerReason.ADJUSTMENT: GrantSource.ADJUSTMENT,
}
"""The source of the grant a positive line makes, by the line's reason."""
REASONS = {source: reason for reason, source in SOURCES.items()}
"""The reason of the line that makes a grant of a source."""
TAKING = frozenset({LedgerReason.EXPIRY, LedgerReason.REFUND, LedgerReason.VOID})
"""Reasons of the lines that take tokens back from one grant."""


class LiveGrant(NamedTuple):
    """A grant that still holds tokens."""

    grant_id: str
    order_id: str | None
    source: GrantSource
    tokens: int
    remaining: int
    priority: int
    starts: datetime | None
    expires: datetime | None
    seq: int
    taken: int = 0
    """What lines taking from this grant (partial refunds) took so far."""

    def burn_key(self) -> tuple[int, bool, datetime | None, int]:
        """Sorts grants in burn order."""
        return (self.priority, self.expires is None, self.expires, self.seq)


class HeldTokens(NamedTuple):
    """An active hold: tokens reserved until ``expires_at``."""

    hold_id: str
    tokens: int
    expires_at: datetime
    seq: int


class Snapshot(NamedTuple):
    """The fold of an account's lines up to ``seq``: a cache, never a second truth."""

    seq: int = 0
    debt: int = 0
    grants: tuple[LiveGrant, ...] = ()
    """The live grants holding tokens, in burn order."""
    holds: tuple[HeldTokens, ...] = ()
    """The holds neither captured, released nor ended by the date of the latest line."""

    def held(self, now: datetime) -> int:
        """The tokens held by holds still active at ``now``."""
        return sum(h.tokens for h in self.holds if h.expires_at > now)

    def available(self, now: datetime) -> int:
        """The balance minus the tokens held at ``now``: what a safe consumption may take."""
        return self.balance - self.held(now)

    def hold(self, hold_id: str) -> HeldTokens | None:
        """The hold of this id if it is neither captured, released nor pruned."""
        return next((h for h in self.holds if h.hold_id == hold_id), None)

    @property
    def balance(self) -> int:
        """The account's balance: what its lines add up to."""
        return sum(g.remaining for g in self.grants) - self.debt

    def grant(self, grant_id: str) -> LiveGrant | None:
        """The live grant of this id, None when it holds nothing (or never existed)."""
        return next((g for g in self.grants if g.grant_id == grant_id), None)

    def remainder(self, grant_id: str) -> int:
        """What the grant still holds (0 when it is not live)."""
        found = self.grant(grant_id)
        return 0 if found is None else found.remaining

    def apply(self, line: TokenTimetable) -> Snapshot:
        """The snapshot after ``line``, which must be the account's next line."""
        if line.seq != self.seq + 1:
            raise ValueError(f"line {line.seq} cannot follow line {self.seq} of its account")
        grants = list(self.grants)
        debt = self.debt
        tokens = line.tokens
        if tokens > 0:
            repaid = min(debt, tokens)
            debt -= repaid
            if tokens > repaid:
                made = LiveGrant(
                    grant_id=line.grant_id or _own_id(line),
                    order_id=None if line.order_id is None else str(line.order_id),
                    source=SOURCES.get(line.reason, GrantSource.ADJUSTMENT),
                    tokens=tokens,
                    remaining=tokens - repaid,
                    priority=DEFAULT_PRIORITY if line.priority is None else line.priority,
                    starts=line.created_at,
                    expires=line.expires,
                    seq=line.seq,
                )
                bisect.insort(grants, made, key=LiveGrant.burn_key)
        elif tokens < 0:
            wanted = -tokens
            if line.reason in TAKING and line.grant_id is not None:
                wanted = _take(grants, line.grant_id, wanted)
            debt += _draw(grants, wanted)
        holds = self.holds
        if holds or line.reason is LedgerReason.HOLD:
            moment = line.created_at
            holds = tuple(
                h
                for h in holds
                if h.hold_id != line.hold_id and (moment is None or h.expires_at > moment)
            )
            if line.reason is LedgerReason.HOLD and line.expires is not None:
                holds += (HeldTokens(_own_id(line), line.held, line.expires, line.seq),)
        return Snapshot(line.seq, debt, tuple(grants), holds)

    def apply_all(self, lines: Iterable[TokenTimetable]) -> Snapshot:
        """The snapshot after every line of ``lines``, given in order."""
        snapshot = self
        for line in lines:
            snapshot = snapshot.apply(line)
        return snapshot

    def to_data(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data (for backends that store it as a document)."""
        return {
            "seq": self.seq,
            "debt": self.debt,
            "grants": [
                {
                    **g._asdict(),
                    "source": g.source.value,
                    "starts": to_iso(g.starts),
                    "expires": to_iso(g.expires),
                }
                for g in self.grants
            ],
            "holds": [
                {
                    "hold_id": h.hold_id,
                    "tokens": h.tokens,
                    "expires_at": h.expires_at.isoformat(),
                    "seq": h.seq,
                }
                for h in self.holds
            ],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Snapshot:
        """The snapshot stored as :meth:`to_data` made it."""
        return cls(
            seq=int(data["seq"]),
            debt=int(data["debt"]),
            grants=tuple(
                LiveGrant(
                    grant_id=g["grant_id"],
                    order_id=g["order_id"],
                    source=GrantSource(g["source"]),
                    tokens=int(g["tokens"]),
                    remaining=int(g["remaining"]),
                    priority=int(g["priority"]),
                    starts=from_iso(g["starts"]),
                    expires=from_iso(g["expires"]),
                    seq=int(g["seq"]),
                    taken=int(g.get("taken", 0)),
                )
                for g in data["grants"]
            ),
            holds=tuple(
                HeldTokens(
                    hold_id=h["hold_id"],
                    tokens=int(h["tokens"]),
                    expires_at=datetime.fromisoformat(h["expires_at"]),
                    seq=int(h["seq"]),
                )
                for h in data.get("holds", ())
            ),
        )


def _holding(grant: LiveGrant, remaining: int, taken: int) -> LiveGrant:
    """``grant`` holding ``remaining`` (a drawn-from grant is rebuilt at every consumption:
    building the tuple directly is several times faster than ``_replace``)."""
    return LiveGrant(
        grant.grant_id,
        grant.order_id,
        grant.source,
        grant.tokens,
        remaining,
        grant.priority,
        grant.starts,
        grant.expires,
        grant.seq,
        taken,
    )


def _own_id(line: TokenTimetable) -> str:
    """The id of what a line makes (a grant, a hold): its own id once stored."""
    return f"line-{line.seq}" if line.id is None else str(line.id)


def _take(grants: list[LiveGrant], grant_id: str, wanted: int) -> int:
    """Take up to ``wanted`` tokens from one grant; what it could not cover."""
    for index, grant in enumerate(grants):
        if grant.grant_id == grant_id:
            taken = min(grant.remaining, wanted)
            if taken == grant.remaining:
                del grants[index]
            else:
                grants[index] = _holding(grant, grant.remaining - taken, grant.taken + taken)
            return wanted - taken
    return wanted


def _draw(grants: list[LiveGrant], wanted: int) -> int:
    """Draw ``wanted`` tokens in burn order; what no grant covered (the new debt)."""
    while wanted and grants:
        grant = grants[0]
        taken = min(grant.remaining, wanted)
        wanted -= taken
        if taken == grant.remaining:
            grants.pop(0)
        else:
            grants[0] = _holding(grant, grant.remaining - taken, grant.taken)
    return wanted


def ending_key(reason: LedgerReason, grant_id: str) -> str:
    """The operation key of the line that ends a grant for ``reason`` (once per grant)."""
    return f"{reason}:{grant_id}"


def take_remainder(
    grant_id: str, reason: LedgerReason, order_id: Any = None
) -> Callable[[Snapshot], TokenTimetable | None]:
    """The decision of a line ending a grant (an expiry, a full refund, a void): it takes
    exactly what the grant still holds in the snapshot it follows, or nothing is written."""

    def decide(snapshot: Snapshot) -> TokenTimetable | None:
        remainder = snapshot.remainder(grant_id)
        if remainder <= 0:
            return None
        return TokenTimetable(
            tokens=-remainder,
            order_id=order_id,
            reason=reason,
            grant_id=grant_id,
            operation_key=ending_key(reason, grant_id),
        )

    return decide


def replay(lines: Iterable[TokenTimetable]) -> Snapshot:
    """The snapshot of an account from all its lines, given in order."""
    return Snapshot().apply_all(lines)
