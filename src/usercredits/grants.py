"""The grant model: which purchase still holds which tokens.

Each purchase ledger line is a *grant*. Replaying a group's ledger in recording
order tells how many tokens each live grant still holds:

* a consumption draws from the live grants, the one expiring soonest first
  (never-expiring grants last, ties: the older first); what no grant covers
  becomes debt;
* a grant repays debt before it holds anything;
* an expiry or refund line ends its grant, removing exactly what it held;
* a positive adjustment is a never-expiring grant of no order, a negative one
  is drawn like a consumption.

The replay is pure and total: whatever the lines, the state it returns has
``balance == sum(line.tokens)``, so a ledger written by concurrent processes in
a slightly different order still yields a consistent answer.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from usercredits.models import EntityId, LedgerReason, TokenTimetable


@dataclass
class _Grant:
    remaining: int
    expires: datetime | None
    seq: int

    def order_key(self) -> tuple[bool, datetime | None, int]:
        return (self.expires is None, self.expires, self.seq)


@dataclass
class GroupState:
    """The outcome of replaying one group's ledger."""

    grants: dict[str, int] = field(default_factory=dict)
    """What each live grant still holds, by ``str(order_id)``."""
    unattributed: int = 0
    """Tokens held outside any grant (positive adjustments), never expiring."""
    debt: int = 0
    """Tokens consumed that no grant covered (the negative part of the balance)."""
    ended: set[str] = field(default_factory=set)
    """Orders whose grant was ended by an expiry or refund line."""

    @property
    def balance(self) -> int:
        """The group balance the replayed lines add up to."""
        return sum(self.grants.values()) + self.unattributed - self.debt

    def remainder(self, order_id: EntityId) -> int:
        """What the live grant of ``order_id`` still holds (0 when none)."""
        return self.grants.get(str(order_id), 0)


class _Replay:
    def __init__(self) -> None:
        self.live: dict[str, _Grant] = {}
        self.draw_order: list[str] = []
        self.state = GroupState()

    def grant(self, key: str | None, tokens: int, expires: datetime | None, seq: int) -> None:
        repaid = min(self.state.debt, tokens)
        self.state.debt -= repaid
        tokens -= repaid
        if key is None:
            self.state.unattributed += tokens
            return
        if key not in self.live:
            self.live[key] = _Grant(0, expires, seq)
        self.live[key].remaining += tokens
        if self.live[key].remaining > 0 and key not in self.draw_order:
            bisect.insort(self.draw_order, key, key=lambda k: self.live[k].order_key())

    def draw(self, tokens: int) -> None:
        # Spent grants leave the draw order: each consumption only visits grants that hold.
        while tokens and self.draw_order:
            grant = self.live[self.draw_order[0]]
            taken = min(grant.remaining, tokens)
            grant.remaining -= taken
            tokens -= taken
            if grant.remaining == 0:
                self.draw_order.pop(0)
        taken = min(max(self.state.unattributed, 0), tokens)
        self.state.unattributed -= taken
        self.state.debt += tokens - taken

    def end(self, key: str, tokens: int) -> None:
        grant = self.live.pop(key, None)
        self.state.ended.add(key)
        held = 0
        if grant is not None:
            if key in self.draw_order:
                self.draw_order.remove(key)
            held = grant.remaining
        taken = min(held, tokens)
        # What the ended grant still held beyond the removal stays in the balance, ungranted.
        self.state.unattributed += held - taken
        self.draw(tokens - taken)

    def apply(self, line: TokenTimetable, seq: int) -> None:
        key = None if line.order_id is None else str(line.order_id)
        ends = line.reason in (LedgerReason.EXPIRY, LedgerReason.REFUND)
        if ends and key is not None and line.tokens <= 0:
            self.end(key, -line.tokens)
        elif line.tokens >= 0:
            if line.reason is LedgerReason.PURCHASE:
                self.grant(key, line.tokens, line.expires, seq)
            else:
                self.grant(None, line.tokens, None, seq)
        else:
            self.draw(-line.tokens)


def replay(lines: Iterable[TokenTimetable]) -> GroupState:
    """Replay one group's ledger lines, given in recording order."""
    run = _Replay()
    for seq, line in enumerate(lines):
        run.apply(line, seq)
    run.state.grants = {key: grant.remaining for key, grant in run.live.items()}
    return run.state
