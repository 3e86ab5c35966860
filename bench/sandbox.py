"""Benchmark: what containment costs a build.

Builds the same small sdists (setuptools pure and C extension, flit-core,
hatchling) with the slave's own Builder two ways, alternating A B A B so that
drift in this machine's speed hits both alike:

* plain: the builder with no bubblewrap (its uncontained path: the same fetch
  phase, then ``pip wheel --no-index`` of the fetched files on the host), its
  build dir on disk as a slave's is;
* plain on tmpfs: the same with its build dir in /dev/shm, since a contained
  build writes everything in a tmpfs, which alone makes it faster;
* contained: the builder with bubblewrap (the build phase, and the
  requirements probe when a build needs it, inside the sandbox).

Both share one cache of fetched build dependencies, warmed by a first round
that is not counted.  Prints, per sdist, the median build time of each way,
the median of the paired differences (the per-build overhead of containment)
and its share of the plain build, against both plain ways; then the bare
cost of starting and ending an empty sandbox.  The goal: under 0.5 s a build, or under 5 %.

    python bench/sandbox.py --runs 5

Run as root, it runs itself as the build user (``--user``, default piwbuild),
as a slave would: slaves refuse root.
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module:
# this folder goes to the end of the path
sys.path.append(sys.path.pop(0))

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from backend_sdists import KIND_BY_NAME, make_kind_sdist
from fake_index import TEST_CACHE, FakeIndex, download_backend_wheels
from sdist_factory import make_sdist

from piwheels.slave.builder import Builder, BuildLimits

GiB = 2**30
#: The sdists built, by the name printed.
SDISTS = ("setuptools pure", "setuptools C", "flit-core", "hatchling")
#: A bubblewrap that is not there: the builder's uncontained path.
NO_BWRAP = "/nonexistent/bwrap"


def make_sdists(index_dir: Path) -> dict[str, tuple[str, Path]]:
    """The benchmark's sdists in *index_dir*: label -> (project, path)."""
    made = {
        "setuptools pure": ("bench-pure", make_sdist(index_dir, "bench-pure", "1.0")),
        "setuptools C": ("bench-c", make_sdist(index_dir, "bench-c", "1.0", kind="c_ext")),
    }
    for label, kind in (("flit-core", "flit-core"), ("hatchling", "hatchling")):
        spec = KIND_BY_NAME[kind]
        made[label] = (spec.name, make_kind_sdist(index_dir, spec))
    return made


def make_builder(bwrap: str, python: str, index_url: str, work: Path, cache: Path) -> Builder:
    limits = BuildLimits(timeout_s=600, memory_bytes=4 * GiB, max_log_bytes=1024 * 1024,
                         pid_limit=512, disk_bytes=4 * GiB)
    return Builder(python=python, index_url=index_url, work_dir=work, cache_dir=cache,
                   limits=limits, bwrap=bwrap)


def build_once(builder: Builder, project: str) -> float:
    """Wall seconds of one successful build (it fails the benchmark otherwise).

    Only wall time: the processes of a contained build are reaped inside its
    PID namespace, so their CPU time never reaches this process's rusage.
    """
    start = time.perf_counter()
    with builder.build(project, "1.0") as result:
        elapsed = time.perf_counter() - start
        if not result.success:
            raise SystemExit(f"{project} did not build: {result.reason}\n{result.log[-3000:]}")
    return elapsed


def bare_sandbox_s(builder: Builder, scratch: Path, runs: int) -> tuple[float, float]:
    """Median seconds of ``true`` run plainly and inside an empty sandbox like a build's."""
    box = builder._sandbox
    assert box is not None
    inputs = scratch / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    plain, boxed = [], []
    for _ in range(runs):
        for argv, times in ((["/bin/true"], plain),
                            (box.command(["/bin/true"], input_dir=inputs),
                             boxed)):
            start = time.perf_counter()
            subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
    return statistics.median(plain), statistics.median(boxed)


