"""The validity window of an account: from its earliest start to the latest end of its orders.

A :class:`Window` is the span of the paid orders of one user's offer group. It
widens when an order is paid, shrinks when one is refunded, and is *closed* by
the expiry routine once it has ended with nothing left in the account. An order
whose offer has ``append_date`` starts where the window ends (if that is later
than now): its start is *claimed* in the window under a key naming the order,
so that a retry finds the same start and racing orders get consecutive windows.

Windows are changed by compare-and-set on ``version`` (see
:mod:`usercredits.accounts`); this module holds only the values and the rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from usercredits.clock import from_iso, to_iso


@dataclass(frozen=True)
class Claim:
    """The window an order (or bundle item) chained after the account's window took."""

    key: str
    starts: datetime
    expires: datetime | None


@dataclass(frozen=True)
class Window:
    """An account's validity window and the chained starts still being recorded."""

    version: int = 0
    starts: datetime | None = None
    latest_end: datetime | None = None
    """The latest end of a dated order window."""
    never_ends: bool = False
    """Whether a live order never expires."""
    claims: tuple[Claim, ...] = ()
    closed_seq: int | None = None
    """Set by the expiry routine when the account was spent with its window ended: the
    account is closed until a line numbered above this is appended or the window widens."""

    @property
    def expires(self) -> datetime | None:
        """When the window ends; None when it never does (or no order dated it)."""
        return None if self.never_ends else self.latest_end

    def ended(self, now: datetime) -> bool:
        """Whether a dated window ended at or before ``now`` and no order keeps it open."""
        return not self.never_ends and self.latest_end is not None and self.latest_end <= now

    def is_closed(self, seq: int) -> bool:
        """Whether the account is closed at line ``seq``."""
        return self.closed_seq is not None and seq <= self.closed_seq

    def claim(self, key: str) -> Claim | None:
        """The claim recorded under ``key``, None when there is none."""
        return next((c for c in self.claims if c.key == key), None)

    def next_start(self, now: datetime) -> datetime:
        """Where a chained window starts: the latest dated end if later than ``now``, else now."""
        return self.latest_end if self.latest_end is not None and self.latest_end > now else now

    def widened(self, starts: datetime, expires: datetime | None) -> Window:
        """The next version, covering ``starts``..``expires`` too (None: never ends)."""
        return dataclasses.replace(
            self,
            version=self.version + 1,
            starts=starts if self.starts is None else min(self.starts, starts),
            latest_end=(
                self.latest_end
                if expires is None or (self.latest_end is not None and self.latest_end >= expires)
                else expires
            ),
            never_ends=self.never_ends or expires is None,
            closed_seq=None,
        )

    def claimed(self, claim: Claim) -> Window:
        """The next version, widened by ``claim`` and recording it."""
        widened = self.widened(claim.starts, claim.expires)
        return dataclasses.replace(widened, claims=(*self.claims, claim))

    def released(self, keys: Collection[str]) -> Window | None:
        """The next version, without the claims of ``keys``; None when it holds none of them."""
        kept = tuple(c for c in self.claims if c.key not in keys)
        if len(kept) == len(self.claims):
            return None
        return dataclasses.replace(self, version=self.version + 1, claims=kept)

    def reset(
        self, starts: datetime | None, latest_end: datetime | None, never_ends: bool
    ) -> Window:
        """The next version spanning exactly the given window and the open claims."""
        window = dataclasses.replace(
            self,
            version=self.version + 1,
            starts=self.starts if starts is None else starts,
            latest_end=latest_end,
            never_ends=never_ends,
        )
        for claim in self.claims:
            window = dataclasses.replace(
                window.widened(claim.starts, claim.expires), version=window.version
            )
        return window

    def closed(self, seq: int) -> Window:
        """The next version, closed at line ``seq``."""
        return dataclasses.replace(self, version=self.version + 1, closed_seq=seq)

    def to_data(self) -> dict[str, Any]:
        """The window as JSON-ready data (for backends that store it as a document)."""
        return {
            "version": self.version,
            "starts": to_iso(self.starts),
            "latest_end": to_iso(self.latest_end),
            "never_ends": self.never_ends,
            "claims": [
                {"key": c.key, "starts": to_iso(c.starts), "expires": to_iso(c.expires)}
                for c in self.claims
            ],
            "closed_seq": self.closed_seq,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Window:
        """The window stored as :meth:`to_data` made it."""
        return cls(
            version=int(data["version"]),
            starts=from_iso(data["starts"]),
            latest_end=from_iso(data["latest_end"]),
            never_ends=bool(data["never_ends"]),
            claims=tuple(
                Claim(
                    key=c["key"],
                    starts=from_iso(c["starts"]),  # type: ignore[arg-type]
                    expires=from_iso(c["expires"]),
                )
                for c in data["claims"]
            ),
            closed_seq=None if data["closed_seq"] is None else int(data["closed_seq"]),
        )
