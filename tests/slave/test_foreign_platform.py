"""Builders for another platform on this x86-64 machine (see tests/foreign_platform.py).

The foreign interpreter must look foreign to everything a slave asks: the
probe behind HELLO (``platform_tag`` and ``platforms``), pip's isolated build
subprocesses and setuptools (the wheel's name), and the smoke test's venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from farm import pyenv_python
from foreign_platform import AARCH64, ARMV7L, foreign_python, platform_tag
from sdist_factory import ABI3_MINIMUM, make_sdist

from piwheels.smoke import PASSED
from piwheels.slave.builder import Builder, BuildLimits
from piwheels.wheel_facts import UnpackLimits, check_wheel

GiB = 1024 * 1024 * 1024
ABI3 = "cp{}{}".format(*ABI3_MINIMUM)


@pytest.fixture(scope="module")
def pythons(tmp_path_factory) -> dict[str, str]:
    """{sysconfig platform: a CPython 3.11 venv that presents it}."""
    root = tmp_path_factory.mktemp("foreign-pythons")
    return {plat: foreign_python(pyenv_python("11"), plat, root / plat)
            for plat in (AARCH64, ARMV7L)}


def make_builder(python: str, build_index, cache_dir: Path, work_dir: Path) -> Builder:
    return Builder(python=python, index_url=build_index.url, work_dir=work_dir,
                   cache_dir=cache_dir,
                   limits=BuildLimits(timeout_s=300, memory_bytes=2 * GiB,
                                      max_log_bytes=1024 * 1024, pid_limit=256,
                                      disk_bytes=GiB))


@pytest.mark.parametrize("plat", [AARCH64, ARMV7L])
def test_hello_facts_name_the_foreign_platform(pythons, plat, build_index, build_cache_dir,
                                               tmp_path) -> None:
    env = make_builder(pythons[plat], build_index, build_cache_dir, tmp_path).environment()
    tag = platform_tag(plat)
    assert (env["python_tag"], env["abi_tag"], env["platform_tag"]) == ("cp311", "cp311", tag)
    # every platform it accepts is of that architecture: nothing of the host's
    arch = tag.split("_", 1)[1]
    assert tag in env["platforms"]
    assert all(p.endswith(arch) for p in env["platforms"]), env["platforms"]
    assert not any("x86_64" in p for p in env["platforms"])


@pytest.mark.parametrize("plat", [AARCH64, ARMV7L])
def test_the_variable_reaches_a_venv_made_from_it(pythons, plat, tmp_path) -> None:
    """As the smoke test makes its venv: from the build interpreter, in a scrubbed
    environment, under -I."""
    script = (
        "import json, subprocess, sys, venv\n"
        "venv.EnvBuilder(with_pip=False, symlinks=True).create(sys.argv[1])\n"
        "print(subprocess.run([sys.argv[1] + '/bin/python', '-I', '-c',\n"
        "    'import sysconfig; print(sysconfig.get_platform())'],\n"
        "    capture_output=True, text=True, check=True).stdout.strip())\n")
    answer = subprocess.run(
        [pythons[plat], "-I", "-c", script, str(tmp_path / "inner")],
        env={"PATH": os.defpath, "HOME": str(tmp_path)}, capture_output=True, text=True,
        check=True, stdin=subprocess.DEVNULL, timeout=60)
    assert answer.stdout.strip() == plat
    # and this interpreter (no .pth) is still native: the test is not vacuous
    native = subprocess.run([sys.executable, "-I", "-c",
                             "import sysconfig; print(sysconfig.get_platform())"],
                            capture_output=True, text=True, check=True, env={})
    assert native.stdout.strip() != plat


@pytest.mark.slow
def test_sandboxed_builds_are_tagged_for_the_foreign_platform(
        pythons, build_index, build_cache_dir, tmp_path) -> None:
    """A C extension and an abi3 extension, built by pip's isolated build (its
    own subprocesses) in the sandbox, smoke-tested in a venv of the interpreter."""
    sdists = tmp_path / "sdists"
    build_index.add(make_sdist(sdists, "piw-foreign-native", "1.0", kind="c_ext"))
    build_index.add(make_sdist(sdists, "piw-foreign-abi3", "1.0", kind="abi3"))
    for plat, package, tags in (
            (AARCH64, "piw-foreign-native", ("cp311", "cp311")),
            (ARMV7L, "piw-foreign-abi3", (ABI3, "abi3"))):
        builder = make_builder(pythons[plat], build_index, build_cache_dir,
                               tmp_path / f"work-{plat}")
        env = builder.environment()
        assert builder.contained, env["containment"]
        with builder.build(package, "1.0") as result:
            assert result.success, result.log
            [(path, facts)] = result.wheels
            expected = "-".join((package.replace("-", "_"), "1.0", *tags, platform_tag(plat)))
            assert facts.filename == f"{expected}.whl"
            assert [s.status for s in result.smoke] == [PASSED], result.log
            # the master's own check of a wheel from this builder passes
            checked = check_wheel(
                path, package=package, version="1.0", claimed=facts,
                builder_abi=env["abi_tag"], builder_platform=env["platform_tag"],
                max_size=10 * 1024 * 1024,
                unpack=UnpackLimits(max_unpacked=40 * 1024 * 1024, max_ratio=100))
            assert checked == facts
