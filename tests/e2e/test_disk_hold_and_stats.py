"""The free-space guard and the figures monitors get, with a real master and slave.

The master is started with a minimum free space larger than the disk has, so
it must hold every build: an idle slave is told to sleep and the log says
why.  Lowering the minimum through the control socket lets the build go on,
after which the status carries the figures of that build.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import datetime, timezone

import pytest
from farm import BIN, builds_of, host_target, pyenv_python
from sdist_factory import make_sdist

from piwheels.tags import Target


pytestmark = pytest.mark.slow


def control(farm, *args: str) -> str:
    """What piw-control prints (it must succeed)."""
    done = subprocess.run([str(BIN / "piw-control"), "--control-address", farm.control_address,
                           *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout

ABI = "cp311"
#: the key of this slave's target in the per-target figures ("cp311 linux_x86_64")
TARGET = str(Target(*host_target(ABI)))
HOST_FIGURES = ("load_1m", "memory_free", "disk_free", "temperature_c")


def test_low_disk_holds_builds_until_space_is_enough(farm, db, build_index, tmp_path):
    sdist = make_sdist(tmp_path / "sdists", "held-thing", "1.0")
    build_index.add(sdist)
    db.add_package("held-thing")
    db.add_version("held-thing", "1.0", released=datetime.now(timezone.utc), has_sdist=True)
    free_mib = shutil.disk_usage(tmp_path).free // 2**20
    master = farm.start_master("--min-free-space", str(free_mib + 100_000))
    master.wait_log("holding new builds", 20)
    slave = farm.start_slave("py311", pyenv_python("11"))
    slave.wait_log("connected to the master", 30)

    # the slave asks, round after round, and is told to sleep
    time.sleep(4)
    assert builds_of(db, "held-thing") == []
    assert "building held-thing" not in slave.log()
    log = master.log()
    assert f"(minimum {free_mib + 100_000} MiB): holding new builds" in log
    assert "holding builds: free disk space is low" in log
    status = farm.snapshot()
    stats = status["master"]["stats"]
    assert stats["disk_low"] is True
    assert stats["min_free"] == (free_mib + 100_000) * 2**20
    assert stats["pending"] == {TARGET: 1}
    assert status["master"]["slave_driver"]["holds"] == ["free disk space is low"]
    (idle,) = status["slaves"]
    assert (idle["label"], Target(idle["abi_tag"], idle["platform_tag"]), idle["state"]) \
        == ("py311", host_target(ABI), "sleeping")

    # the operator lowers the minimum while the master runs: the build goes ahead
    assert "under 1 MiB is free" in control(farm, "min-free-space", "1")
    master.wait_log("builds resume", 20)
    master.wait_log("no longer holding builds for: free disk space is low", 20)
    farm.wait(lambda: builds_of(db, "held-thing"), 120, "the held build to be made")
    (build,) = builds_of(db, "held-thing")
    assert (build.status, build.target, build.slave_label) \
        == ("success", host_target(ABI), "py311")

    # the monitor's figures: per target, the success rate, this disk, every slave's host
    def figures_updated():
        stats = farm.snapshot()["master"]["stats"]
        return stats if stats.get("builds_last_hour") == {TARGET: 1} else None

    stats = farm.wait(figures_updated, 20, "the build counted in the statistics")
    assert stats["success_rate"] == 1.0
    assert stats["pending"] == {TARGET: 0}
    assert stats["disk_low"] is False and stats["min_free"] == 2**20
    assert 0 < stats["disk_free"] == pytest.approx(shutil.disk_usage(farm.output).free,
                                                   rel=0.05)
    assert stats["load_1m"] >= 0 and stats["memory_free"] > 0
    assert "temperature_c" in stats  # None where the machine has no sensor
    assert farm.snapshot()["master"]["slave_driver"]["holds"] == []
    (worker,) = farm.snapshot()["slaves"]
    assert all(figure in worker for figure in HOST_FIGURES), worker
    assert worker["load_1m"] >= 0 and worker["memory_free"] > 0 and worker["disk_free"] > 0

    # the rest of piw-control: pause holds builds until resume; reconcile starts at once
    assert "no new builds" in control(farm, "pause")
    farm.wait(lambda: farm.snapshot()["master"]["slave_driver"]["holds"]
              == ["paused by the operator"], 10, "the operator's hold")
    assert "again" in control(farm, "resume")
    farm.wait(lambda: farm.snapshot()["master"]["slave_driver"]["holds"] == [], 10,
              "the hold to lift")
    assert "reconciling" in control(farm, "reconcile")
    master.wait_log("reconciling on request", 10)
