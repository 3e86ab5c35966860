"""The slave's builder: real pip builds of real sdists from a local index, in limits."""

from __future__ import annotations

import re

import json
import os
import resource
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import packaging.tags
import pytest
from backend_sdists import KIND_BY_NAME, make_kind_sdist
from sdist_factory import make_sdist

from piwheels.diagnosis import diagnose
from piwheels.errors import ConfigError
from piwheels.slave.builder import BoundedLog, Builder, BuildLimits, BuildResult
from piwheels.wheel_facts import UnpackLimits, check_wheel, sha256_file

GiB = 1024 * 1024 * 1024
PYENV = Path("/root/.pyenv/versions")
THIS_PYTHON_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"

MakeBuilder = Callable[..., Builder]

# setup.py code that hangs as four processes, each `sleep TOKEN`: one child
# with a grandchild, and one child that leaves the build's session and process
# group with setsid().  The test finds them from outside by that command line
# (a contained build's pids and files are not the host's).
HANG_WITH_CHILDREN = """
import os

def _hang():
    os.execv("/bin/sleep", ["sleep", TOKEN])

if os.fork() == 0:
    if os.fork() == 0:
        _hang()
    _hang()
if os.fork() == 0:
    os.setsid()
    _hang()
_hang()
"""
HANGING_PROCESSES = 4


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def make_builder(build_index, build_cache_dir: Path, work_dir: Path) -> MakeBuilder:
    def make(python: Optional[str] = None, timeout_s: float = 300.0,
             memory_bytes: int = 2 * GiB, max_log_bytes: int = 1024 * 1024,
             **options) -> Builder:
        return Builder(
            python=python or sys.executable, index_url=build_index.url, work_dir=work_dir,
            cache_dir=build_cache_dir,
            limits=BuildLimits(timeout_s=timeout_s, memory_bytes=memory_bytes,
                               max_log_bytes=max_log_bytes, pid_limit=256, disk_bytes=GiB),
            **options,
        )
    return make


def publish(build_index, tmp_path: Path, name: str, version: str = "1.0", **kwargs) -> Path:
    return build_index.add(make_sdist(tmp_path / "sdists", name, version, **kwargs))


def pyenv_python(minor: int) -> Optional[str]:
    """A pyenv CPython 3.<minor> interpreter, if one is installed."""
    for version in sorted(PYENV.glob(f"3.{minor}.*"), reverse=True):
        python = version / "bin" / f"python3.{minor}"
        if python.exists():
            return str(python)
    return None


def process_gone(pid: int) -> bool:
    """True once *pid* is dead (a zombie is dead: only its parent has not reaped it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except OSError:
        return True
    return stat_line[stat_line.rindex(b")") + 2:].split()[0] in (b"Z", b"X")


def hang_token() -> str:
    """A `sleep` argument no other process on this machine has."""
    return f"86400.{os.getpid()}{time.monotonic_ns()}"


def sleeping(token: str) -> list[int]:
    """The live processes running `sleep TOKEN`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", token.encode()] and not process_gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def hanging_pids(token: str, count: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        pids = sleeping(token)
        if len(pids) >= count:
            return pids
        if time.monotonic() >= deadline:
            raise AssertionError(f"the build started {len(pids)} of {count} processes")
        time.sleep(0.1)


def assert_all_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 5
    while not all(process_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if not process_gone(pid)] == []


# --- builds that work --------------------------------------------------------------


@pytest.mark.slow
def test_pure_sdist_builds_with_the_right_facts(build_index, make_builder: MakeBuilder,
                                                tmp_path: Path, work_dir: Path) -> None:
    publish(build_index, tmp_path, "Piw.Pure", requires_python=">=3.8",
            requires=["attrs>=20"], setup_body='print("PIW-SETUP-RAN")')
    builder = make_builder()
    result = builder.build("Piw.Pure", "1.0")
    assert result.success, result.log
    assert result.reason is None
    assert result.duration_s > 0
    [(path, facts)] = result.wheels
    assert path.is_file() and path.parent.parent.parent == work_dir
    assert facts.filename == path.name == "piw_pure-1.0-py3-none-any.whl"
    assert (facts.package_tag, facts.version_tag) == ("piw_pure", "1.0")
    assert (facts.py_tag, facts.abi_tag, facts.platform_tag) == ("py3", "none", "any")
    assert facts.size == path.stat().st_size
    assert facts.sha256 == sha256_file(path)
    assert facts.requires_python == ">=3.8"
    assert facts.requires_dist == ("attrs>=20",)
    assert b"Name: Piw.Pure\n" in facts.metadata
    assert facts.apt_dependencies == ()
    # the log: a header naming the environment, then pip's own output
    env = builder.environment()
    header = result.log.split("\n---\n", 1)[0]
    for fact in ("Piw.Pure 1.0", env["python_version"], env["pip_version"],
                 env["setuptools_version"], env["os"], build_index.url, "300 s", "2048 MiB",
                 f"containment: {env['containment']}: new user, network (loopback only)",
                 "phases: fetch (network", "then build (no network)"):
        assert fact in header
    # the slave fetched the sdist and checked it; pip built offline from what it got
    assert "piw_pure-1.0.tar.gz: sha256 " in result.log
    assert "--- piwheels: build phase (no network)" in result.log
    assert "--no-index" in result.log
    assert "PIW-SETUP-RAN" in result.log
    assert "--- piwheels: built piw_pure-1.0-py3-none-any.whl" in result.log
    # the wheel stays until close(); then nothing of the build is left
    result.close()
    result.close()
    assert not path.exists()
    assert list(work_dir.iterdir()) == []


