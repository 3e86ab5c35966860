"""The index writer's short cuts never lose a change: fingerprints that skip
unchanged projects, requests taken together, and a restart."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import zmq
from test_index_writer import PLATFORM, SITE, T0, publish

from piwheels.master.index_writer import IndexWriter
from piwheels.page_writer import PageWriter
from piwheels.protocols import INDEX_REQUESTS
from piwheels.records import BuildRecord
from piwheels.storage import log_path
from piwheels.tags import Target
from piwheels.transport import Socket


@pytest.fixture
def output(tmp_path):
    return tmp_path / "output"


def fail(db, package: str, version: str, abi: str = "cp311") -> int:
    """Record a failed attempt (a zero-work build) for the target of *abi*; its build id."""
    db.add_build_target(Target(abi, PLATFORM))
    return db.record_build(BuildRecord(
        package=package, version=version, abi_tag=abi, platform_tag=PLATFORM, slave_label="pi",
        started=T0, duration=timedelta(seconds=1), status="failed", reason="broke",
        log="it broke\n"))


def pages(output: Path, package: str) -> dict[str, str]:
    """The project's four pages as they are on disk ('' for one that is missing)."""
    paths = {"simple.json": output / "simple" / package / "index.json",
             "simple.html": output / "simple" / package / "index.html",
             "project.json": output / "project" / package / "json" / "index.json",
             "project.html": output / "project" / package / "index.html"}
    return {name: path.read_text() if path.exists() else "" for name, path in paths.items()}


def test_a_fingerprint_never_skips_a_real_change(db, master_dsn, output):
    """Every kind of change is written although the writer holds the fingerprint of
    the state before it; only a flush with nothing changed renders nothing."""
    writer = PageWriter(db, output, SITE)
    first = publish(db, output, "subtle", "1.0")
    fingerprints = {}

    def write() -> tuple[int, dict[str, str]]:
        written = writer.write_packages(["subtle"], fingerprints)
        assert not written.failed
        fingerprints.update(written.fingerprints)
        return written.unchanged, pages(output, "subtle")

    unchanged, before = write()
    assert unchanged == 0 and first in before["simple.json"]
    assert write() == (1, before)  # nothing changed: nothing rendered, nothing written

    second = publish(db, output, "subtle", "2.0")  # a file added
    unchanged, now = write()
    assert unchanged == 0 and second in now["simple.json"] and second in now["simple.html"]
    assert second in now["project.html"]

    db.yank_version("subtle", "1.0", "broken")  # yanked
    unchanged, now = write()
    assert unchanged == 0
    assert [f["yanked"] for f in json.loads(now["simple.json"])["files"]] == ["broken", False]
    assert 'data-yanked="broken"' in now["simple.html"]

    build_id = fail(db, "subtle", "2.0", "cp313")  # a build failed (the simple page stays)
    simple_before = now["simple.json"]
    unchanged, now = write()
    assert unchanged == 0 and f'"build_id":{build_id},' in now["project.json"]
    assert log_path(build_id) in now["project.html"]
    assert (output / "logs" / log_path(build_id)).exists()
    assert now["simple.json"] == simple_before

    db.set_operator_status("subtle", "quarantined", "looks bad")  # status changed
    unchanged, now = write()
    assert unchanged == 0
    assert json.loads(now["simple.json"])["project-status"]["status"] == "quarantined"
    assert json.loads(now["simple.json"])["files"] == []
    assert not (output / "simple" / "subtle" / second).exists()
    db.set_operator_status("subtle", "active")
    unchanged, now = write()
    assert (output / "simple" / "subtle" / second).exists()

    db.remove_version("subtle", "1.0")  # removed
    unchanged, now = write()
    assert unchanged == 0 and first not in now["simple.json"] and first not in now["simple.html"]
    assert not (output / "simple" / "subtle" / first).exists()
    assert first not in now["project.json"]

    db.remove_package("subtle")  # the whole project
    written = writer.write_packages(["subtle"], fingerprints)
    assert written.fingerprints == {"subtle": None}
    assert pages(output, "subtle") == dict.fromkeys(now, "")


