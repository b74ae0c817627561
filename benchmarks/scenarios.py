"""The measures of ``benchmarks/run.py``, each run on one backend.

Baselines do only the unavoidable storage work through the same backend's DAOs
(for consumption: one ledger insert and one atomic balance update), so a ratio
library/baseline is the cost of the service's rules on top of the storage.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import statistics
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from usercredits import (
    CombinedOffer,
    DaoFactory,
    FrozenClock,
    InMemoryDaoFactory,
    ManualPaymentClient,
    Offer,
    PaymentService,
    TokenTimetable,
)
from usercredits.cli.expiry import expire_all

START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Sizes:
    """How big each measure is."""

    ops: int
    ledger_small: int
    ledger_big: int
    expiry_ledgers: tuple[int, ...]
    expiry_grants: tuple[int, ...]
    offers: int
    subscriptions: int
    orders: int
    expiry_users: int

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            ops=4000,
            ledger_small=100,
            ledger_big=100_000,
            expiry_ledgers=(100, 1_000, 10_000),
            expiry_grants=(1, 10, 100),
            offers=1_000,
            subscriptions=50,
            orders=500,
            expiry_users=10_000,
        )

    def for_backend(self, name: str) -> Sizes:
        """These sizes, capped on mongomock: it scans whole collections on every query and
        every unique insert, so it measures round trips, not speed at scale."""
        if name != "mongomock":
            return self
        return dataclasses.replace(
            self,
            ops=min(self.ops, 300),
            ledger_big=min(self.ledger_big, 2_000),
            expiry_ledgers=tuple(n for n in self.expiry_ledgers if n <= 1_000),
            orders=min(self.orders, 100),
            expiry_users=min(self.expiry_users, 200),
        )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            ops=50,
            ledger_small=10,
            ledger_big=200,
            expiry_ledgers=(10, 50),
            expiry_grants=(1, 3),
            offers=20,
            subscriptions=3,
            orders=10,
            expiry_users=30,
        )


def _mongo_factory(uri: str) -> DaoFactory:
    from usercredits_mongo import MongoDaoFactory

    return MongoDaoFactory.from_uri(uri, f"uc_bench_{uuid.uuid4().hex[:12]}")


BACKENDS: dict[str, Callable[[], DaoFactory]] = {
    "memory": InMemoryDaoFactory,
    "mongomock": lambda: _mongo_factory("mongomock://localhost"),
    "mongodb": lambda: _mongo_factory(os.environ["USERCREDITS_TEST_MONGO_URI"]),
}


def _drop(factory: DaoFactory) -> None:
    """Close the backend, dropping its database first when it has one (MongoDB)."""
    database = getattr(factory, "database", None)
    if database is not None:
        database.client.drop_database(database.name)
    factory.close()


@contextmanager
def _backend(name: str) -> Iterator[tuple[DaoFactory, PaymentService, FrozenClock]]:
    factory = BACKENDS[name]()
    clock = FrozenClock(START)
    service = PaymentService(factory, ManualPaymentClient(), clock=clock)
    try:
        yield factory, service, clock
    finally:
        _drop(factory)


def _per_op(fn: Callable[[int], Any], n: int, threads: int = 1) -> float:
    """Mean wall-clock seconds per call of ``fn(i)`` over ``n`` calls spread on ``threads``."""
    gc.collect()
    if threads == 1:
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        return (time.perf_counter() - start) / n
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        barrier.wait()
        try:
            for i in range(offset, n, threads):
                fn(i)
        except BaseException as e:  # reported below
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed / n


def _median_latency(fn: Callable[[], Any], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 2)


def _consumption_calls(
    factory: DaoFactory, service: PaymentService, clock: FrozenClock
) -> dict[str, Callable[[int], Any]]:
    ledger = factory.get_token_timetable_dao()
    credits = factory.get_user_credits_dao()

    def baseline(i: int) -> None:
        line = TokenTimetable(
            user_id="u", offer_group="ai", tokens=-1, created_at=clock(), reason="consumption"
        )
        ledger.create(line)
        credits.add_tokens("u", "ai", -1, now=clock())

    return {
        "baseline": baseline,
        "tokens_consumed": lambda i: service.tokens_consumed("u", "ai", 1),
        "tokens_consumed_keyed": lambda i: service.tokens_consumed(
            "u", "ai", 1, idempotency_key=f"k{i}"
        ),
        "consume_tokens": lambda i: service.consume_tokens("u", "ai", 1),
    }


def measure_consumption(name: str, sizes: Sizes) -> dict[str, Any]:
    """Throughput of both consumption calls against one ledger insert + one balance update.

    Each call runs on a fresh backend holding the same data, so none pays for the lines
    another one wrote (mongomock's inserts slow down as a collection grows)."""
    results: dict[str, Any] = {}
    for threads in (1, 4):
        per_op: dict[str, float] = {}
        for label in ("baseline", "tokens_consumed", "tokens_consumed_keyed", "consume_tokens"):
            with _backend(name) as (factory, service, clock):
                factory.get_user_credits_dao().add_tokens("u", "ai", 10 * sizes.ops, now=clock())
                call = _consumption_calls(factory, service, clock)[label]
                per_op[label] = _per_op(call, sizes.ops, threads)
        base = per_op.pop("baseline")
        for label, value in per_op.items():
            ratio = value / base
            entry: dict[str, Any] = {
                "threads": threads,
                "library_ops_per_s": round(1 / value),
                "baseline_ops_per_s": round(1 / base),
                "ratio_library_over_baseline": round(ratio, 2),
            }
            if name == "memory":
                entry["budget"] = "<= 3.0"
                entry["budget_met"] = ratio <= 3.0
            results[f"{label}_{threads}_threads"] = entry
    return results


def _fill_ledger(factory: DaoFactory, user: str, lines: int, clock: FrozenClock) -> None:
    ledger = factory.get_token_timetable_dao()
    credits = factory.get_user_credits_dao()
    for _ in range(lines):
        ledger.create(
            TokenTimetable(
                user_id=user, offer_group="ai", tokens=-1, created_at=clock(), reason="consumption"
            )
        )
    credits.add_tokens(user, "ai", -lines, now=clock())


def measure_balance_reads(name: str, sizes: Sizes) -> dict[str, Any]:
    """Balance read latency as the user's ledger grows: it must stay flat."""
    big = sizes.ledger_big
    with _backend(name) as (factory, service, clock):
        _fill_ledger(factory, "small", sizes.ledger_small, clock)
        _fill_ledger(factory, "big", big, clock)
        repeat = 300 if not sizes.ops < 100 else 20
        out: dict[str, Any] = {"ledger_lines": [sizes.ledger_small, big]}
        for label, call in (
            ("remaining_tokens", lambda u: service.remaining_tokens(u, "ai")),
            ("load_user_credits", lambda u: service.load_user_credits(u)),
        ):
            small_t = _median_latency(lambda: call("small"), repeat)
            big_t = _median_latency(lambda: call("big"), repeat)
            entry: dict[str, Any] = {
                "small_us": _us(small_t),
                "big_us": _us(big_t),
                "ratio_big_over_small": round(big_t / small_t, 2),
            }
            if name == "memory":
                entry["budget"] = "<= 1.3"
                entry["budget_met"] = big_t / small_t <= 1.3
            out[label] = entry
    return out


def _token_offer(factory: DaoFactory, cycle: str = "monthly", tokens: int = 100) -> Offer:
    return factory.get_offer_dao().create(
        Offer(
            name=f"pack-{cycle}",
            kind="tokens",
            offer_group="ai",
            cycle=cycle,
            price=Decimal(0),
            token_count=tokens,
        )
    )


def measure_expiry(name: str, sizes: Sizes) -> dict[str, Any]:
    """check_for_expired_orders cost by ledger size (one grant) and by number of grants."""
    out: dict[str, Any] = {"by_ledger_lines": {}, "by_grants": {}}
    for lines in sizes.expiry_ledgers:
        with _backend(name) as (factory, service, clock):
            offer = _token_offer(factory, tokens=lines * 2)
            service.create_order(offer.id, "u")
            _fill_ledger(factory, "u", lines, clock)
            clock.advance(days=40)
            start = time.perf_counter()
            report = service.check_for_expired_orders("u")
            out["by_ledger_lines"][str(lines)] = {
                "ms": round((time.perf_counter() - start) * 1e3, 3),
                "removed": report.removed_tokens.get("ai", 0),
            }
    for grants in sizes.expiry_grants:
        with _backend(name) as (factory, service, clock):
            offer = _token_offer(factory)
            for _ in range(grants):
                service.create_order(offer.id, "u")
            service.tokens_consumed("u", "ai", 50)
            clock.advance(days=40)
            start = time.perf_counter()
            report = service.check_for_expired_orders("u")
            out["by_grants"][str(grants)] = {
                "ms": round((time.perf_counter() - start) * 1e3, 3),
                "expired_orders": len(report.expired_orders),
            }
    return out


def measure_load_offers(name: str, sizes: Sizes) -> dict[str, Any]:
    """load_offers over a large catalogue for a user with many paid subscriptions."""
    with _backend(name) as (factory, service, _clock):
        offers = factory.get_offer_dao()
        groups = [f"plan-{i}" for i in range(sizes.subscriptions)]
        for i in range(sizes.offers):
            unlocked = [groups[i % len(groups)]] if i % 10 == 0 else []
            offers.create(
                Offer(
                    name=f"offer-{i}",
                    kind="tokens",
                    offer_group=f"g{i % 25}",
                    cycle="monthly",
                    price=Decimal("1.50"),
                    token_count=10,
                    unlocked_by=unlocked,
                    overriding_key=f"key-{i % 40}",
                    weight=i,
                    tags=["web"] if i % 2 else [],
                )
            )
        for group in groups:
            plan = offers.create(
                Offer(
                    name=group,
                    kind="subscription",
                    offer_group=group,
                    cycle="yearly",
                    price=Decimal(0),
                )
            )
            service.create_order(plan.id, "vip")
        repeat = 20 if sizes.ops >= 100 else 3
        anonymous = _median_latency(lambda: service.load_offers(), repeat)
        user = _median_latency(lambda: service.load_offers("vip"), repeat)
        tagged = _median_latency(lambda: service.load_offers("vip", ["web"]), repeat)
        return {
            "offers": sizes.offers,
            "paid_subscriptions": sizes.subscriptions,
            "anonymous_ms": round(anonymous * 1e3, 3),
            "user_ms": round(user * 1e3, 3),
            "user_with_tags_ms": round(tagged * 1e3, 3),
            "returned_for_user": len(service.load_offers("vip")),
        }


def measure_orders(name: str, sizes: Sizes) -> dict[str, Any]:
    """create_order + after_execute throughput through the manual client."""
    out: dict[str, Any] = {}
    for label, items in (("plain", 0), ("bundle_of_3", 3)):
        with _backend(name) as (factory, service, clock):
            client = ManualPaymentClient()
            service = PaymentService(factory, client, clock=clock)
            offers = factory.get_offer_dao()
            parts = [
                offers.create(
                    Offer(
                        name=f"item-{i}",
                        kind="tokens",
                        offer_group=f"item-{i}",
                        cycle="monthly",
                        price=Decimal("1"),
                        token_count=10,
                    )
                )
                for i in range(items)
            ]
            offer = offers.create(
                Offer(
                    name=label,
                    kind="tokens",
                    offer_group="main",
                    cycle="monthly",
                    price=Decimal("9.99"),
                    token_count=100,
                    combined_items=[
                        CombinedOffer(offer_id=p.id, offer_group=p.offer_group) for p in parts
                    ],
                )
            )

            def order_and_pay(i: int) -> None:
                order = service.create_order(offer.id, f"user-{i}")
                client.approve(order.id)
                service.after_execute(order.id)

            per = _per_op(order_and_pay, sizes.orders)
            out[label] = {"orders_per_s": round(1 / per, 1), "ms_per_order": round(per * 1e3, 3)}
    return out


def measure_expiry_job_memory(name: str, sizes: Sizes) -> dict[str, Any]:
    """Memory of the expiry job (``usercredits expire``) as the number of users grows tenfold.

    ``transient_kib`` is what the job held at its peak beyond what it left stored (ledger
    lines, order history): the job streams user ids, so it must stay flat."""
    out: dict[str, Any] = {}
    for users in (max(sizes.expiry_users // 10, 1), sizes.expiry_users):
        with _backend(name) as (factory, service, clock):
            offer = _token_offer(factory)
            for i in range(users):
                service.create_order(offer.id, f"user-{i}")
            clock.advance(days=40)
            gc.collect()
            tracemalloc.start()
            summary = expire_all(service)
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            out[str(users)] = {
                "checked": summary.users_checked,
                "orders_expired": summary.orders_expired,
                "peak_kib": round(peak / 1024, 1),
                "transient_kib": round((peak - current) / 1024, 1),
            }
    small, big = out.values()
    out["transient_ratio_10x_users"] = round(
        big["transient_kib"] / max(small["transient_kib"], 1), 2
    )
    return out


_MONGO_OPERATIONS = {
    **dict.fromkeys(
        (
            "find",
            "find_one",
            "count_documents",
            "aggregate",
            "distinct",
            "estimated_document_count",
        ),
        "reads",
    ),
    **dict.fromkeys(
        (
            "insert_one",
            "insert_many",
            "update_one",
            "update_many",
            "replace_one",
            "delete_one",
            "delete_many",
            "find_one_and_update",
            "find_one_and_replace",
            "find_one_and_delete",
            "bulk_write",
        ),
        "writes",
    ),
}
_SERVER_COMMANDS = {
    **dict.fromkeys(("find", "aggregate", "count", "distinct", "getMore"), "reads"),
    **dict.fromkeys(("insert", "update", "delete", "findAndModify"), "writes"),
}


class RoundTrips:
    """Counts the reads and writes a backend sends to MongoDB: pymongo command monitoring on a
    real server, a wrapper of mongomock's collection methods on mongomock."""

    def __init__(self) -> None:
        self.counts = {"reads": 0, "writes": 0}
        self.active = False
        self._depth = threading.local()

    def add(self, kind: str) -> None:
        if self.active:
            self.counts[kind] += 1

    def install_mongomock(self) -> Callable[[], None]:
        import mongomock.collection

        cls = mongomock.collection.Collection
        originals = {name: getattr(cls, name) for name in _MONGO_OPERATIONS if hasattr(cls, name)}

        def counting(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                # mongomock implements some calls with others (find_one uses find): count the
                # outermost call only, as one round trip.
                depth = getattr(self._depth, "value", 0)
                if depth == 0:
                    self.add(_MONGO_OPERATIONS[name])
                self._depth.value = depth + 1
                try:
                    return method(*args, **kwargs)
                finally:
                    self._depth.value = depth

            return wrapper

        for name, method in originals.items():
            setattr(cls, name, counting(name, method))
        return lambda: [setattr(cls, n, m) for n, m in originals.items()] and None

    def install_pymongo(self) -> Callable[[], None]:
        from pymongo import monitoring

        counter = self

        class Listener(monitoring.CommandListener):
            def started(self, event: monitoring.CommandStartedEvent) -> None:
                kind = _SERVER_COMMANDS.get(event.command_name)
                if kind:
                    counter.add(kind)

            def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
                pass

            def failed(self, event: monitoring.CommandFailedEvent) -> None:
                pass

        monitoring.register(Listener())
        return lambda: None

    def measure(self, call: Callable[[], Any]) -> dict[str, int]:
        self.counts = {"reads": 0, "writes": 0}
        self.active = True
        try:
            call()
        finally:
            self.active = False
        return dict(self.counts)


_COUNTER = RoundTrips()
_INSTALLED: set[str] = set()


def _budget(counts: dict[str, int], reads: int | None, writes: int | None) -> dict[str, Any]:
    met = (reads is None or counts["reads"] <= reads) and (
        writes is None or counts["writes"] <= writes
    )
    limits = []
    if reads is not None:
        limits.append(f"reads <= {reads}")
    if writes is not None:
        limits.append(f"writes <= {writes}")
    return {**counts, "budget": ", ".join(limits), "budget_met": met}


def measure_round_trips(name: str, sizes: Sizes) -> dict[str, Any]:
    """Reads and writes sent to MongoDB per service call, against the budgets."""
    if name == "memory":
        return {"skipped": "round trips are counted on the Mongo backends"}
    if name not in _INSTALLED:
        _INSTALLED.add(name)
        if name == "mongomock":
            _COUNTER.install_mongomock()
        else:
            _COUNTER.install_pymongo()
    count = _COUNTER.measure
    out: dict[str, Any] = {}
    with _backend(name) as (factory, service, clock):
        client = ManualPaymentClient()
        service = PaymentService(factory, client, clock=clock)
        offers = factory.get_offer_dao()
        pack = offers.create(
            Offer(
                name="pack",
                kind="tokens",
                offer_group="ai",
                cycle="monthly",
                price=Decimal("9.99"),
                token_count=1_000,
            )
        )
        plans = [
            offers.create(
                Offer(
                    name=f"plan-{i}",
                    kind="subscription",
                    offer_group=f"plan-{i}",
                    cycle="yearly",
                    price=Decimal(0),
                )
            )
            for i in range(5)
        ]
        for i in range(20):
            offers.create(
                Offer(
                    name=f"vip-{i}",
                    kind="tokens",
                    offer_group="vip",
                    cycle="monthly",
                    price=Decimal(5),
                    token_count=10,
                    unlocked_by=["plan-0"],
                    overriding_key="k",
                    weight=i,
                )
            )

        def paid_order(user: str) -> Any:
            order = service.create_order(pack.id, user)
            client.approve(order.id)
            return order

        first = paid_order("u")
        service.after_execute(first.id)
        for plan in plans:
            service.create_order(plan.id, "u")
        service.tokens_consumed("u", "ai", 1)
        out["tokens_consumed"] = _budget(count(lambda: service.tokens_consumed("u", "ai", 1)), 0, 2)
        out["tokens_consumed_with_key"] = _budget(
            count(lambda: service.tokens_consumed("u", "ai", 1, idempotency_key="a")), 0, 2
        )
        out["consume_tokens"] = _budget(count(lambda: service.consume_tokens("u", "ai", 1)), 1, 2)
        out["consume_tokens_with_key"] = _budget(
            count(lambda: service.consume_tokens("u", "ai", 1, idempotency_key="b")), 1, 2
        )
        out["consume_tokens_retry_with_key"] = _budget(
            count(lambda: service.consume_tokens("u", "ai", 1, idempotency_key="b")), 1, 0
        )
        out["remaining_tokens"] = _budget(count(lambda: service.remaining_tokens("u", "ai")), 1, 0)
        out["load_user_credits"] = _budget(count(lambda: service.load_user_credits("u")), None, 0)
        out["load_offers"] = _budget(count(lambda: service.load_offers("u")), 3, 0)
        out["load_offers_anonymous"] = _budget(count(lambda: service.load_offers()), 1, 0)
        out["create_order"] = count(lambda: service.create_order(pack.id, "u"))
        newcomer = paid_order("new-user")
        out["after_execute_first_order_of_a_user"] = count(
            lambda: service.after_execute(newcomer.id)
        )
        second = paid_order("u")
        out["after_execute_user_with_1_paid_order"] = count(
            lambda: service.after_execute(second.id)
        )
        for _ in range(20):
            service.after_execute(paid_order("u").id)
        late = paid_order("u")
        with_history = count(lambda: service.after_execute(late.id))
        out["after_execute_user_with_21_paid_orders"] = {
            **with_history,
            "budget": "same as with 1 paid order",
            "budget_met": with_history == out["after_execute_user_with_1_paid_order"],
        }
        out["check_for_expired_orders_nothing_due"] = count(
            lambda: service.check_for_expired_orders("u")
        )
        clock.advance(days=40)
        out["check_for_expired_orders_22_due"] = count(
            lambda: service.check_for_expired_orders("u")
        )
    return out


MEASURES: dict[str, Callable[[str, Sizes], dict[str, Any]]] = {
    "round_trips": measure_round_trips,
    "consumption": measure_consumption,
    "balance_reads": measure_balance_reads,
    "expiry": measure_expiry,
    "load_offers": measure_load_offers,
    "orders": measure_orders,
    "expiry_job_memory": measure_expiry_job_memory,
}


def run_backend(name: str, sizes: Sizes) -> dict[str, Any]:
    """Every measure on one backend."""
    sizes = sizes.for_backend(name)
    results: dict[str, Any] = {"sizes": dataclasses.asdict(sizes)}
    for label, measure in MEASURES.items():
        start = time.perf_counter()
        results[label] = measure(name, sizes)
        results[label]["seconds"] = round(time.perf_counter() - start, 2)
    return results


__all__ = ["BACKENDS", "MEASURES", "Sizes", "run_backend"]
