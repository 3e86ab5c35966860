"""Randomised chaos trials against a real farm: what is lost, what is left
inconsistent, and how long the farm takes to recover.

A real piw-master and two piw-slaves (as the tests run them: tests/farm.py)
build pure sdists from a fake upstream (tests/fake_index.py) into a
throw-away database.  Each trial adds one release, waits a random moment
(the build may be queued, building, sending or being recorded), and does one
of its worst:

* kill -9 of a slave (a new one takes its place) or of the master;
* PostgreSQL disconnects: ``pg_terminate_backend`` of every backend of the
  master's role, as the superuser (the server itself is left running);
* fuzzed frames to the master's slave and file ports: random bytes, truncated
  and oversized msgpack, known message names with wrong payloads (mostly from
  peers with an enrolled key, so that they pass the CURVE handshake);
* an idle TCP flood on loopback (a bounded number of connections, held open).

Then the master is started again if it is gone, and the trial is timed until
the master answers its control socket and the trial's release is published.
After the last trial every release must be built (a release not built is a
build lost), and after every trial the output tree and the database must
agree (tests/consistency.py's check; a disagreement still there after 30 s is
an inconsistent state).

    python bench/chaos.py --minutes 4 --trials 30 --seed 1234
"""

from __future__ import annotations

import sys

# bench/queue.py must not stand in for the standard library's queue module:
# this folder goes to the end of the path (its benchdb helper is still found)
sys.path.append(sys.path.pop(0))

import argparse
import json
import os
import random
import socket
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

import msgpack
import sqlalchemy as sa
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from benchdb import DEFAULT_SERVER, throwaway_database
from consistency import problems
from fake_index import FakeIndex, download_backend_wheels
from farm import Farm, builds_of, pyenv_python
from sdist_factory import make_sdist

from piwheels.db import Database
from piwheels.protocols import MAX_SLAVE_FRAME_BYTES

#: How long one trial's release may take to be published before it counts as not recovered.
PUBLISH_TIMEOUT_S = 120.0
#: How long the tree and the database may take to agree after a trial.
CONSISTENT_TIMEOUT_S = 30.0
#: The most connections one idle flood opens (loopback only).
FLOOD_CONNECTIONS = 300
FLOOD_HOLD_S = 3.0
SLAVE_LABELS = ("chaos-a", "chaos-b")


def wait_until(condition: Callable[[], object], timeout_s: float,
               interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())


def listed(output: Path, package: str) -> bool:
    """Whether *package*'s simple page lists a wheel (its build is published)."""
    try:
        return bool(json.loads((output / "simple" / package / "index.json").read_text())["files"])
    except (OSError, ValueError, KeyError):
        return False