@pytest.fixture
def task(master_dsn, output):
    """An index writer driven from the test's own thread (no workers, no timers):
    each step happens when the test says."""
    ctx = zmq.Context()
    writer = IndexWriter(ctx, dsn=master_dsn, output_path=output, site=SITE,
                         summary_interval_s=60, coalesce_s=60, workers=0)
    writer.open_resources()
    writer.on_start()
    requests = Socket.make(ctx, zmq.PUSH, INDEX_REQUESTS)
    requests.connect(INDEX_REQUESTS.address)
    writer.send = lambda package: requests.send("PACKAGE", {"package": package})
    try:
        yield writer
    finally:
        writer.on_stop()
        writer.close_resources()
        requests.close()
        for sock in writer._sockets:
            sock.close()
        ctx.destroy(linger=0)


def take_requests(task: IndexWriter) -> None:
    """What the task's loop does when its socket has messages."""
    while task.requests.zsocket.poll(100):
        task.handle_requests()


def test_a_build_recorded_while_its_project_is_written_still_gets_its_page(db, task, output):
    """The recorder commits, then asks; a request that arrives while the project is
    being written (after the writer read the database) makes another write."""
    db.add_build_target(Target("cp311", PLATFORM))
    db.add_package("busy")
    db.add_version("busy", "1.0", released=T0, has_sdist=True)
    first = fail(db, "busy", "1.0")
    read_projects = task.pages.db.get_projects
    late = []

    def read_then_record(packages):
        projects = read_projects(packages)
        if not late:  # while this write is under way: the build recorder's commit...
            late.append(fail(db, "busy", "1.0"))
            task.send("busy")  # ... then its request
        return projects

    task.pages.db.get_projects = read_then_record
    task.send("busy")
    take_requests(task)  # the writer was idle: written at once
    page = output / "project" / "busy" / "json" / "index.json"
    assert f'"build_id":{first},' in page.read_text()
    assert f'"build_id":{late[0]},' not in page.read_text()  # the write read too early
    assert list(task.dirty) == ["busy"]  # ... but the request is kept
    task.flush()
    assert f'"build_id":{late[0]},' in page.read_text()
    assert (output / "logs" / log_path(late[0])).exists()
    assert not task.dirty


def test_requests_for_one_project_make_one_write(db, task, output):
    db.add_build_target(Target("cp311", PLATFORM))
    db.add_package("popular")
    db.add_version("popular", "1.0", released=T0, has_sdist=True)
    task.last_write = task.clock()  # busy: requests wait for the next flush
    builds = []
    for _ in range(20):
        builds.append(fail(db, "popular", "1.0"))
        task.send("popular")
    take_requests(task)
    assert list(task.dirty) == ["popular"]
    calls = []
    write = task.pages.write_packages
    task.pages.write_packages = lambda packages, fp: calls.append(packages) or write(packages, fp)
    task.flush()
    assert calls == [["popular"]]
    text = (output / "project" / "popular" / "json" / "index.json").read_text()
    assert all(f'"build_id":{build_id},' in text for build_id in builds)


def test_a_restart_rewrites_what_changed_behind_a_stale_fingerprint(db, master_dsn, output):
    """A new writer has no fingerprints: it compares with the disk, so a change made
    while no writer listened is written; a fingerprint kept from before the change
    (stale) does not hide it either."""
    publish(db, output, "sleepy", "1.0")
    old_writer = PageWriter(db, output, SITE)
    stale = old_writer.write_packages(["sleepy"]).fingerprints
    before = pages(output, "sleepy")
    # while no writer runs: a release is added, and a page is damaged on disk
    second = publish(db, output, "sleepy", "2.0")
    (output / "project" / "sleepy" / "index.html").write_text("damaged")
    written = PageWriter(db, output, SITE).write_packages(["sleepy"], stale)
    assert written.unchanged == 0
    now = pages(output, "sleepy")
    assert second in now["simple.json"] and second in now["project.html"]
    assert now["project.html"] != before["project.html"]
    # with nothing changed in the database, a fresh writer (no fingerprint) still
    # repairs the damaged page: it compares what it renders with the disk
    (output / "project" / "sleepy" / "index.html").write_text("damaged")
    written = PageWriter(db, output, SITE).write_packages(["sleepy"])
    assert written.unchanged == 0 and written.pages == 1
    assert pages(output, "sleepy") == now