def run(args: argparse.Namespace) -> None:
    root = Path(args.root)
    shm = Path(tempfile.mkdtemp(prefix="piw-bench-sandbox-", dir="/dev/shm"))
    index = FakeIndex(root / "index").start()
    try:
        sdists = {label: project for label, (project, _) in _read_sdists(root).items()}
        cache = root / "cache"
        contained = make_builder(args.bwrap, args.python, index.url, root / "work-contained", cache)
        plain = make_builder(NO_BWRAP, args.python, index.url, root / "work-plain", cache)
        plain_tmpfs = make_builder(NO_BWRAP, args.python, index.url, shm, cache)
        facts = contained.environment()
        print(f"python {facts['python_version']} ({args.python}); containment: "
              f"{facts['containment']}; plain: {plain.environment()['containment']}")
        if not contained.contained:
            raise SystemExit("bubblewrap cannot contain builds here: nothing to compare")
        times: dict[tuple[str, str], list[float]] = {}
        for round_number in range(args.runs + 1):
            ways = [("plain", plain), ("plain on tmpfs", plain_tmpfs), ("contained", contained)]
            if round_number % 2:
                ways.reverse()
            for label, project in sdists.items():
                for way, builder in ways:
                    elapsed = build_once(builder, project)
                    if round_number:  # the first round warms the cache and is not counted
                        times.setdefault((label, way), []).append(elapsed)
            print(f"round {round_number}{' (warm-up)' if not round_number else ''} done",
                  flush=True)
        for baseline in ("plain", "plain on tmpfs"):
            print(f"\nwall seconds a build, medians of {args.runs} runs; the overhead is the "
                  f"median of the paired differences (contained - {baseline})")
            print(f"{'sdist':18} {baseline:>14} {'contained':>10} {'overhead':>9} {'share':>7}"
                  f"   paired differences")
            overheads, shares = [], []
            for label in sdists:
                a, b = times[(label, baseline)], times[(label, "contained")]
                diffs = [y - x for x, y in zip(a, b)]
                diff = statistics.median(diffs)
                share = 100 * diff / statistics.median(a)
                overheads.append(diff)
                shares.append(share)
                print(f"{label:18} {statistics.median(a):14.2f} {statistics.median(b):10.2f} "
                      f"{diff:+9.2f} {share:+6.1f}%   {min(diffs):+.2f} .. {max(diffs):+.2f}")
            print(f"{'all (median)':18} {'':14} {'':10} {statistics.median(overheads):+9.2f} "
                  f"{statistics.median(shares):+6.1f}%")
        true_s, boxed_s = bare_sandbox_s(contained, root / "bare", max(5, args.runs))
        print(f"\nan empty sandbox: {boxed_s * 1000:.0f} ms to start and end "
              f"(/bin/true alone {true_s * 1000:.1f} ms); a build starts one (its build "
              f"phase), three when it must probe for more build requirements")
    finally:
        index.stop()
        shutil.rmtree(shm, ignore_errors=True)


def _read_sdists(root: Path) -> dict[str, tuple[str, Path]]:
    listed = (root / "sdists.txt").read_text().split("\n")
    return {line.split("\t")[0]: (line.split("\t")[1], Path(line.split("\t")[2]))
            for line in listed if line}


def prepare(root: Path) -> None:
    """The index (backend wheels and the benchmark's sdists) under *root*."""
    index_dir = root / "index"
    index_dir.mkdir(parents=True)
    for wheel in download_backend_wheels(TEST_CACHE / "build-backends"):
        shutil.copyfile(wheel, index_dir / wheel.name)
    made = make_sdists(index_dir)
    (root / "sdists.txt").write_text(
        "".join(f"{label}\t{project}\t{path}\n" for label, (project, path) in made.items()))


def bench_main(script: str, description: str, run, *, prefix: str, default_runs: int) -> None:
    """The command line of a build benchmark (this one and bench/smoke.py): made
    ready under a fresh root, then run again as *script* by the build user when
    run as root, as the slave builds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=default_runs,
                        help=f"counted rounds (default {default_runs})")
    parser.add_argument("--python", default=sys.executable,
                        help="the build interpreter (default: this one)")
    parser.add_argument("--bwrap", default="bwrap", help="the bubblewrap program")
    parser.add_argument("--user", default="piwbuild",
                        help="the user to build as when run as root (default piwbuild)")
    parser.add_argument("--root", help=argparse.SUPPRESS)  # set for the child run
    args = parser.parse_args()
    if args.root:
        run(args)
        return
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        root.chmod(0o755)
        prepare(root)
        argv = [sys.executable, script, "--runs", str(args.runs), "--python", args.python,
                "--bwrap", args.bwrap, "--root", str(root)]
        kwargs: dict = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(args.user)
            for path in [root, *root.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [],
                      "env": {"PATH": os.environ.get("PATH", os.defpath), "HOME": user.pw_dir,
                              "LANG": "C.UTF-8"}}
        raise SystemExit(subprocess.run(argv, **kwargs).returncode)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    bench_main(__file__, __doc__.splitlines()[0], run, prefix="piw-bench-sandbox-",
               default_runs=5)

if __name__ == "__main__":
    main()
