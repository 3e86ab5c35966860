"""Only enrolled slaves build: one real farm, under CURVE, from refusal to revocation.

A real piw-master with a key pair and real piw-slave processes as the build
user, each with its own key: one never enrolled, one enrolled and then
revoked in the middle of a build, one enrolled to finish that build.
"""

from __future__ import annotations

import pytest
import subprocess

from farm import BIN, builds_of, host_target, pyenv_python

from piwheels.tags import Target

pytestmark = pytest.mark.slow


def test_unenrolled_refused_enrolled_builds_revoked_refused_at_its_next_message(
        farm, db, release):
    release("held-build", kind="pure")
    farm.start_master()
    python = pyenv_python("11")
    stranger = farm.start_slave("stranger", python, enrol=False)
    keyless = farm.start_slave("keyless", python, keyed=False)
    member = farm.start_slave("member", python)
    stranger_id, member_id = farm.key_id("stranger"), farm.key_id("member")

    member.wait_log("building held-build 1.0", 90)
    farm.master.wait_log(f"key {member_id}", 5)  # the connected line names the key
    # the stranger is refused at every handshake, and says so in one line
    stranger.wait_log(f"the master refused this slave's key {stranger_id}", 30)
    farm.master.wait_log(f"refused a connection from key {stranger_id}", 5)
    keyless.wait_log("the master takes only slaves with enrolled keys, and this slave has "
                     "none", 10)

    # revoked while it builds: its next heartbeat is refused, and it stops saying why
    farm.revoke("member")
    member.expected_exit = True
    assert member.proc.wait(20) == 3  # EXIT_TOLD_TO_STOP: systemd leaves it stopped
    (said,) = [line for line in member.log().splitlines()
               if "the master told this slave to stop" in line]
    assert f"key {member_id} is not enrolled" in said, said
    farm.master.wait_log(f"(member, key {member_id}) dropped: key {member_id} is not enrolled", 5)

    # the build it held goes back to the queue, and an enrolled slave builds it
    farm.start_slave("rescuer", python)
    farm.wait(lambda: builds_of(db, "held-build"), 120, "the re-queued build")
    (build,) = builds_of(db, "held-build")
    assert (build.status, build.slave_label) == ("success", "rescuer")
    assert (farm.output / "simple" / "held-build" / build.files[0].filename).is_file()
    assert {b.slave_label for b in builds_of(db, "held-build")} == {"rescuer"}

    # the stranger never got a job, and is still refused (never "connected")
    assert stranger.proc.poll() is None
    for refused in (stranger, keyless):
        assert refused.proc.poll() is None
        assert "building" not in refused.log() and "connected to the master" not in refused.log()
        assert refused.log().count("still trying") == 1  # once a minute, across reconnects
    assert [s["label"] for s in farm.snapshot()["slaves"]] == ["rescuer"]
    # besides an enrolled slave, only an operator adds a build target
    def control(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "piw-control"), "--control-address",
                               farm.control_address, *argv],
                              capture_output=True, text=True, timeout=30)

    def add_target(abi: str, platform: str) -> subprocess.CompletedProcess:
        return control("add-target", abi, platform)
    added = add_target("cp314", "linux_aarch64")
    assert (added.returncode, added.stdout.strip()) \
        == (0, "the farm builds for cp314 linux_aarch64"), added
    # what a wheel says is no target: not abi3, nor the platform "any"
    for abi, platform, named in (("abi3", "linux_aarch64", "'abi3'"), ("cp314", "any", "'any'")):
        refused = add_target(abi, platform)
        assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused
        assert "add-target" in refused.stderr and named in refused.stderr, refused
    assert db.get_build_targets() == [Target(*host_target("cp311")),
                                      Target("cp314", "linux_aarch64")]
    # pinned to one OS release, then retired: the row says so, the queue forgets it
    pinned = control("add-target", "cp314", "linux_armv7l", "--os-release", "Debian 13")
    assert pinned.stdout.strip() == "the farm builds for cp314 linux_armv7l on Debian 13 only", \
        pinned
    retired = control("retire-target", "cp314", "linux_aarch64")
    assert retired.stdout.strip() == "the farm no longer builds for cp314 linux_aarch64", retired
    rows = {(row.abi_tag, row.platform_tag): (row.os_release, row.active)
            for row in db.get_target_rows()}
    assert rows[("cp314", "linux_armv7l")] == ("Debian 13", True)
    assert rows[("cp314", "linux_aarch64")] == (None, False)
    assert db.get_build_targets() == [Target(*host_target("cp311")),
                                      Target("cp314", "linux_armv7l")]

    log = farm.master.log()
    assert "Traceback" not in log and "task failed" not in log
    assert log.count(f"refused a connection from key {stranger_id}") == 1  # once a minute
