"""Benchmark: the build-error corpus classified, and its packages found.

Runs :func:`piwheels.diagnosis.diagnose` (or ``import_failure``) on every case
of ``tests/data/build_errors/`` and prints, per case and in all: whether the
cause and the want are right, the Debian package :class:`DebianLookup` names
(for real, with apt-file, into a fresh cache unless ``--cache`` is given) and
whether it is right, and the time a log takes to classify.  The goal: 100 %
right causes and packages.  Then the cost of a large and a hostile log.

    python bench/diagnose.py [--repeats 20] [--no-lookup]
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module:
# this folder goes to the end of the path
sys.path.append(sys.path.pop(0))

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from piwheels.debian_lookup import DebianLookup
from piwheels.diagnosis import Wanted, diagnose, import_failure

CORPUS_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "build_errors"


def classify(case: dict):
    if case["kind"] == "import":
        return import_failure(case["log"])
    return diagnose(case["log"], case["reason"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="classifications of each log")
    parser.add_argument("--no-lookup", action="store_true", help="skip the apt-file lookup")
    parser.add_argument("--cache", type=Path, default=None,
                        help="the lookup's cache (default: a fresh one, so apt-file runs)")
    args = parser.parse_args()

    cases = {p.stem: json.loads(p.read_text()) for p in sorted(CORPUS_DIR.glob("*.json"))}
    results = {}
    times_s = []
    for name, case in cases.items():
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            found = classify(case)
            runs.append(time.perf_counter() - started)
        times_s.append(statistics.median(runs))
        results[name] = found

    providers = {}
    lookup_s = 0.0
    if not args.no_lookup:
        with tempfile.TemporaryDirectory() as scratch:
            cache = args.cache or Path(scratch) / "cache.json"
            wants = [r.wanted for r in results.values() if r.wanted is not None]
            started = time.perf_counter()
            providers = DebianLookup(cache).packages_for(wants)
            lookup_s = time.perf_counter() - started

    right_cause = right_package = with_package = 0
    print(f"{'case':32} {'cause':22} {'package':28} ok")
    for name, case in cases.items():
        found = results[name]
        expected = Wanted(**case["wanted"]) if case["wanted"] else None
        cause_ok = (found.cause, found.wanted) == (case["cause"], expected)
        right_cause += cause_ok
        shown = ""
        package_ok = True
        if case["package"] is not None:
            with_package += 1
            provider = providers.get(found.wanted) if found.wanted else None
            shown = provider.package if provider else "-"
            package_ok = provider is not None and provider.package in {
                case["package"], *case["package_also"]}
            right_package += package_ok
        mark = "ok" if cause_ok and (package_ok or args.no_lookup) else "WRONG"
        print(f"{name:32} {found.cause:22} {shown:28} {mark}")
    total = len(cases)
    print(f"\nright cause and want: {right_cause}/{total} ({100 * right_cause / total:.0f} %)")
    if not args.no_lookup:
        print(f"right package: {right_package}/{with_package} "
              f"({100 * right_package / max(1, with_package):.0f} %), "
              f"looked up in {lookup_s:.1f} s (one dpkg -S and one apt-file run for "
              f"{len({r.wanted for r in results.values() if r.wanted})} wants)")
    print(f"time per log: median {1e3 * statistics.median(times_s):.2f} ms, "
          f"max {1e3 * max(times_s):.2f} ms")

    big = "".join(case["log"] for case in cases.values()) * 200
    hostile = "fatal error: " + "a" * (10 * 1024 * 1024)
    for label, log in (("a %d MB log" % (len(big) // 2 ** 20), big),
                       ("a 10 MB line", hostile)):
        started = time.perf_counter()
        diagnose(log)
        print(f"{label}: {1e3 * (time.perf_counter() - started):.1f} ms")
    print("(figures from a shared machine are indicative)")
    return 0 if right_cause == total and (args.no_lookup or right_package == with_package) else 1


if __name__ == "__main__":
    sys.exit(main())
