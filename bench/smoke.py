"""Benchmark: what the smoke test costs a build.

Builds a setuptools pure and a C-extension sdist with the slave's own
Builder, contained, with the smoke test and without (``--no-smoke-test``),
alternating A B B A so that drift in this machine's speed hits both alike,
after a warm-up round that fills the cache of build dependencies.  Prints, per
sdist, the median build with and without the test, the median of the paired
differences and its share of the build, and the median time of the smoke
test's own sandbox run as its log reports it.  The goal: farm / plain pip
at most 1.10 with the test (1.05 without), so the test should stay well under
5 % of a build.

    python bench/smoke.py --runs 3

Run as root, it runs itself as the build user (``--user``, default piwbuild),
as a slave would: slaves refuse root.  It shares bench/sandbox.py's index.
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module
sys.path.append(sys.path.pop(0))

import argparse
import re
import statistics
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fake_index import FakeIndex
from sandbox import GiB, _read_sdists, bench_main

from piwheels.slave.builder import Builder, BuildLimits

#: The sdists built, by bench/sandbox.py's labels.
SDISTS = ("setuptools pure", "setuptools C")
#: The log line that ends the smoke test's sandbox run.
SMOKE_RUN = re.compile(r"smoke_probe\.py .*?\n--- piwheels: exit status \d+ after ([0-9.]+) s",
                       re.S)


def make_builder(smoke: bool, args: argparse.Namespace, index_url: str, work: Path,
                 cache: Path) -> Builder:
    limits = BuildLimits(timeout_s=600, memory_bytes=4 * GiB, max_log_bytes=1024 * 1024,
                         pid_limit=512, disk_bytes=4 * GiB)
    return Builder(python=args.python, index_url=index_url, work_dir=work, cache_dir=cache,
                   limits=limits, bwrap=args.bwrap, smoke_test=smoke)


def build_once(builder: Builder, project: str) -> tuple[float, float]:
    """(wall seconds of one successful build, seconds of its smoke test's run)."""
    start = time.perf_counter()
    with builder.build(project, "1.0") as result:
        elapsed = time.perf_counter() - start
        if not result.success:
            raise SystemExit(f"{project} did not build: {result.reason}\n{result.log[-3000:]}")
        if result.smoke is not None and any(s.status != "passed" for s in result.smoke):
            raise SystemExit(f"{project}'s smoke test did not pass: {result.smoke}")
        found = SMOKE_RUN.search(result.log)
    return elapsed, float(found.group(1)) if found else 0.0


def run(args: argparse.Namespace) -> None:
    root = Path(args.root)
    index = FakeIndex(root / "index").start()
    try:
        sdists = {label: project for label, (project, _) in _read_sdists(root).items()
                  if label in SDISTS}
        cache = root / "cache"
        ways = [("smoke test", make_builder(True, args, index.url, root / "work-a", cache)),
                ("no smoke test", make_builder(False, args, index.url, root / "work-b", cache))]
        facts = ways[0][1].environment()
        print(f"python {facts['python_version']} ({args.python}); containment: "
              f"{facts['containment']}")
        times: dict[tuple[str, str], list[float]] = {}
        steps: dict[str, list[float]] = {}
        for round_number in range(args.runs + 1):
            order = ways if round_number % 2 else list(reversed(ways))
            for label, project in sdists.items():
                for way, builder in order:
                    elapsed, step = build_once(builder, project)
                    if round_number:  # the first round warms the cache and is not counted
                        times.setdefault((label, way), []).append(elapsed)
                        if step:
                            steps.setdefault(label, []).append(step)
            print(f"round {round_number}{' (warm-up)' if not round_number else ''} done",
                  flush=True)
        print(f"\nwall seconds a build, medians of {args.runs} runs; the cost is the median "
              f"of the paired differences")
        print(f"{'sdist':16} {'without':>8} {'with':>8} {'cost':>7} {'share':>7} {'its run':>8}")
        for label in sdists:
            a, b = times[(label, "no smoke test")], times[(label, "smoke test")]
            cost = statistics.median(y - x for x, y in zip(a, b))
            print(f"{label:16} {statistics.median(a):8.2f} {statistics.median(b):8.2f} "
                  f"{cost:+7.2f} {100 * cost / statistics.median(a):+6.1f}% "
                  f"{statistics.median(steps.get(label, [0.0])):8.2f}")
    finally:
        index.stop()


def main() -> None:
    bench_main(__file__, __doc__.splitlines()[0], run, prefix="piw-bench-smoke-",
               default_runs=3)

if __name__ == "__main__":
    main()
