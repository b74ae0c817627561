"""The benchmark scripts run, report every measure, and keep the storage round-trip budgets.

Timings are not checked here (they depend on the machine; ``make bench`` reports them);
round trips to MongoDB are counts, the same on every machine, so their budgets are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MEASURES = {
    "consumption",
    "balance_reads",
    "expiry",
    "load_offers",
    "orders",
    "expiry_job_memory",
    "round_trips",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("bench") / "results.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--output"]
    command += [str(output), "--backend", "memory", "--backend", "mongomock"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(output.read_text())
    assert json.loads(done.stdout) == result
    return result


def test_every_measure_is_reported_for_each_backend(report: dict[str, Any]) -> None:
    assert set(report["backends"]) == {"memory", "mongomock"}
    for measures in report["backends"].values():
        assert set(measures) >= MEASURES


@pytest.mark.parametrize(
    ("call", "reads", "writes"),
    [
        ("tokens_consumed", 0, 2),
        ("tokens_consumed_with_key", 0, 2),
        ("consume_tokens", 0, 2),
        ("consume_tokens_with_key", 1, 2),
        ("consume_tokens_retry_with_key", 1, 0),
        ("remaining_tokens", 1, 0),
        ("load_offers", 3, 0),
        ("load_offers_anonymous", 1, 0),
    ],
)
def test_mongo_round_trips_stay_within_budget(
    report: dict[str, Any], call: str, reads: int, writes: int
) -> None:
    counted = report["backends"]["mongomock"]["round_trips"][call]
    assert counted["reads"] <= reads
    assert counted["writes"] <= writes
    assert counted["budget_met"] is True


def test_settling_costs_the_same_whatever_the_users_history(report: dict[str, Any]) -> None:
    trips = report["backends"]["mongomock"]["round_trips"]
    assert (
        trips["after_execute_user_with_21_paid_orders"]["reads"]
        == (trips["after_execute_user_with_1_paid_order"]["reads"])
    )
    assert (
        trips["after_execute_user_with_21_paid_orders"]["writes"]
        == (trips["after_execute_user_with_1_paid_order"]["writes"])
    )


def test_the_expiry_job_walks_every_user(report: dict[str, Any]) -> None:
    for measures in report["backends"].values():
        runs = {k: v for k, v in measures["expiry_job_memory"].items() if k.isdigit()}
        assert len(runs) == 2
        for users, run in runs.items():
            assert run["checked"] == run["orders_expired"] == int(users)
