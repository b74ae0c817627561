"""The commit rule: how every change of an account is written, in one place.

An account (a user's offer group) changes only by appending its next ledger line:

1. read the account's snapshot (the fold of its lines up to ``seq``);
2. decide the line from that snapshot (how much a consumption may take, what a
   grant still holds...);
3. append it as line ``seq + 1``. The ledger's unique index on (user, group,
   seq) makes this the **commit point**: a concurrent writer that took the
   number first makes the append fail, and the decision is taken again on the
   newer lines. A line whose idempotency or operation key is already used is
   not appended: the line holding the key is returned instead;
4. store the new snapshot, a cache: a reader that finds lines beyond it folds
   them in, so a crash between 3 and 4 loses nothing.

Because every decision is taken on the exact state its line follows, an expiry
or a refund takes exactly what its grant still holds, and a safe consumption
can never overdraw, whatever runs concurrently and without any transaction.
Windows change by compare-and-set on their version (:meth:`Accounts.change_window`).

A backend with transactions may instead hold the account while it appends
(:meth:`~usercredits.dao.UserCreditsDao.append_locked`): steps 1 to 4 then run in one
transaction, which commits the line and its snapshot together and never loses a race. The
line is still numbered and keyed under the same unique indexes, so both ways of appending
can write to one account side by side. A backend that keeps each account's latest line
number and balance may also append a consumption by itself
(:meth:`~usercredits.dao.UserCreditsDao.append_consumption`) when it can check it without
the snapshot: no holds, the floor kept.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import datetime

from usercredits.dao import Account, Appended, TokenTimetableDao, UserCreditsDao
from usercredits.errors import DuplicateEntityError, StorageError
from usercredits.grants import Snapshot
from usercredits.models import TokenTimetable, UserId
from usercredits.windows import Window

logger = logging.getLogger("usercredits")

ATTEMPTS = 200
"""How many times a write lost to concurrent writers of one account is tried again."""

SNAPSHOT_LAG = 8
"""How many lines a stored snapshot may lag behind its account's ledger in the normal course.
An append stores the snapshot after its line (a backend appending under a lock may do it only
every ``SNAPSHOT_LAG`` lines); a reader that folds newer lines stores the result only when it
folded at least as many, so reading stays a read."""


Decision = Callable[[Snapshot], TokenTimetable | None]
"""Decides the next line from the account's snapshot (or None: nothing to append). It may
raise to refuse (nothing is written then) and may be called again after a lost race. The
line it returns is completed in place (user, group, number, date) before it is appended."""


class Accounts:
    """Reads and writes accounts through the commit rule of this module."""

    def __init__(self, credits: UserCreditsDao, lines: TokenTimetableDao):
        self._credits = credits
        self._lines = lines

    # -- reading ---------------------------------------------------------------------------

    def read(self, user_id: UserId, offer_group: str) -> Account | None:
        """The account with every recorded line folded in, None when absent (two reads)."""
        account = self._credits.get_account(user_id, offer_group)
        return None if account is None else self.catch_up(account)

    def read_all(self, user_id: UserId) -> list[Account]:
        """Every account of the user, each with every recorded line folded in."""
        return [self.catch_up(a) for a in self._credits.accounts(user_id)]

    def catch_up(self, account: Account, *, store: bool = False) -> Account:
        """``account`` with the lines recorded beyond its snapshot folded in; the result is
        stored when ``store`` or when it folded :data:`SNAPSHOT_LAG` lines or more."""
        newer = self._lines.lines_after(account.user_id, account.offer_group, account.snapshot.seq)
        if not newer:
            return account
        snapshot = account.snapshot.apply_all(newer)
        if store or len(newer) >= SNAPSHOT_LAG:
            self._save(account.user_id, account.offer_group, snapshot)
        return account._replace(snapshot=snapshot)

    def _save(self, user_id: UserId, offer_group: str, snapshot: Snapshot) -> None:
        # The snapshot is a cache of the lines: failing to store it loses nothing.
        try:
            self._credits.save_snapshot(user_id, offer_group, snapshot)
        except StorageError:
            logger.warning(
                "could not store the snapshot of %r / %r at line %d; the next reader will",
                user_id,
                offer_group,
                snapshot.seq,
                exc_info=True,
            )

    def _open(self, user_id: UserId, offer_group: str, now: datetime) -> Account:
        account = self._credits.get_account(user_id, offer_group)
        return (
            account
            if account is not None
            else self._credits.open_account(user_id, offer_group, now)
        )

    # -- writing ---------------------------------------------------------------------------

    def append(
        self, user_id: UserId, offer_group: str, decide: Decision, *, now: datetime
    ) -> Appended:
        """Append the line ``decide`` makes from the account's latest snapshot, as its next
        line (the account is opened when absent, once there is a line to append). Exactly one
        of racing appends takes each number; the others decide again on the newer lines.
        A backend that can hold the account while it appends (:meth:`UserCreditsDao.
        append_locked`) does it in one transaction, with the same outcome."""

        def draft(snapshot: Snapshot) -> TokenTimetable | None:
            line = decide(snapshot)
            if line is not None:
                line.user_id, line.offer_group, line.seq = user_id, offer_group, snapshot.seq + 1
                line.created_at = now
            return line

        locked = self._credits.append_locked(user_id, offer_group, draft)
        if locked is not None:
            return locked
        account = self._credits.get_account(user_id, offer_group)
        snapshot = Snapshot() if account is None else account.snapshot
        for attempt in range(ATTEMPTS):
            line = draft(snapshot)
            if line is None:
                return Appended(None, False, snapshot)
            if account is None:
                # Opened only once something is to be appended: a refusal stores nothing.
                account = self._credits.open_account(user_id, offer_group, now)
                locked = self._credits.append_locked(user_id, offer_group, draft)
                if locked is not None:
                    return locked
                if account.snapshot.seq != snapshot.seq:
                    snapshot = account.snapshot
                    continue
            try:
                stored = self._lines.create(line)
            except DuplicateEntityError:
                if line.idempotency_key is not None or line.operation_key is not None:
                    holder = self._lines.find_by_key(
                        user_id,
                        idempotency_key=line.idempotency_key,
                        operation_key=line.operation_key,
                    )
                    if holder is not None:
                        return Appended(holder, False, snapshot)
                snapshot = snapshot.apply_all(
                    self._lines.lines_after(user_id, offer_group, snapshot.seq)
                )
                _back_off(attempt)
                continue
            snapshot = snapshot.apply(stored)
            self._save(user_id, offer_group, snapshot)
            return Appended(stored, True, snapshot)
        raise StorageError(
            f"could not append to the account {offer_group!r} of user {user_id!r}: "
            f"{ATTEMPTS} attempts lost to concurrent writers"
        )

    def append_consumption(
        self,
        user_id: UserId,
        offer_group: str,
        line: TokenTimetable,
        *,
        floor: int | None,
        now: datetime,
    ) -> TokenTimetable | None:
        """Append a consumption the backend can check by itself (see :meth:`UserCreditsDao.
        append_consumption`): its next number under the account's lock, refused unless the
        account holds nothing on hold and keeps ``floor``. The decision is the one
        :meth:`append` would take from the snapshot of the line before, whose balance the
        backend keeps. The line stored, or the line holding its idempotency key, or None:
        nothing stored, append it the general way."""
        line.user_id, line.offer_group, line.created_at = user_id, offer_group, now
        return self._credits.append_consumption(user_id, offer_group, line, floor)

    def change_window(
        self,
        user_id: UserId,
        offer_group: str,
        change: Callable[[Account], Window | None],
        *,
        now: datetime,
        caught_up: bool = False,
    ) -> Window:
        """Apply ``change`` to the account's window by compare-and-set (the account is opened
        when absent); ``change`` returns the next window, or None to leave it, and is called
        again on the newer window after a lost race. With ``caught_up``, the account ``change``
        sees has every recorded line folded in. The window as left."""

        def load() -> Account:
            account = self._open(user_id, offer_group, now)
            return self.catch_up(account) if caught_up else account

        account = load()
        for attempt in range(ATTEMPTS):
            window = change(account)
            if window is None:
                return account.window
            if self._credits.save_window(user_id, offer_group, account.window.version, window):
                return window
            _back_off(attempt)
            account = load()
        raise StorageError(
            f"could not change the window of {offer_group!r} of user {user_id!r}: "
            f"{ATTEMPTS} attempts lost to concurrent writers"
        )


def _back_off(attempt: int) -> None:
    """Pause a little after a few lost races, so that racing writers spread out."""
    if attempt >= 2:
        time.sleep(random.uniform(0, 0.0005 * min(attempt, 20)))
