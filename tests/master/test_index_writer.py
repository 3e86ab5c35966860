"""index_writer: the output tree it writes from the database, and how it keeps it."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import zmq
from farm import task_failure, wait_for

from piwheels.build_policy import parse_policy
from piwheels.index_pages import Site, log_path
from piwheels.master.index_writer import IndexWriter
from piwheels.page_writer import ORPHAN_AGE_S
from piwheels.master.task import TaskControl
from piwheels.protocols import INDEX_REQUESTS, SUPERVISOR
from piwheels.protocols import WheelFacts
from piwheels.records import BuildRecord
from piwheels.tags import Target
from piwheels.transport import Socket

T0 = datetime(2026, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
SITE = Site(name="Test farm", index_url="http://farm.test/simple/",
            upstream_simple="http://upstream.test/simple/")
#: the platform the builds here are for (no builder runs: any real platform does)
PLATFORM = "linux_aarch64"
#: the OS release the builds here were made on
OS_RELEASE = "Debian GNU/Linux 12"


class Writer:
    def __init__(self, master_dsn: str, output: Path, site: Site = SITE, **options) -> None:
        self.ctx = zmq.Context()
        self.supervisor = Socket.make(self.ctx, zmq.PULL, SUPERVISOR.reverse())
        self.supervisor.bind(SUPERVISOR.address)
        self.task = IndexWriter(self.ctx, dsn=master_dsn, output_path=output, site=site,
                                **{"coalesce_s": 0.05, "summary_interval_s": 0.5, **options})
        self.requests = Socket.make(self.ctx, zmq.PUSH, INDEX_REQUESTS)
        self.requests.connect(INDEX_REQUESTS.address)
        self.control = TaskControl(self.ctx, self.task.name)
        self.task.start()

    def package(self, name: str) -> None:
        self.requests.send("PACKAGE", {"package": name})

    def stop(self) -> None:
        self.control.send("QUIT")
        self.task.join(10)
        failed = task_failure(self.supervisor)
        for sock in (self.control, self.requests, self.supervisor):
            sock.close()
        self.ctx.destroy(linger=0)  # never term(): a failed test may have left sockets open
        if failed:
            raise AssertionError(f"the writer failed: {failed}")


@pytest.fixture
def output(tmp_path):
    return tmp_path / "output"


@pytest.fixture
def writer(master_dsn, output):
    w = Writer(master_dsn, output)
    yield w
    w.stop()


def publish(db, output: Path, name: str, version: str, *, abi="cp311", py="cp311",
            wheel_abi=None, requires_python=">=3.9", yanked=None):
    """Record a successful build with one wheel, and put the wheel where it belongs."""
    db.add_build_target(Target(abi, PLATFORM))
    db.add_package(name, description=f"{name} does things")
    db.add_version(name, version, released=T0, has_sdist=True)
    if yanked is not None:
        db.yank_version(name, version, yanked)
    wheel_abi = wheel_abi or abi
    filename = f"{name.replace('-', '_')}-{version}-{py}-{wheel_abi}-{PLATFORM}.whl"
    content = f"wheel {filename}".encode()
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    directory = output / "simple" / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / filename).write_bytes(content)
    (directory / (filename + ".metadata")).write_bytes(metadata)
    db.record_build(BuildRecord(
        package=name, version=version, abi_tag=abi, platform_tag=PLATFORM, slave_label="pi",
        started=T0, duration=timedelta(seconds=12), status="success",
        log=f"log of {filename}\n", os_release=OS_RELEASE,
        files=(WheelFacts(
            filename=filename, size=len(content), sha256=hashlib.sha256(content).hexdigest(),
            package_tag=name, version_tag=version, py_tag=py, abi_tag=wheel_abi,
            platform_tag=PLATFORM, requires_python=requires_python, requires_dist=(),
            metadata=metadata, metadata_sha256=hashlib.sha256(metadata).hexdigest(),
            apt_dependencies=("libfoo1",)),),
    ))
    return filename


def read_json(path: Path):
    return json.loads(path.read_text())


def test_package_pages(db, writer, output):
    filename = publish(db, output, "foo-bar", "1.0", requires_python="<4,>=3.9")
    db.add_alias("foo-bar", "Foo_Bar")
    writer.package("foo-bar")
    page = output / "simple" / "foo-bar" / "index.json"
    wait_for((output / "simple" / "Foo_Bar").is_symlink, 10, "the pages (aliases come last)")
    data = read_json(page)
    assert data["meta"] == {"api-version": "1.4", "tracks": ["http://upstream.test/simple/foo-bar/"]}
    assert data["name"] == "foo-bar" and data["versions"] == ["1.0"]
    assert data["project-status"] == {"status": "active"}
    (f,) = data["files"]
    assert f["filename"] == filename and f["url"] == filename
    assert f["requires-python"] == "<4,>=3.9" and f["yanked"] is False
    assert set(f) >= {"hashes", "size", "upload-time", "core-metadata"}
    assert "dist-info-metadata" not in f  # PEP 714: never the old key in JSON
    html = (output / "simple" / "foo-bar" / "index.html").read_text()
    assert f'href="{filename}#sha256={f["hashes"]["sha256"]}"' in html
    assert 'data-requires-python="&lt;4,&gt;=3.9"' in html
    assert f'data-core-metadata="sha256={f["core-metadata"]["sha256"]}"' in html
    # ... but both attributes in HTML, for pips from before PEP 714
    assert f'data-dist-info-metadata="sha256={f["core-metadata"]["sha256"]}"' in html
    assert "data-yanked" not in html
    assert '<meta name="pypi:tracks" content="http://upstream.test/simple/foo-bar/">' in html
    assert '<meta name="pypi:repository-version" content="1.4">' in html
    assert '<meta name="pypi:project-status" content="active">' in html
    assert "pypi:project-status-reason" not in html
    project = read_json(output / "project" / "foo-bar" / "json" / "index.json")
    # a column per build target, and each wheel says what it was built for and on
    assert project["targets"] == [{"key": "cp311 linux_aarch64", "label": "cp311 aarch64",
                                   "abi": "cp311", "platform": "linux_aarch64"}]
    cell = project["versions"][0]["builds"]["cp311 linux_aarch64"]
    assert cell["status"] == "success" and cell["os_release"] == OS_RELEASE
    (wheel,) = project["versions"][0]["files"]
    assert (wheel["filename"], wheel["built_for"], wheel["os_release"]) == (
        filename, "cp311 linux_aarch64", OS_RELEASE)
    assert [(a["abi"], a["platform"], a["os_release"])
            for a in project["versions"][0]["attempts"]] == [("cp311", PLATFORM, OS_RELEASE)]
    assert project["apt_install"] == "sudo apt install libfoo1"
    # the one fact the master cannot check is shown as the builder's word
    assert project["apt_dependencies_source"] == "reported by the builder"
    human = (output / "project" / "foo-bar" / "index.html").read_text()
    assert "pip install --extra-index-url http://farm.test/simple/ foo-bar" in human
    assert "sudo apt install libfoo1" in human
    assert '<th title="cp311 linux_aarch64">cp311 aarch64</th>' in human
    # the files table: the wheel, the target it was built for, the OS it was built on
    assert re.search(rf"{re.escape(filename)}</a></td>\s*<td>cp311 linux_aarch64</td>\s*"
                     rf"<td>{re.escape(OS_RELEASE)}</td>", human), human
    assert re.search(r"Debian packages\s*\(<span class=\"claim\">reported by the builder</span>\)",
                     human), human
    (build,) = db.get_project("foo-bar").versions[0].builds
    log = output / "logs" / log_path(build.build_id)
    assert gzip.decompress(log.read_bytes()).decode() == f"log of {filename}\n"
    assert os.readlink(output / "simple" / "Foo_Bar") == "foo-bar"
    # the root written at start may predate the release: it follows within its interval
    root = output / "simple" / "index.json"
    listing = output / "packages.json"
    wait_for(lambda: root.exists() and listing.exists() and read_json(root)["projects"]
             and read_json(listing), 10, "the root")
    assert read_json(root)["projects"] == [{"name": "foo-bar"}]
    assert read_json(listing) == [["foo-bar", "foo-bar does things"]]


def test_yanked_release(db, writer, output):
    publish(db, output, "yanky", "1.0", yanked="broken <badly>")
    writer.package("yanky")
    page = output / "simple" / "yanky" / "index.json"
    wait_for(page.exists, 10, "the simple page")
    assert read_json(page)["files"][0]["yanked"] == "broken <badly>"
    assert 'data-yanked="broken &lt;badly&gt;"' in (page.parent / "index.html").read_text()


def test_unchanged_pages_are_not_rewritten(db, writer, output):
    publish(db, output, "steady", "1.0")
    writer.package("steady")
    page = output / "simple" / "steady" / "index.html"
    wait_for(page.exists, 10, "the simple page")
    inode = page.stat().st_ino
    before = writer.task.pages_written
    writer.package("steady")
    wait_for(lambda: not writer.task.dirty, 5, "the second request")
    assert page.stat().st_ino == inode
    publish(db, output, "steady", "2.0")
    writer.package("steady")
    wait_for(lambda: page.stat().st_ino != inode, 10, "the page to change")
    assert writer.task.pages_written > before


def test_removal_clears_files_and_pages(db, writer, output):
    old = publish(db, output, "shrinking", "1.0")
    new = publish(db, output, "shrinking", "2.0")
    writer.package("shrinking")
    wait_for((output / "project" / "shrinking" / "index.html").exists, 10, "the pages")
    db.remove_version("shrinking", "1.0")
    writer.package("shrinking")
    directory = output / "simple" / "shrinking"
    wait_for(lambda: not (directory / old).exists(), 10, "the removed release's wheel to go")
    assert not (directory / (old + ".metadata")).exists()
    assert (directory / new).exists()
    page = read_json(directory / "index.json")
    assert page["versions"] == ["2.0"] and [f["filename"] for f in page["files"]] == [new]
    assert old not in (directory / "index.html").read_text()
    project = read_json(output / "project" / "shrinking" / "json" / "index.json")
    assert [v["version"] for v in project["versions"]] == ["2.0"]
    assert old not in (output / "project" / "shrinking" / "index.html").read_text()
    db.remove_package("shrinking")
    writer.package("shrinking")
    wait_for(lambda: not directory.exists(), 10, "the project's directory to go")
    assert not (output / "project" / "shrinking").exists()
    wait_for(lambda: read_json(output / "simple" / "index.json")["projects"] == [], 10,
             "the root to drop it")


def test_home_page(db, writer, output):
    publish(db, output, "homely", "1.0")
    writer.requests.send("HOME")
    home = output / "index.html"
    wait_for(home.exists, 10, "the home page")
    text = home.read_text()
    assert "extra-index-url=http://farm.test/simple/" in text
    assert (output / "static" / "style.css").exists()


def test_an_upstream_yank_and_unyank_change_the_pages(db, writer, output):
    kept = publish(db, output, "wobbly", "1.0")
    yanked = publish(db, output, "wobbly", "2.0")
    writer.package("wobbly")
    page = output / "simple" / "wobbly" / "index.json"
    wait_for(page.exists, 10, "the simple page")
    assert [f["yanked"] for f in read_json(page)["files"]] == [False, False]
    db.yank_version("wobbly", "2.0", "it eats data")
    writer.package("wobbly")
    wait_for(lambda: [f["yanked"] for f in read_json(page)["files"]] == [False, "it eats data"],
             10, "the yank to reach the JSON page")
    html = (page.parent / "index.html").read_text()
    anchors = dict(re.findall(r'<a href="([^"#]+)#[^>]*?(data-yanked="[^"]*")?>', html))
    assert anchors == {kept: "", yanked: 'data-yanked="it eats data"'}
    project = read_json(output / "project" / "wobbly" / "json" / "index.json")
    assert [(v["version"], v["yanked"], v["yank_reason"]) for v in project["versions"]] == [
        ("2.0", True, "it eats data"), ("1.0", False, None)]
    human = (output / "project" / "wobbly" / "index.html").read_text()
    assert re.search(r'<tr class="yanked">\s*<td>2\.0<span class="tag"\s+title="it eats data">',
                     human)
    db.unyank_version("wobbly", "2.0")
    writer.package("wobbly")
    wait_for(lambda: [f["yanked"] for f in read_json(page)["files"]] == [False, False],
             10, "the unyank to reach the JSON page")
    assert "data-yanked" not in (page.parent / "index.html").read_text()
    assert 'class="yanked"' not in (output / "project" / "wobbly" / "index.html").read_text()
    assert (page.parent / yanked).exists()  # a yanked wheel stays published


def test_a_wheel_published_but_not_yet_recorded_is_left_alone(db, writer, output):
    """The build recorder moves a wheel into place before its database record commits;
    a page written in between must not take the wheel away."""
    publish(db, output, "racy", "1.0")
    directory = output / "simple" / "racy"
    arriving = directory / f"racy-2.0-cp311-cp311-{PLATFORM}.whl"
    arriving.write_bytes(b"a wheel on its way")
    arriving.with_name(arriving.name + ".metadata").write_bytes(b"Name: racy\n")
    writer.package("racy")
    wait_for((directory / "index.json").exists, 10, "the simple page")
    writer.package("racy")
    wait_for(lambda: not writer.task.dirty, 5, "the second request")
    time.sleep(0.2)
    assert arriving.exists() and arriving.with_name(arriving.name + ".metadata").exists()
    assert arriving.name not in (directory / "index.json").read_text()
    # left behind by a crash: once it is old, it goes when the page is next written
    old = time.time() - ORPHAN_AGE_S - 60
    for path in (arriving, arriving.with_name(arriving.name + ".metadata")):
        os.utime(path, (old, old))
    publish(db, output, "racy", "3.0")
    writer.package("racy")
    wait_for(lambda: not arriving.exists(), 10, "the orphan to go")
    assert not arriving.with_name(arriving.name + ".metadata").exists()
    assert len(list(directory.glob("*.whl"))) == 2


def test_bad_and_non_canonical_page_requests(db, writer, output):
    publish(db, output, "foo-bar", "1.0")
    db.add_alias("foo-bar", "Foo.Bar")
    writer.package("../../etc")  # dropped with a log line, not a crash
    writer.package("Foo.Bar")
    page = output / "simple" / "foo-bar" / "index.json"
    wait_for(page.exists, 10, "the canonical page")
    wait_for((output / "simple" / "Foo.Bar").is_symlink, 10, "the alias")
    assert sorted(p.name for p in (output / "simple").iterdir() if p.is_dir()
                  and not p.is_symlink()) == ["foo-bar"]
    assert writer.task.is_alive()


def written_tree(output: Path) -> dict[str, bytes]:
    """What the writer wrote (not the wheels; not the home page, which shows the time)."""
    return {
        str(path.relative_to(output)): os.readlink(path).encode() if path.is_symlink()
        else path.read_bytes()
        for path in output.rglob("*")
        if (path.is_file() or path.is_symlink()) and path != output / "index.html"
        and not path.name.endswith((".whl", ".metadata"))
    }


def full_rewrite(master_dsn: str, output: Path, projects: list[str], workers: int) -> int:
    """Rewrite everything with a fresh writer; how many batches went to worker processes."""
    writer = Writer(master_dsn, output, workers=workers, parallel_backlog=1,
                    worker_batch_size=2)
    pages = [output / section / name / "index.html" for name in projects
             for section in ("simple", "project")]
    try:
        wait_for(lambda: not writer.task.status()["root_pending"], 10, "the start")
        assert not any(page.exists() for page in pages)
        writer.requests.send("ALL")
        wait_for(lambda: all(page.exists() for page in pages) and not any(
            writer.task.status()[key] for key in (
                "dirty", "in_flight", "root_pending", "home_pending")), 60, "the rewrite")
        return writer.task.batches_shared
    finally:
        writer.stop()


def test_a_full_rewrite_shared_among_worker_processes(db, master_dsn, output, tmp_path):
    for i in range(12):
        publish(db, output, f"many-{i}", "1.0")
        publish(db, output, f"many-{i}", "2.0", yanked="old" if i % 3 == 0 else None)
    db.add_alias("many-3", "Many_3")
    projects = [f"many-{i}" for i in range(12)]
    assert full_rewrite(master_dsn, output, projects, workers=0) == 0
    alone = written_tree(output)
    # each project's two, the simple root's and the failures page's
    assert len([name for name in alone if name.endswith("index.json")]) == 12 * 2 + 2
    shared_output = tmp_path / "shared"
    assert full_rewrite(master_dsn, shared_output, projects, workers=2) == 6
    assert written_tree(shared_output) == alone


def test_no_wheel_means_no_simple_page_and_no_install_line(db, writer, output):
    db.add_build_target(Target("cp311", PLATFORM))
    db.add_package("waiting")
    db.add_version("waiting", "1.0", released=T0)
    db.add_package("never", skip_reason="needs a GPU")
    db.add_version("never", "1.0", released=T0)
    for package in ("waiting", "never"):
        writer.package(package)
    for package, why in (("waiting", "waiting in the build queue"), ("never", "needs a GPU")):
        human = output / "project" / package / "index.html"
        wait_for(human.exists, 10, f"{package}'s project page")
        assert not (output / "simple" / package / "index.json").exists()
        assert not (output / "simple" / package / "index.html").exists()
        project = read_json(output / "project" / package / "json" / "index.json")
        assert project["install"] is None and why in project["not_installable"]
        text = human.read_text()
        assert f"/simple/ {package}</pre>" not in text and why in text
    # a project whose only wheel goes loses its simple page (a 404 again)
    publish(db, output, "waiting", "2.0")
    writer.package("waiting")
    page = output / "simple" / "waiting" / "index.json"
    wait_for(page.exists, 10, "the simple page of the built project")
    human = output / "project" / "waiting" / "index.html"
    wait_for(lambda: "/simple/ waiting</pre>" in human.read_text(), 10, "the install line")
    db.remove_builds("waiting", "2.0")
    writer.package("waiting")
    wait_for(lambda: not page.exists(), 10, "the simple page to go")
    assert not (output / "simple" / "waiting" / "index.html").exists()
    assert "/simple/ waiting</pre>" not in human.read_text()


def test_an_unknown_release_time_is_shown_as_unknown(db, writer, output):
    publish(db, output, "timely", "2.0")
    db.add_version("timely", "1.0", released=None)
    writer.package("timely")
    path = output / "project" / "timely" / "json" / "index.json"
    wait_for((output / "project" / "timely" / "index.html").exists, 10, "the project page")
    released = {v["version"]: v["released"] for v in read_json(path)["versions"]}
    assert released == {"2.0": "2026-02-03T04:05:06.000000Z", "1.0": None}
    text = (output / "project" / "timely" / "index.html").read_text()
    assert "<td>unknown</td>" in text and "<td>2026-02-03</td>" in text
    assert "1970" not in text


def test_a_quarantined_project_is_withheld_and_restored(db, writer, output):
    filename = publish(db, output, "risky", "1.0")
    writer.package("risky")
    page = output / "simple" / "risky" / "index.json"
    wait_for(page.exists, 10, "the page")
    root = output / "simple" / "index.json"  # written after the project's pages
    wait_for(lambda: root.exists() and read_json(root)["projects"] == [{"name": "risky"}],
             10, "the root")
    db.set_upstream_status("risky", "quarantined", "malware")
    writer.package("risky")
    wait_for(lambda: read_json(page)["project-status"]["status"] == "quarantined", 10, "status")
    assert read_json(page)["files"] == []
    served = output / "simple" / "risky" / filename
    held = output / ".withheld" / "risky" / filename
    assert not served.exists() and not served.with_name(filename + ".metadata").exists()
    assert held.read_bytes() == f"wheel {filename}".encode()
    assert held.with_name(filename + ".metadata").exists()
    wait_for(lambda: read_json(output / "simple" / "index.json")["projects"] == [], 10,
             "the root to drop it")
    assert read_json(output / "packages.json") == []
    # the operator's milder status leaves upstream's quarantine in force
    db.set_operator_status("risky", "deprecated", "old")
    db.set_upstream_status("risky", "active")
    writer.package("risky")
    wait_for(lambda: read_json(page)["project-status"] == {"status": "deprecated",
                                                           "reason": "old"}, 10, "lifted")
    assert [f["filename"] for f in read_json(page)["files"]] == [filename]
    assert served.read_bytes() == f"wheel {filename}".encode()
    assert not (output / ".withheld" / "risky").exists()
    wait_for(lambda: read_json(output / "simple" / "index.json")["projects"] == [{"name": "risky"}],
             10, "the root to list it again")
def test_project_page_says_why_a_release_is_not_built(db, writer, output):
    publish(db, output, "polly", "3.0")
    for version in ("2.0", "1.0", "4.0b1"):
        db.add_version("polly", version, released=T0)
    db.add_version("polly", "0.9", released=T0)
    db.yank_version("polly", "0.9", "bad")
    db.set_farm_policy(parse_policy("newest:1"))
    writer.package("polly")
    page = output / "project" / "polly" / "json" / "index.json"

    def reasons():
        data = read_json(page)
        return {v["version"]: (v["not_built"], v["builds"]["cp311 linux_aarch64"]["status"])
                for v in data["versions"]}
    html_page = output / "project" / "polly" / "index.html"
    wait_for(lambda: page.exists() and html_page.exists() and "2.0" in reasons(), 10,
             "the project page")
    assert reasons() == {
        "4.0b1": ("pre-release", "excluded"),
        "3.0": (None, "success"),
        "2.0": ("farm policy builds the newest 1 release", "excluded"),
        "1.0": ("farm policy builds the newest 1 release", "excluded"),
        "0.9": ("yanked", "yanked"),
    }
    html = html_page.read_text()
    assert "not built: farm policy builds the newest 1 release" in html
    assert "not built: pre-release" in html
    assert "not built: yanked" not in html  # the yanked tag says so already


def _page_workers() -> list[int]:
    """The worker processes this test process spawned (not the resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == os.getpid() and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_a_worker_process_that_dies_fails_only_its_batch(db, master_dsn, output, caplog):
    """Killed in the middle of a rewrite (the OOM killer, an operator's kill), a
    worker's batches are written again by a new pool; the writer carries on."""
    projects = [f"killed-{i}" for i in range(8)]
    for name in projects:
        publish(db, output, name, "1.0")
    writer = Writer(master_dsn, output, workers=2, parallel_backlog=1, worker_batch_size=2,
                    retry_s=0.5)
    pages = [output / "project" / name / "index.html" for name in projects]
    try:
        wait_for(lambda: not writer.task.status()["root_pending"], 10, "the start")
        writer.requests.send("ALL")
        killed: set[int] = set()

        def kill_the_first_workers() -> bool:
            for pid in _page_workers():
                if pid not in killed:
                    os.kill(pid, signal.SIGKILL)  # long before a fresh interpreter writes
                    killed.add(pid)
            return len(killed) >= 2
        wait_for(kill_the_first_workers, 10, "the pool's processes", interval_s=0.005)
        wait_for(lambda: all(page.exists() for page in pages) and not writer.task.status()[
            "write_failed"], 60, "the pages, from a new pool")
        assert writer.task.is_alive()
        assert "worker process died" in caplog.text
        assert set(_page_workers()).isdisjoint(killed)
    finally:
        writer.stop()


def test_a_worker_without_the_database_raises_per_call_not_at_start(tmp_path):
    """A pool whose initializer raised would be broken for good; the worker tries
    again at each call, and the call fails with the database's reason."""
    from piwheels.errors import DatabaseUnavailable
    from piwheels.master import index_writer
    closed = "postgresql://nobody@127.0.0.1:1/none"
    try:
        index_writer._start_worker(closed, str(tmp_path), SITE)  # no exception
        for _ in range(2):
            with pytest.raises(DatabaseUnavailable, match="cannot connect"):
                index_writer._worker_write(["any"], {})
        assert index_writer._worker_pages is None
    finally:
        index_writer._worker_args = ()
