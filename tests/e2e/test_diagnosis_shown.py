"""Every failure says why and what to install, end to end.

A real piw-master and one real piw-slave build sdists of
tests/failing_sdists.py that fail for real (a missing header whose Debian
package only ``apt-file`` names, a Requires-Python this Python is outside
of, an sdist missing a file its setup.py reads; the slave's own reasons, such as its time limit, are
checked without a build in tests/slave/test_explain.py).  The causes stored
with the builds, the project pages (their visible text and their JSON) and
the farm-wide failures page must say so.  Then a hand-driven slave lies in
BUILT: a diagnosis its own log contradicts, a bogus cause code, a bogus
package name, a success without wheels; the master keeps its own reading
and keeps running.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import msgpack
import pytest
import zmq
from bs4 import BeautifulSoup
from failing_sdists import FAILING_SDISTS, missing_on_this_host
from farm import HOST_PLATFORM, builds_of, pyenv_python
from raw_slave import RAW_PLATFORM, STATS, RawSlave

from piwheels.diagnosis import diagnose
from piwheels.tags import Target

pytestmark = pytest.mark.slow

LBER = "lber.h: No such file or directory"


def visible_text(path) -> str:
    return " ".join(BeautifulSoup(path.read_bytes(), "html.parser").get_text(" ").split())


def attempt_causes(farm, package: str) -> list[dict]:
    page = farm.output / "project" / package / "json" / "index.json"
    if not page.exists():
        return []
    return [a["cause"] for v in json.loads(page.read_bytes())["versions"]
            for a in v["attempts"] if a["cause"]]


def failures_json(farm) -> dict:
    path = farm.output / "failures" / "json" / "index.json"
    return json.loads(path.read_bytes()) if path.exists() else {"builds": 0, "causes": []}


def test_failures_say_why_and_what_to_install(farm, db, build_index, tmp_path):
    expected = {  # diagcore's failing sdists, and the package each is to name
        "fail-header": "libldap-dev",
        "fail-python": None,
        "fail-missing-file": None,
    }
    for hours, name in enumerate(expected):  # newest first: handed out in this order
        sdist = FAILING_SDISTS[name]
        assert not missing_on_this_host(sdist), f"{name} cannot fail here as meant"
        build_index.add(sdist.make(tmp_path / "sdists"))
        db.add_package(name)
        db.add_version(name, sdist.version, has_sdist=True,
                       released=datetime(2026, 1, 1, tzinfo=timezone.utc) - timedelta(hours=hours))
    farm.start_master()
    farm.start_slave("diagnoser", pyenv_python("11"), lookup=True)

    def recorded():
        builds = {name: builds_of(db, name) for name in expected}
        return all(builds.values()) and builds
    builds = farm.wait(recorded, 300, "every release to fail once")  # a busy host is slow

    # stored: the master's own diagnosis, with the builder's package where they agree
    for name, package in expected.items():
        (build,) = builds[name]
        assert build.status == "failed", (name, build.reason)
        assert (build.cause, build.cause_package) == (FAILING_SDISTS[name].cause, package), \
            (name, build)
        assert build.cause_detail, name
    assert LBER in builds["fail-header"][0].cause_detail
    assert "README.md" in builds["fail-missing-file"][0].cause_detail
    # the slave looked the header up on its own host (apt-file: it is not installed)
    assert "missing header: lber.h is in libldap-dev" in farm.slaves[0].log()

    # the project page says it in words, not only in a tooltip; its JSON too
    farm.wait(lambda: all(attempt_causes(farm, name) for name in expected), 60,
              "the project pages")
    text = visible_text(farm.output / "project" / "fail-header" / "index.html")
    assert "missing header" in text and "install libldap-dev" in text and LBER in text
    assert attempt_causes(farm, "fail-header") == [{
        "code": "missing-header", "label": "missing header",
        "detail": builds["fail-header"][0].cause_detail, "package": "libldap-dev"}]
    assert "needs a newer Python" in visible_text(
        farm.output / "project" / "fail-python" / "index.html")
    assert attempt_causes(farm, "fail-missing-file")[0]["code"] == "broken-sdist"
    # the attempt's target (the slave's), and the OS release its builder said it ran
    [slave] = farm.snapshot()["slaves"]
    assert slave["os"] and slave["platform_tag"] == HOST_PLATFORM
    project = json.loads((farm.output / "project" / "fail-header" / "json" / "index.json")
                         .read_bytes())
    assert [(a["abi"], a["platform"], a["os_release"]) for v in project["versions"]
            for a in v["attempts"]] == [("cp311", HOST_PLATFORM, slave["os"])]
    cell = project["versions"][0]["builds"][str(Target("cp311", HOST_PLATFORM))]
    assert (cell["build_id"], cell["os_release"]) == (builds["fail-header"][0].build_id,
                                                     slave["os"])
    assert slave["os"] in text

    # the failures page: grouped by cause, and by package within the fixable ones
    failures = farm.wait(lambda: (lambda f: f if f["builds"] == 3 else None)(failures_json(farm)),
                         60, "the failures page")
    groups = {group["code"]: group for group in failures["causes"]}
    assert sorted(groups) == sorted(FAILING_SDISTS[name].cause for name in expected)
    assert [(p["package"], p["builds"]) for p in groups["missing-header"]["packages"]] == [
        ("libldap-dev", 1)]
    assert groups["missing-header"]["packages"][0]["projects"][0]["name"] == "fail-header"
    assert failures["unlock"] == [
        {"package": "libldap-dev", "builds": 1, "cause": "missing-header"}]
    assert [p["name"] for p in groups["needs-newer-python"]["projects"]] == ["fail-python"]
    page = visible_text(farm.output / "failures" / "index.html")
    assert "libldap-dev would unlock 1 build" in page
    assert "broken sdist: 1 build" in page and "fail-missing-file" in page
    assert 'href="failures/"' in (farm.output / "index.html").read_text()


def raw_built(slave: RawSlave, **fields) -> tuple[str, dict]:
    """A failed BUILT for the slave's job, sent as raw msgpack (past the schema the
    test's own socket would apply): the master's answer."""
    payload = {"package": slave.job[0], "version": slave.job[1], "success": False,
               "duration_s": 1.0, "log": "", "reason": "pip wheel failed", "files": [],
               **fields}
    slave.sock.zsocket.send(msgpack.packb(["BUILT", payload]))
    assert slave.sock.zsocket.poll(5000), "no answer to BUILT"
    return tuple(msgpack.unpackb(slave.sock.zsocket.recv()))


def next_build(slave: RawSlave, timeout_s: float = 20) -> str:
    """IDLE until the master hands *slave* a build, whichever; its package."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        name, payload = slave.request("IDLE", {"stats": STATS})
        if name == "BUILD":
            slave.job = (payload["package"], payload["version"])
            return payload["package"]
        time.sleep(0.3)
    raise AssertionError("the master handed out nothing")