@pytest.mark.slow
def test_c_extension_builds_for_the_interpreter(build_index, make_builder: MakeBuilder,
                                                tmp_path: Path) -> None:
    publish(build_index, tmp_path, "piw-cext", kind="c_ext")
    builder = make_builder()
    env = builder.environment()
    with builder.build("piw-cext", "1.0") as result:
        assert result.success, result.log
        [(path, facts)] = result.wheels
        assert (facts.py_tag, facts.abi_tag) == (THIS_PYTHON_TAG, THIS_PYTHON_TAG)
        assert facts.platform_tag == env["platform_tag"]
        assert facts.filename == f"piw_cext-1.0-{THIS_PYTHON_TAG}-{THIS_PYTHON_TAG}-{env['platform_tag']}.whl"
        if Path("/usr/bin/dpkg").exists():
            assert facts.apt_dependencies == ()  # libm is libc6's: every system has it
        # what the master will check, with what this slave says of itself
        checked = check_wheel(
            path, package="piw-cext", version="1.0", claimed=facts, builder_abi=env["abi_tag"],
            builder_platform=env["platform_tag"], max_size=10 * 1024 * 1024,
            unpack=UnpackLimits(max_unpacked=40 * 1024 * 1024, max_ratio=100))
        # the master computes every fact but the apt packages, which stay the claim
        assert checked == facts


@pytest.mark.slow
def test_another_interpreter_builds_its_own_wheel(build_index, make_builder: MakeBuilder,
                                                  tmp_path: Path) -> None:
    python = pyenv_python(12)
    if python is None:
        pytest.skip(f"no CPython 3.12 under {PYENV}")
    publish(build_index, tmp_path, "piw-cext312", kind="c_ext")
    builder = make_builder(python=python)
    env = builder.environment()
    assert (env["python_tag"], env["abi_tag"]) == ("cp312", "cp312")
    assert env["python_version"].startswith("3.12.")
    with builder.build("piw-cext312", "1.0") as result:
        assert result.success, result.log
        [(_, facts)] = result.wheels
        assert (facts.py_tag, facts.abi_tag, facts.platform_tag) == (
            "cp312", "cp312", env["platform_tag"])
        assert "(3.12." in result.log.split("\n---\n", 1)[0]


