"""One farm, four build targets: 64-bit and 32-bit ARM beside x86-64, and clients per platform.

Four real slaves on one real master: CPython 3.11 on this x86-64 machine,
CPython 3.11 presenting ``linux_aarch64`` and ``linux_armv7l`` (venvs that
set ``_PYTHON_HOST_PLATFORM``, tests/foreign_platform.py), and CPython 3.12
on x86-64; the master publishes ``linux_armv7l`` wheels as ``linux_armv6l``
too (``--platform-alias``).  From three releases (a C extension, a pure
module, an abi3 extension) the farm builds the C extension once per target,
the pure module once in all and the abi3 one once per platform, and nothing
twice for one target.  Then pip, told a platform, ABI and Python version,
downloads from the farm's output served by nginx with the documented site:
it gets the wheel of that target (or the alias), never another platform's.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from farm import Farm, builds_of, pyenv_python
from foreign_platform import AARCH64, ARMV7L, foreign_python, platform_tag
from index_publisher import clean_env
from sdist_factory import ABI3_MINIMUM, make_sdist
from web_server import NginxServer, nginx_binary

from piwheels.db import Database
from piwheels.initdb import initdb
from piwheels.tags import Target

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(nginx_binary() is None,
                       reason="needs nginx (apt install nginx-light libnginx-mod-http-js)"),
]

NATIVE, PURE, ABI3 = "piw-targets-native", "piw-targets-pure", "piw-targets-abi3"
PROJECTS = (NATIVE, PURE, ABI3)
VERSION = "1.0"
HOST = platform_tag(sysconfig.get_platform())  # linux_x86_64 here
ARM64, ARMHF, ARMV6 = platform_tag(AARCH64), platform_tag(ARMV7L), "linux_armv6l"
ABI3_TAG = "cp{}{}".format(*ABI3_MINIMUM)
#: label: (pyenv CPython 3.<minor>, the sysconfig platform it presents; None: its own)
SLAVES = {
    "x86-311": ("11", None),
    "arm64-311": ("11", AARCH64),
    "armhf-311": ("11", ARMV7L),
    "x86-312": ("12", None),
}
TARGETS = {"x86-311": Target("cp311", HOST), "arm64-311": Target("cp311", ARM64),
           "armhf-311": Target("cp311", ARMHF), "x86-312": Target("cp312", HOST)}
BUILD_TIMEOUT_S = 240


def wheel_name(project: str, py: str, abi: str, platform: str) -> str:
    return f"{project.replace('-', '_')}-{VERSION}-{py}-{abi}-{platform}.whl"


@dataclass
class Run:
    farm: Farm
    db: Database
    web: NginxServer
    work: Path


@pytest.fixture(scope="module")
def run(postgres, master_role, build_index, tmp_path_factory):
    """The farm, once every target's queue is empty, and nginx serving its output."""
    base = tmp_path_factory.mktemp("targets-farm")
    database = postgres.create_database()
    with open(os.devnull, "w") as quiet:
        initdb(postgres.dsn(database), master_role, assume_yes=True, out=quiet)
    dsn = postgres.dsn(database, master_role)
    db = Database(dsn)
    released = datetime(2026, 3, 1, tzinfo=timezone.utc)
    for hours, (project, kind) in enumerate(
            ((NATIVE, "c_ext"), (PURE, "pure"), (ABI3, "abi3"))):
        build_index.add(make_sdist(base / "sdists", project, VERSION, kind=kind))
        db.add_package(project)
        db.add_version(project, VERSION, released=released - timedelta(hours=hours),
                       has_sdist=True)
    farm = Farm(base, dsn, build_index.url)
    web = NginxServer(base / "nginx", farm.output)
    try:
        farm.start_master("--platform-alias", f"{ARMHF}={ARMV6}")
        for label, (minor, plat) in SLAVES.items():
            python = pyenv_python(minor)
            if plat is not None:
                python = foreign_python(python, plat, farm.work_root / f"python-{label}")
            farm.start_slave(label, python)

        def settled() -> bool:
            built = {project: builds_of(db, project) for project in PROJECTS}
            return (len(built[NATIVE]) >= 4 and len(built[PURE]) >= 1 and len(built[ABI3]) >= 3
                    and set(db.get_build_targets()) >= set(TARGETS.values())
                    and not any(db.pending_builds(t, 10) for t in TARGETS.values())
                    # and none still building (a second build of one release would be)
                    and not any(s["state"] in ("building", "sending")
                                for s in farm.snapshot()["slaves"]))
        farm.wait(settled, BUILD_TIMEOUT_S, "every target's builds")

        # the pages follow the builds: each must list every wheel built, the alias too
        wanted = {project: {name for b in builds_of(db, project) for f in b.files
                            for name in (f.filename, f.filename.replace(ARMHF, ARMV6))}
                  for project in PROJECTS}

        def listed() -> bool:
            for project, names in wanted.items():
                page = farm.output / "simple" / project / "index.json"
                try:
                    files = json.loads(page.read_text())["files"]
                except (OSError, ValueError):  # not written yet, or half written
                    return False
                if not names <= {f["filename"] for f in files}:
                    return False
            return True
        farm.wait(listed, 30, "the simple pages listing every wheel, the alias too")
        web.start()
        yield Run(farm, db, web, base)
    finally:
        web.stop()
        farm.stop()
        db.close()