class Chaos:
    def __init__(self, farm: Farm, index: FakeIndex, superuser_dsn: str, master_dsn: str,
                 python: str, rng: random.Random, work: Path) -> None:
        self.farm, self.index, self.rng = farm, index, rng
        self.superuser_dsn, self.master_dsn = superuser_dsn, master_dsn
        self.role = sa.engine.make_url(master_dsn).username
        self.python = python
        self.sdists = work / "sdists"
        self.sdists.mkdir()
        self.db = Database(master_dsn)
        self.releases: list[str] = []
        self.ctx = zmq.Context()

    # --- the farm -----------------------------------------------------------------

    def master_alive(self) -> bool:
        return self.farm.master is not None and self.farm.master.proc.poll() is None

    def serving(self) -> bool:
        if not self.master_alive():
            return False
        try:
            self.farm.snapshot(timeout_s=2)
            return True
        except Exception:  # not answering (yet): any failure of the request
            return False

    def start_slave(self, label: str) -> None:
        self.farm.slaves = [s for s in self.farm.slaves if s.proc.poll() is None
                            or not s.args[s.args.index("--label") + 1] == label]
        self.farm.start_slave(label, self.python)

    def ensure_running(self) -> Optional[str]:
        """Start the master again if it is gone (and say why it went), and any slave."""
        note = None
        if not self.master_alive():
            code = self.farm.master.proc.returncode if self.farm.master else None
            note = f"master had exited ({code}); started again"
            self.farm.start_master()
        for label in SLAVE_LABELS:
            running = [s for s in self.farm.slaves if s.proc.poll() is None
                       and s.args[s.args.index("--label") + 1] == label]
            if not running:
                self.start_slave(label)
        return note

    def add_release(self, n: int) -> str:
        name = f"chaos-{n}"
        self.index.add(make_sdist(self.sdists, name, "1.0"))
        self.db.add_package(name)
        self.db.add_version(name, "1.0", has_sdist=True,
                            released=datetime(2026, 1, 1, tzinfo=timezone.utc)
                            + timedelta(minutes=n))
        self.releases.append(name)
        return name

    def built(self, package: str) -> bool:
        return any(b.status == "success" for b in builds_of(self.db, package))

    # --- the faults ---------------------------------------------------------------

    def kill_slave(self) -> str:
        victim = self.rng.choice([s for s in self.farm.slaves if s.proc.poll() is None])
        label = victim.args[victim.args.index("--label") + 1]
        victim.kill()
        time.sleep(self.rng.uniform(0, 2))
        self.start_slave(label)
        return f"kill -9 slave {label}"

    def kill_master(self) -> str:
        self.farm.master.kill()
        time.sleep(self.rng.uniform(0, 2))
        return "kill -9 master"

    def terminate_backends(self) -> str:
        engine = sa.create_engine(self.superuser_dsn, poolclass=sa.pool.NullPool,
                                  isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                killed = conn.scalar(sa.text(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM "
                    "pg_stat_activity WHERE usename = :role) AS t"), {"role": self.role})
        finally:
            engine.dispose()
        return f"pg_terminate_backend of {killed} master backends"

    def fuzz(self) -> str:
        """Hostile frames on both ports, from a few peers: most with an enrolled key (a
        slave gone bad, whose frames reach the master's decoders), the rest without
        one (refused at the CURVE handshake)."""
        frames = keyed = 0
        for port in (self.farm.slave_port, self.farm.file_port):
            for _ in range(self.rng.randint(1, 4)):
                sock = self.ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDTIMEO, 1000)
                enrolled = self.rng.random() < 0.75
                if enrolled:
                    self.farm.secure(sock, "chaos-fuzzer")
                sock.connect(f"tcp://127.0.0.1:{port}")
                try:
                    for _ in range(self.rng.randint(5, 40)):
                        sock.send_multipart(self.hostile_frame(), copy=True)
                        frames += 1
                        keyed += enrolled
                except zmq.Again:
                    pass
                finally:
                    sock.close()
        return f"{frames} fuzzed frames ({keyed} from enrolled peers)"

    def hostile_frame(self) -> list[bytes]:
        rng = self.rng
        valid = msgpack.packb(["HELLO", {"label": "x" * rng.randint(0, 300),
                                         "abi_tag": rng.choice(["abi3", "CP311", "cp311 ", 7])}])
        kind = rng.randrange(6)
        if kind == 0:
            return [rng.randbytes(rng.randint(0, 4096))]
        if kind == 1:
            return [valid[:rng.randint(1, len(valid) - 1)]]  # truncated
        if kind == 2:  # oversized (above the slave protocol's largest frame)
            return [msgpack.packb(["BUILT", {"log": "y" * (MAX_SLAVE_FRAME_BYTES + 1024)}])]
        if kind == 3:  # known names, wrong payloads
            name = rng.choice(["HELLO", "IDLE", "BUSY", "BUILT", "SENT", "BYE",
                               "OFFER", "CHUNK", "MISSING"])
            payload = rng.choice([None, 5, "text", [], {"slave_id": -1},
                                  {"filename": "../../etc/passwd", "size": -1, "sha256": "z"},
                                  {"filename": "a.whl", "offset": 2 ** 64 - 1, "data": b"",
                                   "crc32": -3}])
            return [msgpack.packb([name, payload], use_bin_type=True)]
        if kind == 4:
            return [valid, rng.randbytes(100), b""]  # extra frames
        return [msgpack.packb([rng.randbytes(8), {"k": rng.random()}], use_bin_type=True)]

    def flood(self) -> str:
        count = self.rng.randint(FLOOD_CONNECTIONS // 3, FLOOD_CONNECTIONS)
        socks = []
        try:
            for i in range(count):
                port = (self.farm.slave_port, self.farm.file_port)[i % 2]
                s = socket.socket()
                s.settimeout(1)
                try:
                    s.connect(("127.0.0.1", port))
                except OSError:
                    s.close()
                    continue
                socks.append(s)
            time.sleep(FLOOD_HOLD_S)
        finally:
            for s in socks:
                s.close()
        return f"idle flood of {len(socks)} connections"

    FAULTS = ("kill_slave", "kill_master", "terminate_backends", "fuzz", "flood")

    # --- one trial ----------------------------------------------------------------

    def trial(self, n: int) -> dict:
        package = self.add_release(n)
        time.sleep(self.rng.uniform(0, 6))  # queued, building, sending or recording
        fault = self.rng.choice(self.FAULTS)
        started = time.monotonic()
        what = getattr(self, fault)()
        wait_until(lambda: not self.master_alive() or self.serving(), 5)
        note = self.ensure_running()
        serving = wait_until(self.serving, 60)
        serving_s = time.monotonic() - started
        published = wait_until(lambda: listed(self.farm.output, package)
                               or not self.master_alive(), PUBLISH_TIMEOUT_S)
        if published and not self.master_alive():  # it died while we waited
            note = (note or "") + "; master exited after the fault"
            self.ensure_running()
            published = wait_until(lambda: listed(self.farm.output, package), PUBLISH_TIMEOUT_S)
        recovered_s = time.monotonic() - started
        consistent = wait_until(lambda: not problems(self.farm.output, self.master_dsn),
                                CONSISTENT_TIMEOUT_S, interval_s=1)
        found = [] if consistent else problems(self.farm.output, self.master_dsn)
        return {"trial": n, "fault": what, "note": note, "serving": serving,
                "serving_s": serving_s, "published": published, "recovered_s": recovered_s,
                "problems": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER,
                        help="a PostgreSQL superuser DSN (trust), for the throw-away database")
    parser.add_argument("--minutes", type=float, default=4.0, help="stop starting trials after")
    parser.add_argument("--trials", type=int, default=30, help="at most this many trials")
    parser.add_argument("--seed", type=int, default=None, help="the random seed (printed)")
    parser.add_argument("--python", default="11", help="the slaves' CPython 3.<minor>")
    parser.add_argument("--backends", type=Path,
                        default=Path.home() / ".cache" / "piwheels-bench-backends",
                        help="where the build backend wheels are kept between runs")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2 ** 32)
    print(f"seed {seed}", flush=True)
    rng = random.Random(seed)
    python = pyenv_python(args.python)
    results = []
    with tempfile.TemporaryDirectory(prefix="piw-chaos-") as tmp, \
            throwaway_database(args.server) as (dsn, master_dsn):
        work = Path(tmp)
        os.chmod(work, 0o755)
        index = FakeIndex(work / "index")
        for wheel in download_backend_wheels(args.backends):
            index.add(wheel)
        with index:
            farm = Farm(work, master_dsn, index.url)
            chaos = Chaos(farm, index, dsn, master_dsn, python, rng, work)
            try:
                farm.start_master()
                for label in SLAVE_LABELS:
                    chaos.start_slave(label)
                # a first build with no fault: the slaves' environments are warm
                first = chaos.add_release(0)
                if not wait_until(lambda: listed(farm.output, first), 180):
                    raise SystemExit("the farm built nothing without any fault; see " + tmp)
                deadline = time.monotonic() + args.minutes * 60
                for n in range(1, args.trials + 1):
                    if time.monotonic() > deadline:
                        break
                    result = chaos.trial(n)
                    results.append(result)
                    print(f"trial {n:3d}: {result['fault']:<44} recovered in "
                          f"{result['recovered_s']:5.1f} s (serving after "
                          f"{result['serving_s']:4.1f} s)"
                          + ("" if result["published"] else "  NOT PUBLISHED")
                          + (f"  [{result['note']}]" if result["note"] else "")
                          + (f"  INCONSISTENT: {result['problems'][:3]}"
                             if result["problems"] else ""), flush=True)
                chaos.ensure_running()
                wait_until(lambda: all(chaos.built(p) for p in chaos.releases), PUBLISH_TIMEOUT_S)
                lost = [p for p in chaos.releases if not chaos.built(p)]
                for package in lost:
                    # a build that failed (recorded, with its reason) is not one the farm
                    # lost, but it is counted, and its reason shown, to be looked at
                    for build in builds_of(chaos.db, package):
                        print(f"{package}: {build.status} on {build.slave_label}: "
                              f"{build.reason}", flush=True)
                final = problems(farm.output, master_dsn)
            finally:
                chaos.db.close()
                chaos.ctx.destroy(linger=0)
                farm.stop()
    recovered = [r["recovered_s"] for r in results if r["published"]]
    print(f"seed {seed}: trials run {len(results)}; builds lost {len(lost)}"
          + (f" ({', '.join(lost)}; any attempts recorded are shown above)" if lost else "")
          + f"; inconsistent states {sum(1 for r in results if r['problems']) + bool(final)}"
          + f"; trials not recovered within {PUBLISH_TIMEOUT_S:.0f} s "
          f"{sum(1 for r in results if not r['published'])}")
    if recovered:
        print(f"time to recover (fault to next build published): longest {max(recovered):.1f} s, "
              f"median {statistics.median(recovered):.1f} s")


if __name__ == "__main__":
    main()
