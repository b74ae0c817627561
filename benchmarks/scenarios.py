"""The measures of ``benchmarks/run.py``, each run on one backend.

Every timing is the best of several runs (see :mod:`timing`), measured side by side in one
run with what it is compared to: the raw baseline of :mod:`backends`, or the same call for
a user with a short history. Where a backend counts what a call sends to its database
(MongoDB, SQL), the counts of the same calls are reported too; they do not depend on the
machine, so ``tests/test_benchmarks.py`` checks their budgets.

Every entry holding ``budget_met`` states a budget of SPEC §9 / the project and whether it
was met.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from backends import Backend
from counting import Counts, total
from timing import Best, Call, Setup, best_interleaved, best_processes
from usercredits import (
    DaoFactory,
    FrozenClock,
    ManualPaymentClient,
    Offer,
    Order,
    PaymentService,
    Status,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
PLENTY = 10**12
"""Tokens granted before a consumption benchmark: never exhausted."""

CONSUMPTION_RATIO_MEMORY = 20.0
CONSUMPTION_RATIO_SQL = 2.0
SAME_COST = 2.0
"""Budget of "costs the same": the ratio of two timings of the same call."""
FLAT_READS_MEMORY = 1.3
"""The project's budget for balance reads in memory as the ledger grows."""


@dataclass(frozen=True)
class Sizes:
    """How big each measure is."""

    consumption_ops: int
    """Most calls per timed run of a consumption (all threads together)."""
    sql_consumption_ops: int
    """Calls per timed run of a consumption on SQL (all processes together)."""
    repeat: int
    """Timed runs of each measure; the best is kept."""
    ledger_lines: tuple[int, int]
    """Ledger lines of the account of the short-history and of the long-history user."""
    reads_number: int
    """Most calls per timed run of a balance read or another read-only call."""
    run_seconds: float
    """How long a timed run of a read-only call lasts, about (it makes fewer calls then)."""
    expiry_checks: int
    """Grants expired one at a time, per ledger size."""
    expiry_grants: tuple[int, ...]
    expiry_users: int
    """Users per number of grants expiring at once (each check is timed once)."""
    counted_ledger: int
    """Ledger lines of the long-history user whose expiry round trips are counted."""
    past_orders: int
    past_lines: int
    """Consumption lines of the user with past orders, beyond those of the orders."""
    history_number: int
    """Orders settled per timed run of the history measure."""
    offers: int
    subscriptions: int
    job_users: int

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            consumption_ops=200_000,
            sql_consumption_ops=600,
            repeat=5,
            ledger_lines=(100, 10_000),
            reads_number=2_000,
            run_seconds=0.05,
            expiry_checks=6,
            expiry_grants=(1, 10, 100),
            expiry_users=4,
            counted_ledger=1_000,
            past_orders=300,
            past_lines=1_000,
            history_number=5,
            offers=1_000,
            subscriptions=50,
            job_users=10_000,
        )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            consumption_ops=40,
            sql_consumption_ops=24,
            repeat=2,
            ledger_lines=(10, 40),
            reads_number=5,
            run_seconds=0.0,
            expiry_checks=2,
            expiry_grants=(1, 3, 6),
            expiry_users=1,
            counted_ledger=30,
            past_orders=12,
            past_lines=20,
            history_number=2,
            offers=20,
            subscriptions=3,
            job_users=20,
        )

    def for_backend(self, backend: Backend) -> Sizes:
        """These sizes, smaller where a backend is slow: mongomock scans whole collections on
        every query and every insert into a uniquely indexed collection; SQL commits every
        write. The sizes budgets name (10^2 and 10^4 ledger lines, 10 and 100 grants, 300
        past orders) are kept except on mongomock, where only counts are checked."""
        if backend.name == "mongomock":
            return dataclasses.replace(
                self,
                consumption_ops=min(self.consumption_ops, 100),
                repeat=min(self.repeat, 2),
                ledger_lines=(self.ledger_lines[0], min(self.ledger_lines[1], 2_000)),
                reads_number=min(self.reads_number, 20),
                expiry_users=1,
                history_number=min(self.history_number, 2),
                offers=min(self.offers, 300),
                job_users=min(self.job_users, 100),
            )
        if backend.kind in ("sql", "mongo"):
            return dataclasses.replace(
                self,
                consumption_ops=min(self.consumption_ops, 1_000),
                reads_number=min(self.reads_number, 200),
                job_users=min(self.job_users, 500),
            )
        return self


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 2)


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def budget(text: str, measured: Any, met: bool) -> dict[str, Any]:
    """A budget, what was measured against it, and whether it was met."""
    return {"budget": text, "measured": measured, "budget_met": bool(met)}


