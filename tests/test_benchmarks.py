"""The benchmark script runs, reports every measure, and the storage budgets of SPEC §9 hold.

Timings are never checked here: they depend on the machine (``make bench`` reports them
against their budgets). What a call sends to its database does not: round trips and
documents read on MongoDB (mongomock), statements and rows read on SQL (SQLite). The
script counts them in its ``--quick`` run, and these tests check them.
"""

from __future__ import annotations

import importlib.util
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
    "expiry_by_ledger_lines",
    "expiry_grants",
    "history",
    "load_offers",
    "expiry_job_memory",
}
COUNTED = ["mongomock"] + (["sqlite"] if importlib.util.find_spec("usercredits_sql") else [])
BACKENDS = ["memory", *COUNTED]
CONSUMPTIONS = [
    "tokens_consumed",
    "tokens_consumed_with_key",
    "consume_tokens",
    "consume_tokens_with_key",
]
GROWTH_ALLOWED = {"load_user_credits", "history", "after_execute"}
"""``after_execute`` answers with the user's credits (every subscription); ``settle``, the
settlement alone, is checked."""
ROUND_TRIPS = ("reads", "writes", "other")
TRANSACTION = {"mongomock": 0, "sqlite": 2}
"""Statements that only open and close a transaction (``BEGIN``, ``COMMIT``): a SQL append
runs in one, holding the account; MongoDB appends by compare-and-set, without any."""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("bench") / "results.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"]
    command += ["--output", str(output)]
    for backend in BACKENDS:
        command += ["--backend", backend]
    done = subprocess.run(command, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(output.read_text())
    assert json.loads(done.stdout) == result
    return result


def calls(report: dict[str, Any], backend: str) -> dict[str, Any]:
    """The counted calls of the history measure: each for a user without past orders and for
    one with many."""
    counted: dict[str, Any] = report["backends"][backend]["history"]["counts"]
    return counted


def round_trips(counts: dict[str, int]) -> int:
    return sum(counts.get(kind, 0) for kind in ROUND_TRIPS)


def test_every_measure_is_reported_for_each_backend(report: dict[str, Any]) -> None:
    assert set(report["backends"]) == set(BACKENDS)
    for measures in report["backends"].values():
        assert set(measures) >= MEASURES


@pytest.mark.parametrize("backend", COUNTED)
@pytest.mark.parametrize("call", CONSUMPTIONS)
def test_a_consumption_costs_at_most_one_read_and_two_writes(
    report: dict[str, Any], backend: str, call: str
) -> None:
    for counts in (
        calls(report, backend)[call]["no_past_orders"],
        calls(report, backend)[call]["past_orders"],
    ):
        assert counts["reads"] <= 1, counts
        assert counts["writes"] <= 2, counts
        assert counts.get("other", 0) == TRANSACTION[backend], counts


@pytest.mark.parametrize("backend", COUNTED)
def test_a_retried_keyed_consumption_reads_the_first_line_and_stores_nothing(
    report: dict[str, Any], backend: str
) -> None:
    pair = calls(report, backend)["consume_tokens_retry_with_key"]
    for counts in (pair["no_past_orders"], pair["past_orders"]):
        # The account, the insert the key's unique index refuses, the line holding the key.
        assert counts["reads"] <= 2, counts
        assert counts["writes"] <= 1, counts
        assert counts.get("other", 0) == TRANSACTION[backend], counts
        assert round_trips(counts) <= 3 + TRANSACTION[backend], counts


@pytest.mark.parametrize("backend", COUNTED)
def test_settling_reads_the_same_whatever_the_users_history(
    report: dict[str, Any], backend: str
) -> None:
    pair = calls(report, backend)["settle"]
    assert pair["past_orders"] == pair["no_past_orders"]


@pytest.mark.parametrize("backend", COUNTED)
def test_reading_a_balance_costs_at_most_two_reads(report: dict[str, Any], backend: str) -> None:
    counted = [
        *calls(report, backend)["remaining_tokens"].values(),
        *report["backends"][backend]["balance_reads"]["remaining_tokens"]["counts"].values(),
    ]
    for counts in (c for c in counted if "reads" in c):
        assert counts["reads"] <= 2, counts
        assert round_trips(counts) == counts["reads"], counts


@pytest.mark.parametrize("backend", COUNTED)
def test_no_call_but_credits_and_history_reads_more_for_a_user_with_a_long_history(
    report: dict[str, Any], backend: str
) -> None:
    grown = {
        call: (pair["no_past_orders"], pair["past_orders"])
        for call, pair in calls(report, backend).items()
        if call not in GROWTH_ALLOWED
        and any(pair["past_orders"][k] > pair["no_past_orders"][k] for k in pair["past_orders"])
    }
    assert grown == {}


@pytest.mark.parametrize("backend", COUNTED)
def test_expiring_a_grant_costs_the_same_whatever_the_ledgers_size(
    report: dict[str, Any], backend: str
) -> None:
    counts = report["backends"][backend]["expiry_by_ledger_lines"]["counts"]
    assert all(counts["big"][k] <= counts["small"][k] for k in counts["small"]), counts


@pytest.mark.parametrize("backend", COUNTED)
def test_expiring_grants_at_once_costs_round_trips_linear_in_their_number(
    report: dict[str, Any], backend: str
) -> None:
    measure = report["backends"][backend]["expiry_grants"]
    grants = sorted(int(g) for g in measure if g.isdigit())
    counts = measure["counts"]
    per_grant = [round_trips(counts[str(g)]) / g for g in grants]
    assert per_grant == sorted(per_grant, reverse=True), per_grant
    middle = grants[len(grants) // 2]
    long = next(v for k, v in counts.items() if k.startswith(f"{middle}_with_"))
    assert all(long[k] <= counts[str(middle)][k] for k in long), (long, counts[str(middle)])


@pytest.mark.parametrize("backend", COUNTED)
def test_the_storefront_costs_at_most_three_reads_for_a_user_and_one_for_anyone(
    report: dict[str, Any], backend: str
) -> None:
    counted = calls(report, backend)
    for call, most in (("load_offers", 3), ("load_offers_anonymous", 1)):
        for counts in (counted[call]["no_past_orders"], counted[call]["past_orders"]):
            assert counts["reads"] <= most, counts
            assert round_trips(counts) == counts["reads"], counts


def test_the_expiry_job_walks_every_user(report: dict[str, Any]) -> None:
    for measures in report["backends"].values():
        runs = {k: v for k, v in measures["expiry_job_memory"].items() if k.isdigit()}
        assert len(runs) == 2
        for users, run in runs.items():
            assert run["checked"] == run["orders_expired"] == int(users)