def test_a_builder_claiming_what_its_log_does_not_say(farm, db, release):
    names = ["liar-contradicted", "liar-agreed", "liar-rejected", "liar-bogus"]
    for name in names:
        release(name)
    farm.start_master()
    ctx = zmq.Context()
    try:
        raw = RawSlave(ctx, farm, "liar")
        raw.hello()
        yaml_log = "gcc ...\nx.c:2:10: fatal error: yaml.h: No such file or directory\n"
        truth = diagnose(yaml_log, "pip wheel failed")
        # a claim the log contradicts: the master's cause and detail, no package
        raw.wait_build("liar-contradicted")
        assert raw_built(raw, log=yaml_log, diagnosis={
            "cause": "missing-header", "detail": LBER, "package": "libevil-dev"})[0] == "DONE"
        # a claim the log bears out: its package is kept
        raw.wait_build("liar-agreed")
        assert raw_built(raw, log=yaml_log, diagnosis={
            "cause": truth.cause, "detail": truth.detail, "package": "libyaml-dev"})[0] == "DONE"
        # a success without wheels: rejected, and the cause says the master refused it
        raw.wait_build("liar-rejected")
        assert raw_built(raw, success=True, log="built\n", reason=None)[0] == "DONE"
        # the monitor's picture of the slave: its latest failure, as the master saw it
        # (the picture is refreshed every few seconds)
        def liar_failure():
            [liar] = [s for s in farm.snapshot()["slaves"] if s["label"] == "liar"]
            failure = liar["last_failure"]
            return failure if failure and failure["package"] == "liar-rejected" else None
        assert farm.wait(liar_failure, 10, "the monitor's picture") == {
            "package": "liar-rejected", "version": "1.0", "cause": "bad-wheel",
            "label": "refused by the master",
            "detail": "the build reported success but no wheels", "install": None}
        # a cause code that does not exist: the schema refuses the message
        raw.wait_build("liar-bogus")
        name, die = raw_built(raw, log=yaml_log, diagnosis={
            "cause": "sunspots", "detail": "x", "package": None})
        assert name == "DIE" and "cause" in die["reason"], die
        raw.close()

        def recorded():
            return all(builds_of(db, name) for name in names[:3]) and \
                {name: builds_of(db, name)[0] for name in names[:3]}
        builds = farm.wait(recorded, 20, "the three attempts to be recorded")
        # and a package name Debian would not have (a shell command, say), for
        # whatever a new builder is handed (a retry comes first)
        raw = RawSlave(ctx, farm, "liar-2")
        raw.hello()
        handed = next_build(raw)
        before = len(builds_of(db, handed))
        name, die = raw_built(raw, log=yaml_log, diagnosis={
            "cause": truth.cause, "detail": truth.detail, "package": "x; rm -rf /"})
        assert name == "DIE" and "package" in die["reason"], die
        raw.close()
    finally:
        ctx.destroy(linger=0)

    assert (builds["liar-contradicted"].cause, builds["liar-contradicted"].cause_detail,
            builds["liar-contradicted"].cause_package) == ("missing-header", truth.detail, None)
    assert f"liar-contradicted 1.0 for cp311 {RAW_PLATFORM}: the builder" in farm.master.log()
    assert (builds["liar-agreed"].cause, builds["liar-agreed"].cause_package) == (
        "missing-header", "libyaml-dev")
    rejected = builds["liar-rejected"]
    assert (rejected.status, rejected.cause) == ("rejected", "bad-wheel")
    assert rejected.cause_detail == rejected.reason
    # the refused messages recorded nothing, and the master is still there
    time.sleep(1)
    assert builds_of(db, "liar-bogus") == []
    assert len(builds_of(db, handed)) == before
    assert farm.master.proc.poll() is None
    assert farm.snapshot()["master"] is not None