@dataclass
class World:
    """One fresh database with a service on it."""

    backend: Backend
    factory: DaoFactory
    service: PaymentService
    client: ManualPaymentClient
    clock: FrozenClock

    def offer(
        self,
        name: str,
        group: str,
        *,
        price: str | int = 0,
        tokens: int | None = None,
        kind: str = "tokens",
        cycle: str = "monthly",
        unlocked_by: list[str] | None = None,
        **extra: Any,
    ) -> Offer:
        return self.factory.get_offer_dao().create(
            Offer(
                name=name,
                kind=kind,
                offer_group=group,
                cycle=cycle,
                price=Decimal(price),
                token_count=tokens,
                unlocked_by=unlocked_by or [],
                **extra,
            )
        )

    def paid(self, offer: Offer, user: str) -> Order:
        """A settled order of ``offer`` (approved by the operator when it has a price)."""
        order = self.service.create_order(offer.id, user)
        if order.status is Status.PAID:
            return order
        self.client.approve(order.id)
        return self.service.settle(order.id)

    def count(self, call: Callable[[], Any]) -> Counts:
        counter = self.backend.counter
        assert counter is not None
        return counter.measure(call)


@contextmanager
def world(backend: Backend) -> Iterator[World]:
    factory = backend.open()
    client = ManualPaymentClient()
    clock = FrozenClock(START)
    try:
        yield World(backend, factory, PaymentService(factory, client, clock=clock), client, clock)
    finally:
        backend.discard(factory)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("inf")


# -- consumption ---------------------------------------------------------------------------

CONSUMPTION_CALLS = ("tokens_consumed", "tokens_consumed_with_key", "consume_tokens")
BUDGETED_CONSUMPTION = ("tokens_consumed", "consume_tokens")


def _consumption_call(service: PaymentService, label: str) -> Call:
    if label == "tokens_consumed":
        return lambda i: service.tokens_consumed("u", "ai", 1)
    if label == "tokens_consumed_with_key":
        return lambda i: service.tokens_consumed("u", "ai", 1, idempotency_key=f"k{i}")
    return lambda i: service.consume_tokens("u", "ai", 1)


def measure_consumption(backend: Backend, sizes: Sizes) -> dict[str, Any]:
    """Consumption throughput against the raw baseline: threads in memory and on MongoDB,
    processes on SQL (each process with its own connections, as in production)."""
    if backend.kind == "sql":
        return _consumption_processes(backend, sizes)
    out: dict[str, Any] = {}
    for threads in (1, 4):
        with ExitStack() as stack:
            calls: dict[str, Call] = {}
            base = stack.enter_context(world(backend))
            raw = backend.raw(base.factory)
            stack.callback(raw.close)
            raw.prepare("u", "ai", PLENTY)
            calls["baseline"] = lambda i: raw.consume("u", "ai", 1, START)
            for label in CONSUMPTION_CALLS:
                w = stack.enter_context(world(backend))
                w.service.grant_tokens("u", "ai", PLENTY)
                calls[label] = _consumption_call(w.service, label)
            seconds = 2 * sizes.run_seconds if sizes.run_seconds else None
            best = best_interleaved(
                calls, sizes.consumption_ops, sizes.repeat, threads, seconds=seconds
            )
        out[f"{threads}_threads"] = _consumption_entry(backend, best, CONSUMPTION_RATIO_MEMORY)
    return out


def _consumption_entry(backend: Backend, best: dict[str, float], limit: float) -> dict[str, Any]:
    base = best["baseline"]
    entry: dict[str, Any] = {"baseline_us": _us(base), "baseline_ops_per_s": round(1 / base)}
    for label, seconds in best.items():
        if label == "baseline":
            continue
        ratio = _ratio(seconds, base)
        entry[label] = {
            "us": _us(seconds),
            "ops_per_s": round(1 / seconds),
            "ratio_to_baseline": ratio,
        }
        if label in BUDGETED_CONSUMPTION and backend.kind in ("memory", "sql") and backend.timed:
            entry[label].update(budget(f"<= {limit:g}x the raw baseline", ratio, ratio <= limit))
    return entry


