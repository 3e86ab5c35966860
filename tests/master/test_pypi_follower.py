"""pypi_follower against the fake upstream: every release-lifecycle event, both sources.

The follower task runs in-process with real ZeroMQ sockets; PULL sockets stand
in for the tasks it tells (build queue, index writer, slave driver).  Each
test changes the fake upstream and waits for the database to agree.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import zmq
from farm import task_failure, wait_for
from fake_pypi import FakePyPI
from sdist_factory import make_sdist

from piwheels.allow_list import AllowList
from piwheels.master.pypi_follower import PyPIFollower
from piwheels.master.task import TaskControl
from piwheels.protocols import BUILD_QUEUE, INDEX_REQUESTS, QUEUE_REQUESTS, SUPERVISOR
from piwheels.pypi_client import PyPIClient
from piwheels.transport import Socket

UPLOADED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


@pytest.fixture
def pypi():
    with FakePyPI(page_size=5) as fake:
        yield fake


@pytest.fixture
def files(tmp_path):
    """Makes real distribution files to publish."""
    def make(name: str, version: str, kind: str = "sdist"):
        sdist = make_sdist(tmp_path / "dists", name, version)
        if kind == "sdist":
            return sdist
        wheel = tmp_path / "dists" / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        wheel.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip is enough upstream
        return wheel
    return make


class Follower:
    """A running follower task and the sockets that overhear what it says."""

    def __init__(self, master_dsn: str, pypi: FakePyPI, *, source: str,
                 allow: AllowList | None = None,
                 reconcile_interval_s: float | None = None, json_api: bool = True) -> None:
        self.ctx = zmq.Context()
        self.supervisor = Socket.make(self.ctx, zmq.PULL, SUPERVISOR.reverse())
        self.supervisor.bind(SUPERVISOR.address)
        self.overheard = []
        self.listeners = []
        for address, protocol in ((QUEUE_REQUESTS.address, QUEUE_REQUESTS),
                                  (INDEX_REQUESTS.address, INDEX_REQUESTS),
                                  (BUILD_QUEUE.address, BUILD_QUEUE)):
            sock = Socket.make(self.ctx, zmq.PULL, protocol.reverse())
            sock.bind(address)
            self.listeners.append(sock)
        client = PyPIClient(
            simple_url=pypi.simple_url, json_url=pypi.json_url if json_api else None,
            xmlrpc_url=pypi.xmlrpc_url if source == "xmlrpc" else None)
        self.task = PyPIFollower(
            self.ctx, dsn=master_dsn, client=client, allow=allow or AllowList(),
            poll_interval_s=0.2,
            reconcile_interval_s=reconcile_interval_s or (3600 if source == "xmlrpc" else 0.3))
        self.control = TaskControl(self.ctx, self.task.name)
        self.task.start()

    def heard(self, name: str) -> list[dict]:
        for sock in self.listeners:
            while sock.zsocket.poll(0):
                self.overheard.append(sock.recv())
        return [payload for msg_name, payload in self.overheard if msg_name == name]

    def stop(self) -> None:
        self.control.send("QUIT")
        self.task.join(10)
        failed = task_failure(self.supervisor)
        for sock in [self.control, self.supervisor, *self.listeners]:
            sock.close()
        self.ctx.destroy(linger=0)  # never term(): a failed test may have left sockets open
        assert not self.task.is_alive()
        if failed:
            raise AssertionError(f"the follower failed: {failed}")


@pytest.fixture(params=["xmlrpc", "json"])
def source(request):
    return request.param


@pytest.fixture
def follower(master_dsn, pypi, source):
    running = []

    def start(**kwargs) -> Follower:
        f = Follower(master_dsn, pypi, source=source, **kwargs)
        running.append(f)
        return f

    yield start
    for f in running:
        if f.task.is_alive():
            f.stop()


def versions(db, package):
    return db.get_versions(package)


def test_new_project_and_release(db, pypi, files, follower, source):
    follower()
    pypi.publish("Foo_Bar", "1.0", files("foo-bar", "1.0"), summary="Bars for foos",
                 upload_time=UPLOADED)
    wait_for(lambda: db.get_project("foo-bar") and versions(db, "foo-bar"), 10,
             "the release to be recorded")
    project = db.get_project("foo-bar")
    assert "Foo_Bar" in project.names
    wait_for(lambda: db.get_project("foo-bar").description == "Bars for foos", 10,
             "the description")
    v = versions(db, "foo-bar")["1.0"]
    assert v["has_sdist"] and not v["yanked"]
    if source == "json":
        assert v["released"] == UPLOADED
    wait_for(lambda: db.get_pypi_serial() == pypi.serial, 10, "the serial to be stored")


def test_binary_only_until_an_sdist_appears(db, pypi, files, follower):
    f = follower()
    pypi.publish("wheelonly", "2.0", files("wheelonly", "2.0", "wheel"))
    wait_for(lambda: db.get_project("wheelonly") and versions(db, "wheelonly"), 10, "release")
    assert not versions(db, "wheelonly")["2.0"]["has_sdist"]
    db.add_build_target(("cp311", "linux_x86_64"))
    assert db.pending_builds(("cp311", "linux_x86_64"), 10) == []
    pypi.add_file("wheelonly", "2.0", files("wheelonly", "2.0"))
    wait_for(lambda: versions(db, "wheelonly")["2.0"]["has_sdist"], 10, "the sdist")
    assert db.pending_builds(("cp311", "linux_x86_64"), 10) == [("wheelonly", "2.0")]
    wait_for(lambda: any(p["package"] == "wheelonly" for p in f.heard("REFRESH")), 5,
             "the build queue to be told")


def test_yank_and_unyank_with_reason(db, pypi, files, follower):
    f = follower()
    pypi.publish("yanky", "1.0", files("yanky", "1.0"))
    wait_for(lambda: db.get_project("yanky") and versions(db, "yanky"), 10, "release")
    pypi.yank("yanky", "1.0", "broken on ARM")
    wait_for(lambda: versions(db, "yanky")["1.0"]["yank_reason"] == "broken on ARM", 10,
             "the yank and its reason")
    assert versions(db, "yanky")["1.0"]["yanked"]
    assert {"package": "yanky", "version": "1.0"} in f.heard("CANCEL")
    pypi.unyank("yanky", "1.0")
    wait_for(lambda: not versions(db, "yanky")["1.0"]["yanked"], 10, "the unyank")


def test_removing_a_file_a_release_and_a_project(db, pypi, files, follower):
    f = follower()
    pypi.publish("goner", "1.0", files("goner", "1.0"))
    pypi.publish("goner", "2.0", files("goner", "2.0"))
    wait_for(lambda: db.get_project("goner") and len(versions(db, "goner")) == 2, 10, "releases")
    pypi.remove_file("goner", "2.0", "goner-2.0.tar.gz")
    wait_for(lambda: not versions(db, "goner")["2.0"]["has_sdist"], 10, "the sdist removal")
    pypi.remove_release("goner", "1.0")
    wait_for(lambda: "1.0" not in versions(db, "goner"), 10, "the release removal")
    assert {"package": "goner", "version": "1.0"} in f.heard("CANCEL")
    pypi.remove_project("goner")
    wait_for(lambda: db.get_project("goner") is None, 10, "the project removal")
    assert {"package": "goner", "version": None} in f.heard("CANCEL")


def test_rename(db, pypi, files, follower):
    follower()
    pypi.publish("old-name", "1.0", files("old-name", "1.0"))
    wait_for(lambda: db.get_project("old-name") and versions(db, "old-name"), 10, "release")
    pypi.rename("old-name", "New.Name")
    wait_for(lambda: db.get_project("new-name") and versions(db, "new-name"), 10, "new name")
    wait_for(lambda: db.get_project("old-name") is None, 10, "the old name to go")
    assert "New.Name" in db.get_project("new-name").names


def test_invalid_versions_and_noise_are_ignored(db, pypi, files, follower):
    follower()
    pypi.publish("mixed", "not a version!", files("mixed", "0.0.1"))
    pypi.noise("mixed")
    pypi.publish("mixed", "1.0", files("mixed", "1.0"))
    wait_for(lambda: db.get_project("mixed") and "1.0" in versions(db, "mixed"), 10, "1.0")
    assert list(versions(db, "mixed")) == ["1.0"]


def test_malformed_answers_are_retried(db, pypi, files, follower):
    pypi.garble_next(1)
    pypi.fail_next(2, status=500)  # with the back-off doubling: 1 + 2 + 4 s
    follower()
    pypi.publish("sturdy", "1.0", files("sturdy", "1.0"))
    wait_for(lambda: db.get_project("sturdy") and versions(db, "sturdy"), 20,
             "the release despite bad answers")


def test_rate_limit_is_respected(db, pypi, files, follower, source):
    pypi.fail_next(1, status=429)
    follower()
    pypi.publish("limited", "1.0", files("limited", "1.0"))
    wait_for(lambda: db.get_project("limited") and versions(db, "limited"), 20, "release")
    if source == "xmlrpc":
        posts = [r.time for r in pypi.requests if r.method == "POST"]
        gaps = [b - a for a, b in zip(posts, posts[1:])]
        assert all(gap >= 0.95 for gap in gaps), gaps  # at most one call a second


def test_allow_list(db, pypi, files, follower):
    follower(allow=AllowList(["wanted*"]))
    pypi.publish("unwanted", "1.0", files("unwanted", "1.0"))
    pypi.publish("wanted-thing", "1.0", files("wanted-thing", "1.0"))
    wait_for(lambda: db.get_project("wanted-thing") and versions(db, "wanted-thing"), 10,
             "the allowed project")
    assert db.get_project("unwanted") is None


def test_named_projects_are_read_without_the_project_list(db, pypi, files, follower):
    pypi.publish("wanted", "1.0", files("wanted", "1.0"))
    pypi.publish("Also_Wanted", "2.0", files("also-wanted", "2.0"))
    pypi.publish("unwanted", "1.0", files("unwanted", "1.0"))
    follower(allow=AllowList(["wanted", "also-wanted", "not-upstream"]))
    wait_for(lambda: db.get_project("wanted") and db.get_project("also-wanted"), 20,
             "the named projects")
    assert db.get_versions("also-wanted")["2.0"]["has_sdist"]
    assert db.get_project("unwanted") is None and db.get_project("not-upstream") is None
    roots = [r for r in pypi.requests if r.path.rstrip("/") == "/simple"]
    assert roots == []  # the whole list was never fetched
    # removed upstream: gone here at the next reconcile
    pypi.remove_project("wanted")
    wait_for(lambda: db.get_project("wanted") is None, 20, "the removal")


def test_restart_catches_up_through_the_reconciler(db, pypi, files, follower):
    first = follower()
    pypi.publish("steady", "1.0", files("steady", "1.0"))
    pypi.publish("doomed", "1.0", files("doomed", "1.0"))
    wait_for(lambda: db.get_project("doomed") and versions(db, "steady"), 10, "releases")
    first.stop()
    # while the master is down: a new release, a yank, a removal, a new project
    pypi.publish("steady", "2.0", files("steady", "2.0"))
    pypi.yank("steady", "1.0", "oops")
    pypi.remove_project("doomed")
    pypi.publish("newcomer", "0.1", files("newcomer", "0.1"))
    follower()
    wait_for(lambda: db.get_project("newcomer") and versions(db, "newcomer")
             and db.get_project("doomed") is None
             and "2.0" in versions(db, "steady")
             and versions(db, "steady")["1.0"]["yank_reason"] == "oops", 15,
             "the follower to catch up")
    wait_for(lambda: db.get_pypi_serial() >= pypi.serial, 10, "the serial")


@pytest.mark.parametrize("source", ["xmlrpc"])  # only meaningful with the feed configured
def test_xmlrpc_refused_falls_back_to_reconciling(db, pypi, files, follower, source):
    pypi.xmlrpc_enabled = False
    follower(reconcile_interval_s=0.5)
    pypi.publish("fallback", "1.0", files("fallback", "1.0"))
    wait_for(lambda: db.get_project("fallback") and versions(db, "fallback"), 20,
             "the release through the reconciler")


@pytest.mark.parametrize("json_api", [True, False], ids=["json-api", "simple-api"])
def test_project_status_is_recorded_and_a_quarantine_keeps_every_release(
        db, pypi, files, follower, json_api):
    f = follower(json_api=json_api)
    pypi.publish("stat-pkg", "1.0", files("stat-pkg", "1.0"))
    pypi.publish("stat-pkg", "2.0", files("stat-pkg", "2.0"))
    wait_for(lambda: db.get_project("stat-pkg") and len(versions(db, "stat-pkg")) == 2, 10,
             "the releases")
    assert db.get_project("stat-pkg").status.status == "active"
    pypi.set_status("stat-pkg", "deprecated", "use stat-pkg2")
    wait_for(lambda: db.get_project("stat-pkg").upstream_status == "deprecated", 10, "deprecated")
    assert db.get_project("stat-pkg").upstream_status_reason == "use stat-pkg2"
    assert not [c for c in f.heard("CANCEL") if c["package"] == "stat-pkg"]
    pypi.set_status("stat-pkg", "quarantined", "malware")
    wait_for(lambda: db.get_project("stat-pkg").upstream_status == "quarantined", 10,
             "quarantined")
    project = db.get_project("stat-pkg")
    assert project.status.withheld and project.status.reason == "malware"
    # upstream lists nothing now, which is no reason to forget the releases
    assert set(versions(db, "stat-pkg")) == {"1.0", "2.0"}
    wait_for(lambda: {"package": "stat-pkg", "version": None} in f.heard("CANCEL"), 10,
             "its builds cancelled")
    pypi.set_status("stat-pkg", "active")
    wait_for(lambda: db.get_project("stat-pkg").upstream_status == "active", 10, "lifted")
    assert db.get_project("stat-pkg").upstream_status_reason is None
    assert set(versions(db, "stat-pkg")) == {"1.0", "2.0"}


@pytest.mark.parametrize("source", ["json"], indirect=True)
def test_an_unknown_status_is_logged_and_withheld(db, pypi, files, follower, caplog):
    follower()
    pypi.publish("odd-pkg", "1.0", files("odd-pkg", "1.0"))
    wait_for(lambda: db.get_project("odd-pkg") and versions(db, "odd-pkg"), 10, "the release")
    pypi.set_status("odd-pkg", {"nested": "nonsense"})
    wait_for(lambda: db.get_project("odd-pkg").upstream_status == "quarantined", 10, "withheld")
    assert "unknown status" in db.get_project("odd-pkg").upstream_status_reason
    assert any("withholding it as if quarantined" in r.getMessage() for r in caplog.records)
    assert set(versions(db, "odd-pkg")) == {"1.0"}


@pytest.mark.parametrize("source", ["json"], indirect=True)
def test_an_unknown_upload_time_is_recorded_as_unknown(db, pypi, files, follower):
    pypi.publish("timeless", "1.0", files("timeless", "1.0"))
    pypi.publish("timeless", "2.0", files("timeless", "2.0"), upload_time=UPLOADED)
    pypi.forget_upload_times("timeless", "1.0")
    follower()
    wait_for(lambda: db.get_project("timeless") and len(versions(db, "timeless")) == 2, 10,
             "the releases")
    assert versions(db, "timeless")["1.0"]["released"] is None
    assert versions(db, "timeless")["2.0"]["released"] == UPLOADED
