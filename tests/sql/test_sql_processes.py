"""What only a real database shows: several processes (spawned, each with its own factory)
working on one SQLite file or one PostgreSQL database, and workers killed with SIGKILL in
the middle of settlements and consumptions.

The workers run :mod:`sql_workers`; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import multiprocessing
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from usercredits.models import (
    CombinedOffer,
    Cycle,
    LedgerReason,
    Offer,
    OfferKind,
    Order,
    Status,
)
from usercredits.service import PaymentService
from usercredits_sql import SqlDaoFactory

from .conftest import PostgresServer

PROCESSES = 4
JOIN_SECONDS = 90.0
KILL_ROUNDS = 8

spawn = multiprocessing.get_context("spawn")


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The workers' module, importable by the spawned processes too."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    return importlib.import_module("sql_workers")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database with its schema: a new SQLite file, or a new PostgreSQL
    database (dropped afterwards)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        SqlDaoFactory.from_url(url).close()
        yield url
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url_of(name).render_as_string(hide_password=False)
    finally:
        server.drop_database(name)


@pytest.fixture
def service(url: str, workers: ModuleType) -> Iterator[PaymentService]:
    """The test's own service on the shared database."""
    factory = SqlDaoFactory.from_url(url, create_schema=False)
    try:
        yield PaymentService(factory, workers.ApprovingPaymentClient())
    finally:
        factory.close()


def offer(service: PaymentService, name: str, **fields: Any) -> Offer:
    values: dict[str, Any] = {
        "name": name,
        "kind": OfferKind.TOKENS,
        "offer_group": name,
        "cycle": Cycle.MONTHLY,
        "price": "10",
        "token_count": 10,
        **fields,
    }
    return service.get_dao_factory().get_offer_dao().create(Offer(**values))


def run_all(processes: list[Any]) -> None:
    """Start the processes and wait for each (bounded); every one must exit cleanly."""
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN_SECONDS)
    stuck = [p for p in processes if p.is_alive()]
    for process in stuck:
        process.kill()
        process.join(10)
    assert stuck == [], f"{len(stuck)} worker(s) still running after {JOIN_SECONDS}s"
    assert [p.exitcode for p in processes] == [0] * len(processes)


def collect(results: Any, count: int) -> list[Any]:
    return [results.get(timeout=JOIN_SECONDS) for _ in range(count)]


def purchase_lines(service: PaymentService, order: Order) -> int:
    lines = service.get_dao_factory().get_token_timetable_dao()
    return lines.count({"order_id": order.id, "reason": LedgerReason.PURCHASE})


def test_processes_consuming_one_balance_take_it_exactly_without_overdraft(
    service: PaymentService, url: str, workers: ModuleType
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    service.create_order(offer(service, "pack", price="0", token_count=40).id, user)
    barrier = spawn.Barrier(PROCESSES)
    results = spawn.Queue()
    run_all(
        [
            spawn.Process(
                target=workers.consume_until_refused,
                args=(url, user, "pack", 100, barrier, results),
            )
            for _ in range(PROCESSES)
        ]
    )
    outcomes = collect(results, PROCESSES)
    assert sum(consumed for consumed, _ in outcomes) == 40
    assert service.remaining_tokens(user, "pack") == 0
    lines = service.get_dao_factory().get_token_timetable_dao().lines_after(user, "pack", 0)
    running = list(itertools.accumulate(line.tokens for line in lines))
    assert running[-1] == 0
    assert min(running) >= 0
    assert service.audit(user).ok


def test_processes_never_consume_tokens_held_by_others(
    service: PaymentService, url: str, workers: ModuleType
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    service.grant_tokens(user, "ai", 240)
    kept = service.reserve(user, "ai", 40, ttl=timedelta(hours=1))
    barrier = spawn.Barrier(PROCESSES)
    results = spawn.Queue()
    run_all(
        [
            spawn.Process(
                target=workers.hold_capture_and_consume, args=(url, user, "ai", barrier, results)
            )
            for _ in range(PROCESSES)
        ]
    )
    outcomes = collect(results, PROCESSES)
    assert sum(failed for _, failed in outcomes) == 0
    assert sum(taken for taken, _ in outcomes) == 200
    assert service.available_tokens(user, "ai") == 0
    assert service.capture(kept.id).tokens == -40
    assert service.remaining_tokens(user, "ai") == 0
    assert service.audit(user).ok


def test_processes_racing_to_settle_orders_grant_each_once(
    service: PaymentService, url: str, workers: ModuleType
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    pack = offer(service, "pack")
    orders = [service.create_order(pack.id, user) for _ in range(5)]
    barrier = spawn.Barrier(PROCESSES)
    results = spawn.Queue()
    run_all(
        [
            spawn.Process(
                target=workers.settle_each,
                args=(url, [str(o.id) for o in orders], barrier, results),
            )
            for _ in range(PROCESSES)
        ]
    )
    outcomes = collect(results, PROCESSES)
    for index, order in enumerate(orders):
        per_order = Counter(outcome[index] for outcome in outcomes)
        assert set(per_order) <= {"paid", "duplicate"}, per_order
        assert per_order["paid"] >= 1
        assert purchase_lines(service, order) == 1
    assert service.remaining_tokens(user, "pack") == 10 * len(orders)
    assert service.audit(user).ok


def test_workers_killed_in_the_middle_of_operations_leave_everything_whole(
    service: PaymentService, url: str, workers: ModuleType
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    pack = offer(service, "pack", token_count=5)
    plan = offer(service, "plan", token_count=20, append_date=True)
    bundle = offer(
        service,
        "bundle",
        token_count=3,
        combined_items=[
            CombinedOffer(offer_id=pack.id, offer_group="pack", quantity=2),
            CombinedOffer(offer_id=plan.id, offer_group="plan"),
        ],
    )
    offer_ids = [str(o.id) for o in (pack, bundle, plan)]
    chance = random.Random(uuid.uuid4().int)
    completed = spawn.Queue()
    for round_ in range(KILL_ROUNDS):
        ready = spawn.Event()
        worker = spawn.Process(
            target=workers.churn, args=(url, user, offer_ids, round_, ready, completed)
        )
        worker.start()
        try:
            started = time.monotonic()
            while not ready.wait(0.1):
                assert worker.is_alive(), f"worker {round_} died with exit code {worker.exitcode}"
                assert time.monotonic() - started < JOIN_SECONDS, f"worker {round_} not ready"
            time.sleep(chance.uniform(0.05, 0.6))
            assert worker.is_alive(), f"worker {round_} died with exit code {worker.exitcode}"
        finally:
            worker.kill()
            worker.join(JOIN_SECONDS)
        assert not worker.is_alive()

    interrupted = [completed.get(timeout=JOIN_SECONDS) for _ in range(KILL_ROUNDS)]
    report = service.reconcile(user)
    assert service.reconcile(user).completed_orders == []
    audit = service.audit(user)
    assert audit.ok, (audit, report, interrupted)
    order_dao = service.get_dao_factory().get_order_dao()
    stored = order_dao.find({"user_id": user})
    assert stored, "the workers stored nothing"
    assert [o.id for o in stored if o.in_progress] == []
    paid = [o for o in stored if o.status is Status.PAID]
    assert paid, "no settlement completed before the kills"
    for order in paid:
        if order.token_count > 0:
            assert purchase_lines(service, order) == 1, order
        if order.parent_id is None:
            for index in range(len(order.combined_items)):
                assert order_dao.find_child(order.id, index) is not None, (order, index)
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as database:
            assert database.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