def _library_process(url: str, label: str) -> Setup:
    def setup() -> Callable[[int, int, int], None]:
        from usercredits_sql import SqlDaoFactory

        factory = SqlDaoFactory.from_url(url, create_schema=False)
        service = PaymentService(factory, ManualPaymentClient(), clock=FrozenClock(START))
        call = _consumption_call(service, label)
        for i in range(3):
            call(-1 - i)

        def work(process: int, first: int, count: int) -> None:
            for i in range(first, first + count):
                call(i)

        return work

    return setup


def _raw_process(backend: Backend, url: str) -> Setup:
    def setup() -> Callable[[int, int, int], None]:
        raw = backend.raw_for_url(url)
        for _ in range(3):
            raw.consume("u", "ai", 1, START)

        def work(process: int, first: int, count: int) -> None:
            for _ in range(count):
                raw.consume("u", "ai", 1, START)

        return work

    return setup


def _consumption_processes(backend: Backend, sizes: Sizes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    labels = ("tokens_consumed", "consume_tokens")
    with ExitStack() as stack:
        base = stack.enter_context(world(backend))
        raw = backend.raw(base.factory)
        raw.prepare("u", "ai", PLENTY)
        raw.close()
        setups: dict[str, Setup] = {"baseline": _raw_process(backend, backend.url(base.factory))}
        for label in labels:
            w = stack.enter_context(world(backend))
            w.service.grant_tokens("u", "ai", PLENTY)
            setups[label] = _library_process(backend.url(w.factory), label)
        for processes in (1, 4):
            best = best_processes(setups, sizes.sql_consumption_ops, sizes.repeat, processes)
            out[f"{processes}_processes"] = _consumption_entry(backend, best, CONSUMPTION_RATIO_SQL)
    return out


# -- balance reads and expiry by ledger size -------------------------------------------------


def measure_ledger(backend: Backend, sizes: Sizes) -> dict[str, Any]:
    """Two users whose account holds the same grants, one with few ledger lines and one with
    many: balance reads (against the raw baseline) and the expiry of one grant at a time."""
    small, big = sizes.ledger_lines
    checks = sizes.expiry_checks
    users = {"small": "ledger-small", "big": "ledger-big"}
    with world(backend) as w:
        offers = [w.offer(f"grant-{k}", "ai", tokens=10**7) for k in range(checks)]
        due = []
        for k, offer in enumerate(offers):
            w.clock.set(START + timedelta(hours=k))
            for user in users.values():
                order = w.service.create_order(offer.id, user)
            due.append(order.expires)
        w.clock.set(START + timedelta(hours=checks))
        for label, lines in (("small", small), ("big", big)):
            for _ in range(lines - checks):
                w.service.tokens_consumed(users[label], "ai", 1)
        reads = _balance_reads(w, sizes, users, (small, big))
        expiry = _expiry_by_ledger(w, users, due, (small, big))
    return {"balance_reads": reads, "expiry_by_ledger_lines": expiry}


def _balance_reads(
    w: World, sizes: Sizes, users: dict[str, str], lines: tuple[int, int]
) -> dict[str, Any]:
    backend, service = w.backend, w.service
    raw = backend.raw(w.factory)
    try:
        raw.prepare("raw", "ai", PLENTY)
        calls: dict[str, Call] = {"baseline": lambda i: raw.balance("raw", "ai")}
        for label, user in users.items():
            calls[f"remaining_tokens_{label}"] = lambda i, u=user: service.remaining_tokens(u, "ai")
            calls[f"load_user_credits_{label}"] = lambda i, u=user: service.load_user_credits(u)
        best = best_interleaved(calls, sizes.reads_number, sizes.repeat, seconds=sizes.run_seconds)
    finally:
        raw.close()
    out: dict[str, Any] = {"ledger_lines": list(lines), "baseline_us": _us(best["baseline"])}
    for call in ("remaining_tokens", "load_user_credits"):
        small_t, big_t = best[f"{call}_small"], best[f"{call}_big"]
        entry: dict[str, Any] = {
            "small_us": _us(small_t),
            "big_us": _us(big_t),
            "ratio_big_to_small": _ratio(big_t, small_t),
            "ratio_small_to_baseline": _ratio(small_t, best["baseline"]),
        }
        if backend.kind == "memory":
            ratio = entry["ratio_big_to_small"]
            entry.update(
                budget(
                    f"flat from {lines[0]} to {lines[1]} lines (<= {FLAT_READS_MEMORY:g}x)",
                    ratio,
                    ratio <= FLAT_READS_MEMORY,
                )
            )
        out[call] = entry
    if backend.counter is not None:
        counted = {
            label: w.count(lambda u=user: service.remaining_tokens(u, "ai"))
            for label, user in users.items()
        }
        out["remaining_tokens"]["counts"] = counted
    return out


def _expiry_by_ledger(
    w: World, users: dict[str, str], due: list[datetime], lines: tuple[int, int]
) -> dict[str, Any]:
    backend, service = w.backend, w.service
    best = {label: Best() for label in users}
    counts: dict[str, Counts] = {}
    removed: dict[str, int] = {}
    for k, moment in enumerate(due):
        w.clock.set(moment + timedelta(minutes=1))
        order = list(users.items()) if k % 2 == 0 else list(reversed(users.items()))
        for label, user in order:
            if k == 0 and backend.counter is not None:
                counts[label] = w.count(lambda u=user: service.check_for_expired_orders(u))
                continue
            gc.collect()
            start = time.perf_counter()
            report = service.check_for_expired_orders(user)
            best[label].add(time.perf_counter() - start)
            assert len(report.expired_orders) == 1, report
            removed[label] = report.removed_tokens.get("ai", 0)
    small_t, big_t = best["small"].seconds, best["big"].seconds
    ratio = _ratio(big_t, small_t)
    out: dict[str, Any] = {
        "ledger_lines": list(lines),
        "one_grant_small_ms": _ms(small_t),
        "one_grant_big_ms": _ms(big_t),
        "ratio_big_to_small": ratio,
        "removed_tokens": removed,
    }
    if backend.timed:
        out.update(
            budget(
                f"same cost (<= {SAME_COST:g}x) with {lines[1]} lines as with {lines[0]}",
                ratio,
                ratio <= SAME_COST,
            )
        )
    if counts:
        same = _no_more(counts["big"], counts["small"])
        out["counts"] = {
            **counts,
            **budget(
                f"no more round trips nor {_read_unit(backend)} with {lines[1]} lines than with "
                f"{lines[0]}",
                {"small": total(counts["small"]), "big": total(counts["big"])},
                same,
            ),
        }
    return out


def _no_more(counts: Counts, than: Counts) -> bool:
    """Whether ``counts`` asks no more of the database than ``than``, in every respect."""
    return all(counts[k] <= than[k] for k in than)


def _read_unit(backend: Backend) -> str:
    return "rows read" if backend.kind == "sql" else "documents read"


def _read_key(backend: Backend) -> str:
    return "rows" if backend.kind == "sql" else "docs"


# -- expiry by number of grants ----------------------------------------------------------------


def measure_expiry_grants(backend: Backend, sizes: Sizes) -> dict[str, Any]:
    """Expiring G grants at once (G orders of one user due together): the cost per grant must
    not grow with G, and on MongoDB / SQL the round trips are O(G) whatever the ledger's
    size."""
    counted = backend.counter is not None
    grants = sizes.expiry_grants
    users = {g: [f"g{g}-{u}" for u in range(sizes.expiry_users)] for g in grants}
    count_users = {g: f"g{g}-counted" for g in grants} if counted else {}
    middle = grants[len(grants) // 2]
    with world(backend) as w:
        offers = [w.offer(f"bulk-{k}", "bulk", tokens=10**4) for k in range(max(grants))]
        for g in grants:
            for user in [*users[g], *([count_users[g]] if counted else [])]:
                for offer in offers[:g]:
                    w.service.create_order(offer.id, user)
                w.service.tokens_consumed(user, "bulk", 50)
        if counted:
            long_user = f"g{middle}-long"
            for offer in offers[:middle]:
                w.service.create_order(offer.id, long_user)
            for _ in range(sizes.counted_ledger):
                w.service.tokens_consumed(long_user, "bulk", 1)
        w.clock.advance(days=40)
        best = {g: Best() for g in grants}
        for u in range(sizes.expiry_users):
            for g in grants:
                gc.collect()
                start = time.perf_counter()
                report = w.service.check_for_expired_orders(users[g][u])
                best[g].add(time.perf_counter() - start)
                assert len(report.expired_orders) == g, report
        counts: dict[str, Counts] = {}
        if counted:
            for g in grants:
                counts[str(g)] = w.count(
                    lambda u=count_users[g]: w.service.check_for_expired_orders(u)
                )
            counts[f"{middle}_with_{sizes.counted_ledger}_lines"] = w.count(
                lambda: w.service.check_for_expired_orders(long_user)
            )
    out: dict[str, Any] = {
        str(g): {"ms": _ms(best[g].seconds), "per_grant_ms": _ms(best[g].seconds / g)}
        for g in grants
    }
    low, high = grants[-2], grants[-1]
    ratio = _ratio(best[high].seconds / high, best[low].seconds / low)
    out[f"per_grant_ratio_{high}_to_{low}"] = ratio
    if backend.timed:
        out["linear"] = budget(
            f"linear in G: cost per grant with G={high} <= {SAME_COST:g}x that with G={low}",
            ratio,
            ratio <= SAME_COST,
        )
    if counts:
        out["counts"] = _expiry_counts(backend, counts, low, high, middle, sizes.counted_ledger)
    return out


def _expiry_counts(
    backend: Backend, counts: dict[str, Counts], low: int, high: int, middle: int, lines: int
) -> dict[str, Any]:
    per_grant = {g: total(counts[str(g)]) / g for g in (low, high)}
    long = counts[f"{middle}_with_{lines}_lines"]
    return {
        **counts,
        "linear": budget(
            f"O(G) round trips: per grant with G={high} no more than with G={low}",
            {str(g): round(v, 2) for g, v in per_grant.items()},
            per_grant[high] <= per_grant[low],
        ),
        "independent_of_ledger": budget(
            f"expiring {middle} grants: no more round trips nor {_read_unit(backend)} with "
            f"{lines} more ledger lines",
            {"short": total(counts[str(middle)]), "long": total(long)},
            _no_more(long, counts[str(middle)]),
        ),
    }


# -- calls for a user with a long history ------------------------------------------------------

GROWTH_ALLOWED = ("load_user_credits", "history", "after_execute")
"""The calls SPEC §9 allows to read more as the user's history grows: ``after_execute`` is
the settlement (``settle``, which must not grow) followed by ``load_user_credits``, whose
answer lists every subscription of the user."""
TIMED_BUDGETS = ("create_order", "settlement", "check_for_expired_orders_nothing_due")


@dataclass
class _Shop:
    pack: Offer
    past_pack: Offer
    plan: Offer


def _history_world(w: World, sizes: Sizes, heavy: list[str], light: list[str]) -> _Shop:
    """Users who hold the same live orders; the ``heavy`` ones also have ``past_orders``
    settled orders that have expired (and their ledger lines)."""
    shop = _Shop(
        pack=w.offer("pack", "ai", price="9.99", tokens=10**6),
        past_pack=w.offer("past-pack", "ai", price="4.99", tokens=100),
        plan=w.offer("plan-0", "plan-0", kind="subscription", cycle="yearly"),
    )
    for i in range(20):
        w.offer(
            f"vip-{i}",
            "vip",
            price=5,
            tokens=10,
            unlocked_by=["plan-0"],
            overriding_key=f"key-{i % 4}",
            weight=i,
        )
        w.offer(f"shop-{i}", "shop", price=2, tokens=10, overriding_key=f"key-{i % 4}")
    for user in heavy:
        for _ in range(sizes.past_orders):
            w.paid(shop.past_pack, user)
    w.clock.advance(days=40)
    for user in heavy:
        report = w.service.check_for_expired_orders(user)
        assert len(report.expired_orders) == sizes.past_orders, report
    for user in [*heavy, *light]:
        w.paid(shop.pack, user)
        w.paid(shop.plan, user)
        w.service.tokens_consumed(user, "ai", 1)
    return shop


def measure_history(backend: Backend, sizes: Sizes) -> dict[str, Any]:
    """The same calls for a user with no past order and for one with ``past_orders`` expired
    orders (and ``past_lines`` more ledger lines): timings, and on MongoDB / SQL what each
    call reads."""
    counted = backend.counter is not None
    n, repeat = sizes.history_number, sizes.repeat
    pool = n * repeat + (1 if counted else 0)
    light_ae = [f"light-ae-{i}" for i in range(pool)]
    light_settle = [f"light-settle-{i}" for i in range(pool)]
    heavy_reads, heavy_ae = "heavy-reads", "heavy-ae"
    light_reads = "light-reads"
    with world(backend) as w:
        shop = _history_world(
            w,
            sizes,
            [heavy_reads, heavy_ae],
            [light_reads, *light_ae, *light_settle],
        )
        for _ in range(sizes.past_lines):
            w.service.tokens_consumed(heavy_reads, "ai", 1)
        service = w.service
        reads: dict[str, Callable[[str], Any]] = {
            "remaining_tokens": lambda u: service.remaining_tokens(u, "ai"),
            "load_offers": lambda u: service.load_offers(u),
            "check_for_expired_orders_nothing_due": service.check_for_expired_orders,
            "load_user_credits": service.load_user_credits,
            "history": service.history,
            "tokens_consumed": lambda u: service.tokens_consumed(u, "ai", 1),
            "consume_tokens": lambda u: service.consume_tokens(u, "ai", 1),
        }
        counts: dict[str, dict[str, Counts]] = {}
        if counted:
            counts = _count_calls(w, shop, light_reads, heavy_reads, light_ae[-1], heavy_ae)
            counts["settle"] = {
                "light": _count_settlement(w, shop, light_settle[-1], settle=True)["settle"],
                "heavy": _count_settlement(w, shop, heavy_reads, settle=True)["settle"],
            }
        timings: dict[str, dict[str, float]] = {}
        for label, call in reads.items():
            timings[label] = best_interleaved(
                {
                    "light": lambda i, c=call: c(light_reads),
                    "heavy": lambda i, c=call: c(heavy_reads),
                },
                sizes.reads_number,
                repeat,
                seconds=sizes.run_seconds,
            )
        timings.update(_time_settlements(w, shop, n, repeat, light_ae, heavy_ae, settle=False))
        timings.update(
            _time_settlements(w, shop, n, repeat, light_settle, heavy_reads, settle=True)
        )
    out: dict[str, Any] = {"past_orders": sizes.past_orders, "past_lines": sizes.past_lines}
    for label, best in timings.items():
        ratio = _ratio(best["heavy"], best["light"])
        entry: dict[str, Any] = {
            "no_past_orders_ms": _ms(best["light"]),
            "past_orders_ms": _ms(best["heavy"]),
            "ratio": ratio,
        }
        if label in TIMED_BUDGETS and backend.timed:
            entry.update(
                budget(
                    f"independent of the user's past orders (<= {SAME_COST:g}x with "
                    f"{sizes.past_orders} as with none)",
                    ratio,
                    ratio <= SAME_COST,
                )
            )
        out[label] = entry
    if counts:
        out["counts"] = _history_count_budgets(backend, counts)
    return out


def _count_calls(
    w: World, shop: _Shop, light: str, heavy: str, light_buyer: str, heavy_buyer: str
) -> dict[str, dict[str, Counts]]:
    service = w.service
    calls: dict[str, Callable[[str], Any]] = {
        "tokens_consumed": lambda u: service.tokens_consumed(u, "ai", 1),
        "tokens_consumed_with_key": lambda u: service.tokens_consumed(
            u, "ai", 1, idempotency_key="a"
        ),
        "consume_tokens": lambda u: service.consume_tokens(u, "ai", 1),
        "consume_tokens_with_key": lambda u: service.consume_tokens(
            u, "ai", 1, idempotency_key="b"
        ),
        "consume_tokens_retry_with_key": lambda u: service.consume_tokens(
            u, "ai", 1, idempotency_key="b"
        ),
        "remaining_tokens": lambda u: service.remaining_tokens(u, "ai"),
        "load_offers": lambda u: service.load_offers(u),
        "load_offers_anonymous": lambda u: service.load_offers(),
        "check_for_expired_orders_nothing_due": lambda u: service.check_for_expired_orders(u),
        "load_user_credits": lambda u: service.load_user_credits(u),
        "history": lambda u: service.history(u),
    }
    counts = {
        label: {
            "light": _count_in_step(w, call, light),
            "heavy": _count_in_step(w, call, heavy),
        }
        for label, call in calls.items()
    }
    light_settlement = _count_settlement(w, shop, light_buyer, settle=False)
    heavy_settlement = _count_settlement(w, shop, heavy_buyer, settle=False)
    for label in ("create_order", "after_execute"):
        counts[label] = {"light": light_settlement[label], "heavy": heavy_settlement[label]}
    return counts


def _count_in_step(w: World, call: Callable[[str], Any], user: str) -> Counts:
    """The statements of ``call`` for ``user``, the user's snapshots stored first: a backend
    storing a snapshot every few lines (SQL, SNAPSHOT_LAG) does it, or folds the lines since,
    on some calls and not others, so both users are counted at the same step of that cycle
    (docs/performance.md gives the cycle's cost)."""
    w.service.reconcile(user)
    return w.count(lambda: call(user))


def _count_settlement(w: World, shop: _Shop, user: str, *, settle: bool) -> dict[str, Counts]:
    w.service.reconcile(user)
    holder: list[Order] = []
    created = w.count(lambda: holder.append(w.service.create_order(shop.pack.id, user)))
    order = holder[0]
    w.client.approve(order.id)
    if settle:
        return {"create_order": created, "settle": w.count(lambda: w.service.settle(order.id))}
    return {
        "create_order": created,
        "after_execute": w.count(lambda: w.service.after_execute(order.id)),
    }


def _time_settlements(
    w: World,
    shop: _Shop,
    number: int,
    repeat: int,
    light: list[str],
    heavy: str,
    *,
    settle: bool,
) -> dict[str, dict[str, float]]:
    """create_order + approve + settle (or after_execute, which also reads back the user's
    credits): for a new light user each time and for the one heavy user, runs interleaved;
    the best run of each."""
    service, client = w.service, w.client
    finish = service.settle if settle else service.after_execute
    created = {"light": Best(), "heavy": Best()}
    settled = {"light": Best(), "heavy": Best()}
    for r in range(repeat):
        for side in ("light", "heavy") if r % 2 == 0 else ("heavy", "light"):
            create_s = total_s = 0.0
            gc.collect()
            for j in range(number):
                user = light[r * number + j] if side == "light" else heavy
                start = time.perf_counter()
                order = service.create_order(shop.pack.id, user)
                made = time.perf_counter()
                client.approve(order.id)
                finish(order.id)
                create_s += made - start
                total_s += time.perf_counter() - start
            created[side].add(create_s / number)
            settled[side].add(total_s / number)
    if settle:
        return {"settlement": {k: v.seconds for k, v in settled.items()}}
    return {
        "create_order": {k: v.seconds for k, v in created.items()},
        "settlement_with_after_execute": {k: v.seconds for k, v in settled.items()},
    }


def _history_count_budgets(
    backend: Backend, counts: dict[str, dict[str, Counts]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sql = backend.kind == "sql"
    for label, pair in counts.items():
        light, heavy = pair["light"], pair["heavy"]
        entry: dict[str, Any] = {"no_past_orders": light, "past_orders": heavy}
        grows = not _no_more(heavy, light)
        if label in GROWTH_ALLOWED:
            entry["grows_with_history"] = grows
        else:
            entry["independent_of_history"] = budget(
                f"round trips and {_read_unit(backend)} do not grow with the user's history",
                {
                    "no_past_orders": total(light),
                    "past_orders": total(heavy),
                    f"{_read_key(backend)}_no_past_orders": light[_read_key(backend)],
                    f"{_read_key(backend)}_past_orders": heavy[_read_key(backend)],
                },
                not grows,
            )
        limit = _call_budget(label)
        if limit is not None:
            reads, writes = limit
            worst = {k: max(light[k], heavy[k]) for k in light}
            text = f"reads <= {reads}, writes <= {writes}"
            met = worst["reads"] <= reads and worst["writes"] <= writes
            if sql:
                text += ", at most one transaction (BEGIN, COMMIT)"
                met = met and worst["other"] <= 2
            entry["round_trips"] = budget(
                text, {k: worst[k] for k in ("reads", "writes", "other") if k in worst}, met
            )
        out[label] = entry
    return out


def _call_budget(label: str) -> tuple[int, int] | None:
    """(reads, writes) allowed to one call: SPEC §9's consumption and balance budgets, and the
    project's storefront budgets. A retried keyed consumption consumes nothing: it reads the
    account, tries the insert the key's unique index refuses, and reads the line holding the
    key (three round trips, like a consumption, one of them a refused write)."""
    if label == "consume_tokens_retry_with_key":
        return (2, 1)
    if label.startswith(("tokens_consumed", "consume_tokens")):
        return (1, 2)
    return {
        "remaining_tokens": (2, 0),
        "load_offers": (3, 0),
        "load_offers_anonymous": (1, 0),
    }.get(label)


# -- storefront and the expiry job --------------------------------------------------------------


def measure_load_offers(backend: Backend, sizes: Sizes) -> dict[str, Any]:
    """load_offers over a large catalogue for a user with many paid subscriptions."""
    with world(backend) as w:
        groups = [f"plan-{i}" for i in range(sizes.subscriptions)]
        for i in range(sizes.offers):
            w.offer(
                f"offer-{i}",
                f"g{i % 25}",
                price="1.50",
                tokens=10,
                unlocked_by=[groups[i % len(groups)]] if i % 10 == 0 else [],
                overriding_key=f"key-{i % 40}",
                weight=i,
                tags=["web"] if i % 2 else [],
            )
        for group in groups:
            w.service.create_order(
                w.offer(group, group, kind="subscription", cycle="yearly").id, "vip"
            )
        service = w.service
        best = best_interleaved(
            {
                "anonymous": lambda i: service.load_offers(),
                "user": lambda i: service.load_offers("vip"),
                "user_with_tags": lambda i: service.load_offers("vip", ["web"]),
            },
            sizes.reads_number,
            sizes.repeat,
            seconds=sizes.run_seconds,
        )
        returned = len(service.load_offers("vip"))
    return {
        "offers": sizes.offers,
        "paid_subscriptions": sizes.subscriptions,
        **{f"{label}_ms": _ms(seconds) for label, seconds in best.items()},
        "returned_for_user": returned,
    }


def measure_expiry_job_memory(backend: Backend, sizes: Sizes) -> dict[str, Any]:
    """Memory of the expiry job (``usercredits expire``) as the number of users grows tenfold.

    ``transient_kib`` is what the job held at its peak beyond what it left stored (ledger
    lines, order history): the job streams user ids, so it must stay flat."""
    from usercredits.cli.expiry import expire_all

    out: dict[str, Any] = {}
    for users in (max(sizes.job_users // 10, 1), sizes.job_users):
        with world(backend) as w:
            offer = w.offer("pack", "ai", tokens=100)
            for i in range(users):
                w.service.create_order(offer.id, f"user-{i}")
            w.clock.advance(days=40)
            gc.collect()
            tracemalloc.start()
            summary = expire_all(w.service)
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            out[str(users)] = {
                "checked": summary.users_checked,
                "orders_expired": summary.orders_expired,
                "peak_kib": round(peak / 1024, 1),
                "transient_kib": round((peak - current) / 1024, 1),
            }
    small, big = out.values()
    out["transient_ratio_10x_users"] = _ratio(big["transient_kib"], max(small["transient_kib"], 1))
    return out


MEASURES: dict[str, Callable[[Backend, Sizes], dict[str, Any]]] = {
    "consumption": measure_consumption,
    "ledger": measure_ledger,
    "expiry_grants": measure_expiry_grants,
    "history": measure_history,
    "load_offers": measure_load_offers,
    "expiry_job_memory": measure_expiry_job_memory,
}


def run_backend(
    backend: Backend, sizes: Sizes, measures: list[str] | None = None
) -> dict[str, Any]:
    """The measures (all by default) on one backend."""
    sizes = sizes.for_backend(backend)
    results: dict[str, Any] = {"sizes": dataclasses.asdict(sizes)}
    for label, measure in MEASURES.items():
        if measures and label not in measures:
            continue
        start = time.perf_counter()
        result = measure(backend, sizes)
        seconds = round(time.perf_counter() - start, 2)
        if label == "ledger":
            results.update(result)
            results["ledger_seconds"] = seconds
        else:
            results[label] = {**result, "seconds": seconds}
    return results


__all__ = ["MEASURES", "Sizes", "run_backend"]
