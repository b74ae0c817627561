"""Benchmarks of usercredits against the cheapest implementation of the same work.

Run with ``make bench`` (or ``python benchmarks/run.py [--quick] [--backend ...]``).
Prints a JSON report and writes it to ``benchmarks/results.json``. Each measure
states its budget (when the project has one) and whether it was met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios import BACKENDS, Sizes, run_backend

RESULTS = Path(__file__).resolve().parent / "results.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--backend",
        action="append",
        choices=sorted(BACKENDS),
        help="backend(s) to measure (default: memory, mongomock, and mongodb when "
        "USERCREDITS_TEST_MONGO_URI is set)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    backends = args.backend or ["memory", "mongomock"]
    if not args.backend and os.environ.get("USERCREDITS_TEST_MONGO_URI"):
        backends.append("mongodb")
    sizes = Sizes.quick() if args.quick else Sizes.full()
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "backends": {},
    }
    for name in backends:
        print(f"measuring {name}...", file=sys.stderr)
        report["backends"][name] = run_backend(name, sizes)
    misses = [
        f"{backend}.{measure}"
        for backend, measures in report["backends"].items()
        for measure, result in measures.items()
        if isinstance(result, dict) and result.get("budget_met") is False
    ]
    report["budgets_missed"] = misses
    text = json.dumps(report, indent=2, sort_keys=True)
    print(text)
    args.output.write_text(text + "\n")
    return 1 if misses and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