def test_each_slave_says_its_target_in_hello(run):
    """What the master took from each HELLO (its snapshot, as the monitor shows it)."""
    slaves = {s["label"]: s for s in run.farm.snapshot()["slaves"]}
    assert {label: Target(s["abi_tag"], s["platform_tag"]) for label, s in slaves.items()} \
        == TARGETS


def test_each_target_gets_its_own_build_and_nothing_twice(run):
    builds = {project: builds_of(run.db, project) for project in PROJECTS}
    every = [b for project in PROJECTS for b in builds[project]]
    shown = [(project, b.slave_label, str(b.target), b.status, b.reason,
              [f.filename for f in b.files]) for project in PROJECTS for b in builds[project]]
    assert all(b.status == "success" for b in every), shown
    # nothing twice for one target
    twice = [key for key, count in collections.Counter(
        (b.target, project) for project in PROJECTS for b in builds[project]).items()
        if count > 1]
    assert twice == [], shown
    # every slave is given only work for the target its HELLO reported
    assert all(b.target == TARGETS[b.slave_label] for b in every), shown
    # the C extension: once per target, each wheel tagged for it
    assert sorted(b.target for b in builds[NATIVE]) == sorted(TARGETS.values()), shown
    for build in builds[NATIVE]:
        [f] = build.files
        assert f.filename == wheel_name(NATIVE, build.abi_tag, build.abi_tag, build.platform_tag)
    # the pure module: once in all
    [pure] = builds[PURE]
    assert [f.filename for f in pure.files] == [wheel_name(PURE, "py3", "none", "any")]
    # the abi3 extension: once per platform (on x86-64 for 3.11 or 3.12, whichever came first)
    assert sorted(b.platform_tag for b in builds[ABI3]) == sorted({HOST, ARM64, ARMHF}), shown
    for build in builds[ABI3]:
        [f] = build.files
        assert f.filename == wheel_name(ABI3, ABI3_TAG, "abi3", build.platform_tag)


#: (platform, python version): what pip must download of each project (None: the
#: project's pure wheel), with the file whose bytes it is (an alias's: the armv7l one)
CLIENTS = {
    (ARM64, "3.11"): {NATIVE: ARM64, ABI3: ARM64},
    (ARMHF, "3.11"): {NATIVE: ARMHF, ABI3: ARMHF},
    (ARMV6, "3.11"): {NATIVE: ARMV6, ABI3: ARMV6},
    (HOST, "3.11"): {NATIVE: HOST, ABI3: HOST},
    (HOST, "3.12"): {NATIVE: HOST, ABI3: HOST},
}


@pytest.mark.parametrize("platform, python", sorted(CLIENTS))
def test_pip_downloads_the_wheel_of_its_platform(run, platform, python, tmp_path):
    abi = "cp" + python.replace(".", "")
    dest = tmp_path / "downloaded"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--platform", platform, "--python-version", python, "--implementation", "cp",
         "--abi", abi, "--index-url", f"{run.web.url}simple/", "--dest", str(dest),
         "--no-cache-dir", *PROJECTS],
        env=clean_env(tmp_path), cwd=tmp_path, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = {
        wheel_name(NATIVE, abi, abi, platform),
        wheel_name(ABI3, ABI3_TAG, "abi3", platform),
        wheel_name(PURE, "py3", "none", "any"),
    }
    got = {path.name: path.read_bytes() for path in dest.iterdir()}
    assert set(got) == expected
    # each is the bytes the farm built for that target (an alias: the armv7l build's)
    built = {f.filename: f.sha256 for project in PROJECTS
             for b in builds_of(run.db, project) for f in b.files}
    for name, data in got.items():
        source = name.replace(ARMV6, ARMHF) if platform == ARMV6 else name
        assert hashlib.sha256(data).hexdigest() == built[source], name


#: uv is a test dependency (setup.py's test extra): without it, its test fails
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
#: uv's platforms of the farm's targets (it has none for 32-bit ARM, so armv7l and
#: armv6l are pip's alone), with the platform tag each must choose
UV_PLATFORMS = {"aarch64-unknown-linux-gnu": ARM64, "x86_64-unknown-linux-gnu": HOST}


@pytest.mark.parametrize("uv_platform", sorted(UV_PLATFORMS))
def test_uv_installs_the_wheel_of_its_platform(run, uv_platform, tmp_path):
    """uv has no download command: ``uv pip install --target`` for a platform, then the
    installed wheels' WHEEL files say which file it chose."""
    assert UV is not None, "uv is not installed (pip install -e '.[test]')"
    target = tmp_path / "installed"
    done = subprocess.run(
        [UV, "pip", "install", "--no-deps", "--only-binary", ":all:", "--no-cache",
         "--python", pyenv_python("11"), "--python-platform", uv_platform,
         "--python-version", "3.11", "--index-url", f"{run.web.url}simple/",
         "--target", str(target), *PROJECTS],
        env=clean_env(tmp_path), cwd=tmp_path, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    platform = UV_PLATFORMS[uv_platform]
    tags = {path.parent.name.split("-")[0]: {
        line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
        if line.startswith("Tag:")} for path in target.glob("*.dist-info/WHEEL")}
    assert tags == {
        NATIVE.replace("-", "_"): {f"cp311-cp311-{platform}"},
        ABI3.replace("-", "_"): {f"{ABI3_TAG}-abi3-{platform}"},
        PURE.replace("-", "_"): {"py3-none-any"},
    }