def test_environment_describes_the_build_interpreter(make_builder: MakeBuilder) -> None:
    builder = make_builder()
    env = builder.environment()
    assert env["python_tag"] == THIS_PYTHON_TAG
    assert env["abi_tag"] == THIS_PYTHON_TAG
    assert env["platform_tag"].startswith("linux_")  # what local builds are tagged with
    assert env["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert env["pip_version"][0].isdigit()
    assert re.fullmatch(r"[0-9a-f]{64}", env["image"])
    assert env["setuptools_version"]
    assert env["os"]
    assert env["containment"].startswith("bwrap ")
    # HELLO's platforms: what sys_tags() gives for this interpreter, each once
    # (pip's vendored packaging may order them otherwise than the one here)
    here = [t.platform for t in packaging.tags.sys_tags()
            if (t.interpreter, t.abi) == (THIS_PYTHON_TAG, THIS_PYTHON_TAG)]
    assert len(set(env["platforms"])) == len(env["platforms"])
    assert set(env["platforms"]) == set(here) and env["platform_tag"] in env["platforms"]
    env["python_tag"] = "changed"
    assert builder.environment()["python_tag"] == THIS_PYTHON_TAG  # a copy of a cached value


def test_without_bubblewrap_builds_are_uncontained_and_say_so(make_builder: MakeBuilder) -> None:
    builder = make_builder(bwrap="/nonexistent/bwrap")
    assert builder.environment()["containment"] == (
        "none: /nonexistent/bwrap not found (install the bubblewrap package)")
    assert not builder.contained
    assert "builds run UNCONTAINED" in builder._header("piw-any", "1.0")


def test_an_interpreter_that_does_not_run_is_a_config_error(make_builder: MakeBuilder,
                                                            tmp_path: Path) -> None:
    builder = make_builder(python=str(tmp_path / "no-such-python"))
    with pytest.raises(ConfigError, match="no-such-python"):
        builder.environment()


# --- isolation -------------------------------------------------------------------------


@pytest.mark.slow
def test_build_sees_a_scrubbed_environment(build_index, make_builder: MakeBuilder,
                                           tmp_path: Path, work_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # what the build sees goes to its log: a contained build cannot write to the host
    sdist = publish(build_index, tmp_path, "piw-env", setup_body="""
import json, os, resource
print("PIW-SEEN " + json.dumps({"env": dict(os.environ),
                               "as": list(resource.getrlimit(resource.RLIMIT_AS))}))
""")
    monkeypatch.setenv("SECRET", "hunter2-do-not-leak")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "http://127.0.0.1:9/leaked/")
    builder = make_builder(memory_bytes=GiB)
    before = resource.getrlimit(resource.RLIMIT_AS)
    with builder.build("piw-env", "1.0") as result:
        assert result.success, result.log
    [seen, *_] = [json.loads(line.strip()[len("PIW-SEEN "):])
                  for line in result.log.splitlines() if line.strip().startswith("PIW-SEEN ")]
    env = seen["env"]
    assert "SECRET" not in env and "hunter2" not in result.log
    assert "PIP_EXTRA_INDEX_URL" not in env and "leaked" not in result.log
    assert not {"PIP_FIND_LINKS", "PIP_CERT", "PIP_CONSTRAINT"} & set(env)
    assert env["PIP_CONFIG_FILE"] == os.devnull
    assert env["LC_ALL"] == env["LANG"] == "C.UTF-8"
    # no pip of the build asks the index for pip's version; wheels are dated by the sdist
    assert env["PIP_DISABLE_PIP_VERSION_CHECK"] == "1"
    with tarfile.open(sdist) as archive:
        assert env["SOURCE_DATE_EPOCH"] == str(max(member.mtime for member in archive))
    # a private home and /tmp, inside the sandbox
    assert env["HOME"] == "/tmp/home" and env["TMPDIR"] == "/tmp"
    # the memory limit reaches pip's build subprocess, but not this process
    assert seen["as"] == [GiB, GiB]
    assert resource.getrlimit(resource.RLIMIT_AS) == before


@pytest.mark.slow
def test_timeout_kills_every_process_of_the_build(build_index, make_builder: MakeBuilder,
                                                  tmp_path: Path, work_dir: Path) -> None:
    token = hang_token()
    publish(build_index, tmp_path, "piw-hang",
            setup_body=f"TOKEN = {token!r}\n" + HANG_WITH_CHILDREN)
    builder = make_builder(timeout_s=12)
    seen: list[int] = []
    watcher = threading.Thread(target=lambda: seen.extend(
        hanging_pids(token, HANGING_PROCESSES, timeout_s=12)))
    watcher.start()
    started = time.monotonic()
    result = builder.build("piw-hang", "1.0")
    assert time.monotonic() - started < 12 + 5
    watcher.join()
    assert not result.success
    assert result.reason == "timed out after 12 s"
    assert result.wheels == []
    assert "build failed: timed out after 12 s" in result.log
    assert diagnose(result.log, result.reason).cause == "timeout"
    assert len(seen) == HANGING_PROCESSES
    assert_all_gone(seen)
    assert sleeping(token) == []
    assert list(work_dir.iterdir()) == []


@pytest.mark.slow
def test_cancel_stops_a_running_build(build_index, make_builder: MakeBuilder,
                                      tmp_path: Path, work_dir: Path) -> None:
    token = hang_token()
    publish(build_index, tmp_path, "piw-cancel",
            setup_body=f"TOKEN = {token!r}\n" + HANG_WITH_CHILDREN)
    builder = make_builder()
    results: list[BuildResult] = []
    thread = threading.Thread(target=lambda: results.append(builder.build("piw-cancel", "1.0")))
    thread.start()
    try:
        pids = hanging_pids(token, HANGING_PROCESSES, timeout_s=60)
    finally:
        cancelled_at = time.monotonic()
        builder.cancel()
        thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - cancelled_at < 10
    [result] = results
    assert not result.success and result.reason == "cancelled"
    assert_all_gone(pids)
    assert list(work_dir.iterdir()) == []


def test_cancel_without_a_build_does_nothing(make_builder: MakeBuilder) -> None:
    make_builder().cancel()


@pytest.mark.slow
def test_memory_limit_stops_a_greedy_build(build_index, make_builder: MakeBuilder,
                                           tmp_path: Path, work_dir: Path) -> None:
    # Address space, not resident memory: the untouched chunks cost the host
    # nothing even if the limit failed to apply, and the loop stops at 8 GiB.
    publish(build_index, tmp_path, "piw-greedy", setup_body="""
chunks = []
for _ in range(128):
    chunks.append(bytearray(64 * 1024 * 1024))
print("PIW-ALLOCATED-ALL")
""")
    builder = make_builder(memory_bytes=512 * 1024 * 1024)
    result = builder.build("piw-greedy", "1.0")
    assert not result.success
    assert result.reason == (
        "pip wheel failed with exit status 1: out of memory (the limit is 512 MiB)")
    assert "MemoryError" in result.log
    assert diagnose(result.log, result.reason).cause == "out-of-memory"
    assert "PIW-ALLOCATED-ALL" not in result.log
    assert list(work_dir.iterdir()) == []


# --- logs and failures ---------------------------------------------------------------


@pytest.mark.slow
def test_log_keeps_header_and_tail_of_a_chatty_build(build_index, make_builder: MakeBuilder,
                                                     tmp_path: Path) -> None:
    publish(build_index, tmp_path, "piw-chatty", setup_body="""
import sys
import tarfile
for i in range(1500):
    print(f"chatter line {i:04d} " + "x" * 200)
sys.stdout.flush()
""")
    builder = make_builder(max_log_bytes=16000)
    with builder.build("piw-chatty", "1.0") as result:
        assert result.success, result.reason
    text = result.log
    assert text.startswith("piwheels build of piw-chatty 1.0")
    assert "\n---\n" in text  # the whole header survived in the head
    cut = text.split("[... ", 1)[1].split(" bytes cut ...]", 1)[0]
    assert int(cut) > 1500 * 200
    assert len(text.encode()) <= 16000 + len(f"\n[... {cut} bytes cut ...]\n")
    assert text.rstrip().endswith("--- piwheels: built piw_chatty-1.0-py3-none-any.whl")


@pytest.mark.slow
def test_version_mismatch_fails_with_reason(build_index, make_builder: MakeBuilder,
                                            tmp_path: Path, work_dir: Path) -> None:
    publish(build_index, tmp_path, "piw-liar", declared_version="2.0")
    result = make_builder().build("piw-liar", "1.0")
    assert not result.success
    assert result.reason.startswith("pip wheel failed with exit status 1: ")
    assert result.reason.endswith(
        "the sdist has inconsistent version: expected '1.0', but metadata has '2.0'")
    assert len(result.reason) <= 400
    assert list(work_dir.iterdir()) == []


def test_an_invalid_name_fails_before_pip_runs(make_builder: MakeBuilder, work_dir: Path) -> None:
    result = make_builder().build("--index-url=http://elsewhere/", "1.0")
    assert not result.success
    assert "invalid project name" in result.reason
    assert list(work_dir.iterdir()) == []


def test_bounded_log_keeps_head_and_tail() -> None:
    text = BoundedLog(20)
    for chunk in (b"0123456789", b"abcdefghij", b"KLMNOPQRST", b"uvwxyz"):
        text.write(chunk)
    assert text.text() == "0123456789\n[... 16 bytes cut ...]\nQRSTuvwxyz"
    small = BoundedLog(100)
    small.write(b"all of it")
    assert small.text() == "all of it"


@pytest.mark.slow
def test_the_same_sdist_rebuilt_gives_the_same_wheel(build_index, make_builder: MakeBuilder,
                                                     tmp_path: Path) -> None:
    # setuptools (setup.py only) and flit-core; pip unpacks the sdist afresh for
    # each build, so without SOURCE_DATE_EPOCH the wheels' files carry the
    # times of the unpacking and the bytes differ
    setuptools_sdist = publish(build_index, tmp_path, "Piw.Repro", "2.5")
    flit = KIND_BY_NAME["flit-core"]
    flit_sdist = build_index.add(make_kind_sdist(tmp_path / "kinds", flit, "3.14.15"))
    builder = make_builder()
    for (name, version), sdist in ((("Piw.Repro", "2.5"), setuptools_sdist),
                                   ((flit.name, "3.14.15"), flit_sdist)):
        with tarfile.open(sdist) as archive:
            newest = max(member.mtime for member in archive)
        digests = []
        for attempt in range(2):
            if attempt:
                time.sleep(2.1)  # a zip dates files to 2 s: past the first build's
            with builder.build(name, version) as result:
                assert result.success, result.log
                assert f"SOURCE_DATE_EPOCH: {newest} (the newest mtime in the sdist)" \
                    in result.log
                [(path, facts)] = result.wheels
                assert facts.sha256 == sha256_file(path)
                digests.append(facts.sha256)
        assert digests[0] == digests[1], name
