"""A full output disk stops no task: the real build recorder and index writer,
their output tree on a small tmpfs filled to the last block.

While the disk is full a page write fails (the old page stays whole, no temp
file is left), a build whose files cannot be staged is not recorded (its
release goes back to the build queue), and the reasons are logged.  Once space
returns, the index writer writes the refused pages by itself, the rebuilt
release is published, and the tree agrees with the database.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import time

import pytest
from consistency import assert_consistent, problems, wait_consistent
from farm import HOST_PLATFORM, builds_of, host_target, wait_for
from index_publisher import Publisher
from wheel_craft import craft_wheel

from piwheels.index_pages import Site
from piwheels.wheel_facts import inspect_wheel

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

SITE = Site(name="Full disk farm", index_url="http://farm.test/simple/",
            upstream_simple="http://upstream.test/simple/")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs to be the output directory, unmounted at the end."""
    mount = tmp_path / "output"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory) -> None:
    """Write a file outside the index until the file system has no block left."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def record(publisher, package: str, wheel, received) -> None:
    """What the slave driver sends once *wheel* has arrived (as *received*)."""
    if not received.exists():
        received.write_bytes(wheel.read_bytes())
    publisher.records.send("RECORD", {
        "package": package, "version": "1.0", "abi_tag": "cp311", "platform_tag": HOST_PLATFORM,
        "slave_label": "full-disk", "builder": "full-disk", "started": time.time(), "duration_s": 1.0,
        "status": "success", "reason": None, "log": "built\n",
        "files": [{**inspect_wheel(wheel).to_dict(), "path": str(received)}],
    })


def page(output, package: str):
    path = output / "project" / package / "json" / "index.json"
    return json.loads(path.read_text()) if path.is_file() else None


def listed(output, package: str) -> list[str]:
    path = output / "simple" / package / "index.json"
    return [f["filename"] for f in json.loads(path.read_text())["files"]] if path.is_file() else []


def temp_files(output) -> list[str]:
    return [name for _, _, files in os.walk(output) for name in files if name.endswith(".tmp")]


def test_a_full_disk_fails_single_writes_and_everything_is_published_once_space_returns(
        db, master_dsn, small_disk, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    output = small_disk
    transfers = output / ".transfers"
    transfers.mkdir()
    db.add_build_target(host_target("cp311"))
    for package in ("roomy", "spaceless"):
        db.add_package(package)
        db.add_version(package, "1.0", has_sdist=True)
    roomy = craft_wheel(tmp_path, "roomy-1.0-py3-none-any.whl", name="roomy")
    spaceless = craft_wheel(tmp_path, "spaceless-1.0-py3-none-any.whl", name="spaceless")
    publisher = Publisher(master_dsn, output, SITE, transfers, retry_s=0.5)
    try:
        record(publisher, "roomy", roomy, transfers / "1-0123456789ab-roomy.whl")
        wait_for(lambda: publisher.check() or listed(output, "roomy") == [roomy.name], 15,
                 "roomy published")
        wait_consistent(output, master_dsn)

        # the second wheel has arrived; then the disk fills up
        received = transfers / "2-0123456789ab-spaceless.whl"
        received.write_bytes(spaceless.read_bytes())
        fill(output)
        record(publisher, "spaceless", spaceless, received)
        wait_for(lambda: publisher.check() or (
            "could not stage spaceless 1.0 for cp311" in caplog.text
            and not received.exists()), 15, "the refused staging logged")
        # removing the unstaged wheel gave its blocks back: fill them again
        fill(output)
        # and a change upstream that roomy's pages must show
        db.yank_version("roomy", "1.0", "broken")
        publisher.changed("roomy")
        wait_for(lambda: publisher.check() or "could not write the pages of" in caplog.text, 15,
                 "the refused page writes logged")
        assert "No space left on device" in caplog.text
        # nothing recorded for the build that could not be staged: it is to be built again
        assert builds_of(db, "spaceless") == []
        assert ("spaceless", "1.0") in db.pending_page(host_target("cp311"), 10)[0]
        assert not received.exists()
        # roomy's old pages are whole; nothing half-written anywhere
        time.sleep(1)  # (a retry or two meets the full disk too)
        assert "broken" not in json.dumps(page(output, "roomy"))
        assert listed(output, "roomy") == [roomy.name]
        # one line for the lot (rate-limited)
        assert caplog.text.count("could not write the pages of") == 1
        assert temp_files(output) == []
        assert problems(output, master_dsn) == []
        publisher.check()  # both tasks still running

        # space returns: the refused pages are written without being asked again
        (output / "filler").unlink()
        wait_for(lambda: publisher.check() or (
            page(output, "spaceless") is not None and "broken" in json.dumps(page(output, "roomy"))),
            15, "the refused pages written once space returned")
        # the release is built again (as the queue hands it out) and published
        record(publisher, "spaceless", spaceless, transfers / "3-0123456789ab-spaceless.whl")
        wait_for(lambda: publisher.check() or listed(output, "spaceless") == [spaceless.name],
                 15, "spaceless published")
        wait_consistent(output, master_dsn)
        assert [b.status for b in builds_of(db, "spaceless")] == ["success"]
        assert temp_files(output) == []
        assert_consistent(output, master_dsn)
    finally:
        publisher.stop()
