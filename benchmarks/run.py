"""Benchmarks of usercredits against the cheapest code doing the same work outside it.

Run with ``make bench`` (or ``python benchmarks/run.py [--quick] [--backend ...]
[--measure ...]``). Prints a JSON report and writes it to ``benchmarks/results.json``.
Every entry holding ``budget_met`` states a budget and whether it was met;
``budgets_missed`` lists those that were not, and the exit status is 1 when one was missed
(except with ``--quick``, whose sizes are too small for timings to mean anything).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backends import (
    BACKENDS,
    MONGO_URI_VARIABLE,
    POSTGRES_URL_VARIABLE,
    ROOT,
    make_backend,
    sql_available,
)
from scenarios import MEASURES, Sizes, run_backend

RESULTS = Path(__file__).resolve().parent / "results.json"


def default_backends() -> list[str]:
    """memory and mongomock; MongoDB when ``USERCREDITS_TEST_MONGO_URI`` names a server;
    SQLite and PostgreSQL when the SQL backend imports (PostgreSQL on the server of
    ``USERCREDITS_TEST_POSTGRES_URL``, else on a throwaway cluster)."""
    names = ["memory", "mongomock"]
    if os.environ.get(MONGO_URI_VARIABLE):
        names.append("mongodb")
    if sql_available() is None:
        names += ["sqlite", "postgresql"]
    return names


def budgets(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every entry of the report stating a budget, with its path."""
    if isinstance(node, dict):
        if "budget_met" in node:
            yield path, node
        for key, value in node.items():
            yield from budgets(value, f"{path}.{key}" if path else key)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="backend(s) to measure (default: " + ", ".join(default_backends()) + ")",
    )
    parser.add_argument(
        "--measure", action="append", choices=sorted(MEASURES), help="measure(s) to run"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    explicit = bool(args.backend)
    names = args.backend or default_backends()
    sizes = Sizes.quick() if args.quick else Sizes.full()
    status = _git("status", "--porcelain", "--", "src")
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "library_changed_since_commit": None if status is None else bool(status),
        "quick": args.quick,
        "backends": {},
    }
    for name in names:
        print(f"measuring {name}...", file=sys.stderr)
        start = time.perf_counter()
        try:
            backend = make_backend(name)
        except Exception as e:
            if explicit:
                raise
            hint = f" (set {POSTGRES_URL_VARIABLE} to use a running server)"
            reason = f"{type(e).__name__}: {e}" + (hint if name == "postgresql" else "")
            print(f"skipping {name}: {reason}", file=sys.stderr)
            report["backends"][name] = {"skipped": reason}
            continue
        try:
            report["backends"][name] = run_backend(backend, sizes, args.measure)
        finally:
            backend.close()
        report["backends"][name]["seconds"] = round(time.perf_counter() - start, 1)
    report["budgets"] = {
        f"{name}.{path}": {k: entry[k] for k in ("budget", "measured", "budget_met")}
        for name, measures in report["backends"].items()
        for path, entry in budgets(measures)
    }
    report["budgets_missed"] = [
        f"{name}.{path}"
        for name, measures in report["backends"].items()
        for path, entry in budgets(measures)
        if not entry["budget_met"]
    ]
    text = json.dumps(report, indent=2, sort_keys=True)
    print(text)
    args.output.write_text(text + "\n")
    return 1 if report["budgets_missed"] and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
