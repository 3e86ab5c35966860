"""A builder that lies in BUILT about the wheel it sends, against a real piw-master.

The master must trust only what it computed from the file it received: each
lie (one fact each, the file itself sent truthfully) is rejected with a reason
naming the fact, the slave is told, the attempt is recorded as rejected and
nothing of it is published; an honest build publishes the METADATA bytes and
hashes of the file itself, and its apt packages (which only the builder can
see) are shown as the builder's word.  A wheel for a platform the builder's
interpreter does not accept (its HELLO's ``platforms``) is refused at BUILT,
naming both platforms.
"""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest
import zmq
from consistency import wait_consistent
from farm import builds_of
from raw_slave import RawSlave
from wheel_craft import FALSE_CLAIMS, craft_wheel

from piwheels.wheel_facts import inspect_wheel

pytestmark = pytest.mark.slow


HONEST = "told-true"
#: a release the x86_64 liar answers with a wheel for aarch64
FOREIGN = "lie-platform"
METADATA = (b"Metadata-Version: 2.1\nName: told-true\nVersion: 1.0\n"
            b"Requires-Python: >=3.9\nRequires-Dist: attrs>=20\n")


def package_of(fact: str) -> str:
    return f"lie-{fact.replace('_', '-')}"


def wheel_of(tmp_path, package: str, **kwargs):
    (tmp_path / package).mkdir()
    return craft_wheel(tmp_path / package, f"{package.replace('-', '_')}-1.0-py3-none-any.whl",
                       name=package, **kwargs)


def test_only_what_the_master_computed_is_recorded_and_published(farm, db, release, tmp_path):
    for package in [package_of(fact) for fact in FALSE_CLAIMS] + [FOREIGN, HONEST]:
        release(package, kind="pure")  # handed out in this order
    farm.start_master()
    told: dict[str, str] = {}
    ctx = zmq.Context()
    try:
        raw = RawSlave(ctx, farm, label="liar")
        raw.hello()
        for fact, (change, _) in FALSE_CLAIMS.items():
            package = package_of(fact)
            raw.wait_build(package)
            wheel = wheel_of(tmp_path, package)
            true = inspect_wheel(wheel, find_apt_deps=False).to_dict()
            answer = raw.built(wheel, claims=change(true))
            if answer[0] != "SEND":
                told[fact] = f"refused at BUILT: {answer}"
                continue
            ok, reason = raw.send_file(wheel)  # the real file, its true size and hash
            told[fact] = "accepted" if ok else reason
            assert raw.sent(wheel)[0] == "DONE"
        raw.wait_build(FOREIGN)
        (tmp_path / FOREIGN).mkdir()
        foreign = craft_wheel(tmp_path / FOREIGN, "lie_platform-1.0-cp311-cp311-linux_aarch64.whl",
                              name=FOREIGN)
        told_foreign = raw.built(foreign, claims={})
        raw.wait_build(HONEST)
        honest = wheel_of(tmp_path, HONEST, metadata=METADATA)
        raw.built(honest, claims={"apt_dependencies": ["libfoo1"]})
        assert raw.send_file(honest) == (True, None)
        assert raw.sent(honest)[0] == "DONE"
        raw.close()
    finally:
        ctx.destroy(linger=0)

    # each lie: the slave was told why, naming the fact
    wrong = {fact: said for fact, said in told.items() if FALSE_CLAIMS[fact][1] not in said}
    assert not wrong, f"not rejected naming the fact: {wrong}"
    assert told_foreign == ("DONE", {})  # refused before any transfer
    farm.wait(lambda: builds_of(db, HONEST), 20, "the builds to be recorded")
    (build,) = builds_of(db, FOREIGN)
    assert (build.status, build.cause, build.files) == ("rejected", "bad-wheel", ())
    assert (build.abi_tag, build.platform_tag) == ("cp311", "linux_x86_64")
    assert build.reason.startswith(f"{foreign.name} is for platform linux_aarch64, which "
                                   f"this slave's interpreter does not accept (it runs on "
                                   f"linux_x86_64"), build.reason
    assert not (farm.output / "simple" / FOREIGN).exists()
    wait_consistent(farm.output, farm.master_dsn)
    log = farm.master.log()
    for fact, (_, words) in FALSE_CLAIMS.items():
        package = package_of(fact)
        (build,) = builds_of(db, package)
        assert build.status == "rejected" and words in build.reason, (fact, build.reason)
        assert not (farm.output / "simple" / package).exists()  # nothing published
        filename = f"{package.replace('-', '_')}-1.0-py3-none-any.whl"
        assert log.count(f"rejected {filename} from slave") == 1, fact  # logged once
    assert "Traceback" not in log and farm.master.proc.poll() is None

    # the honest build: what is served is what the master read from the file
    (build,) = builds_of(db, HONEST)
    assert build.status == "success"
    (row,) = build.files
    served = farm.output / "simple" / HONEST / honest.name
    data = served.read_bytes()
    assert data == honest.read_bytes()
    with zipfile.ZipFile(honest) as wheel:
        metadata = wheel.read("told_true-1.0.dist-info/METADATA")
    assert served.with_name(served.name + ".metadata").read_bytes() == metadata == METADATA
    simple = served.parent / "index.json"
    farm.wait(simple.is_file, 20, "the simple page")
    (listed,) = json.loads(simple.read_text())["files"]
    assert listed["hashes"]["sha256"] == hashlib.sha256(data).hexdigest() == row.sha256
    assert listed["core-metadata"]["sha256"] == hashlib.sha256(metadata).hexdigest()
    assert listed["requires-python"] == ">=3.9"
    assert row.dependencies == {"apt": ("libfoo1",), "pip": ("attrs>=20",)}
    # the apt packages are the builder's claim, and the project page says so
    farm.wait(lambda: "libfoo1" in _page(farm), 20, "the project page")
    page = _page(farm)
    assert "sudo apt install libfoo1" in page and "reported by the builder" in page


def _page(farm) -> str:
    page = farm.output / "project" / HONEST / "index.html"
    return page.read_text() if page.is_file() else ""
