"""The build sandbox: real bubblewrap, real namespaces, looked at from inside and out."""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

from piwheels.slave import hand_out, sandbox
from piwheels.slave.sandbox import Sandbox

MiB = 1024 * 1024
BUILD_USER = os.environ.get("PIWHEELS_TEST_BUILD_USER", "piwbuild")
PYTHON_DIRS = (sys.prefix, sys.base_prefix)

pytestmark = pytest.mark.skipif(not sandbox.detect("bwrap").available,
                                reason="bubblewrap cannot make namespaces here")


@pytest.fixture
def area() -> Iterator[Path]:
    """A directory the build user can reach too (pytest's own temp tree is private)."""
    path = Path(tempfile.mkdtemp(prefix="piw-sandbox-test-"))
    path.chmod(0o755)
    for name in ("input", "wheels"):
        (path / name).mkdir()
        (path / name).chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_inside(area: Path, code: str, *, disk_bytes: int = 64 * MiB,
               readonly: tuple[str, ...] = PYTHON_DIRS, hidden: tuple[str, ...] = (),
               user: Optional[pwd.struct_passwd] = None, nproc: int = 0,
               ) -> subprocess.CompletedProcess:
    box = Sandbox(bwrap=sandbox.detect("bwrap").bwrap, readonly=readonly, hidden=hidden,
                  disk_bytes=disk_bytes)
    command = box.command([sys.executable, "-I", "-c", code], input_dir=area / "input")
    kwargs = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid,
                                      "extra_groups": []}
    return subprocess.run(command, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={"PATH": os.environ["PATH"],
                                                         "HOME": str(sandbox.INSIDE_HOME)},
                          preexec_fn=sandbox.limits_preexec(0, nproc), **kwargs)


def answer(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


LOOK_AROUND = """
import json, os, socket

def connect(port, family=socket.AF_INET, address="127.0.0.1"):
    s = socket.socket(family)
    s.settimeout(5)
    try:
        s.connect((address, port) if family == socket.AF_INET else address)
        return "connected"
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()

def write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return "written"
    except OSError as exc:
        return type(exc).__name__

print(json.dumps({
    "tmp": sorted(os.listdir("/tmp")),
    "host_file": os.path.exists(HOST_FILE),
    "home": os.path.exists(HOME) and sorted(os.listdir(HOME)),
    "run": os.path.exists("/run"),
    "postgres": connect(5432),
    "postgres_socket": connect(0, socket.AF_UNIX, "/run/postgresql/.s.PGSQL.5432"),
    "listener": connect(LISTENER),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "tree": sorted(os.listdir(TREE)),
    "secret": os.path.exists(os.path.join(TREE, "secret", "key")),
    "write_root": write("/piw-root-file"),
    "write_usr": write("/usr/piw-file"),
    "write_input": write("/tmp/input/piw-file"),
    "write_tmp": write("/tmp/piw-file"),
    "hostname": socket.gethostname(),
    "capabilities": [line.split()[1] for line in open("/proc/self/status")
                     if line.startswith("CapEff:")][0],
}))
"""


def test_a_process_inside_sees_nothing_of_the_host(area: Path, tmp_path: Path) -> None:
    host_file = area / "host-file"  # in the host's /tmp
    host_file.write_text("secret")
    tree = area / "tree"  # a tree the sandbox shows, with a hidden part
    (tree / "secret").mkdir(parents=True)
    (tree / "secret" / "key").write_text("secret")
    (tree / "visible").write_text("fine")
    home = os.path.expanduser("~")
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(("127.0.0.1", 5432), timeout=5):  # the host reaches both
        port = listener.getsockname()[1]
        code = (f"HOST_FILE = {str(host_file)!r}\nHOME = {home!r}\nTREE = {str(tree)!r}\n"
                f"LISTENER = {port}\n" + LOOK_AROUND)
        seen = answer(run_inside(area, code, readonly=(*PYTHON_DIRS, str(tree)),
                                 hidden=(str(tree / "secret"),)))
    # the host's /tmp is not there; only the ways to the trees shown on purpose
    # (the interpreter's too, where the checkout lies under /tmp)
    shown_in_tmp = {Path(p).relative_to("/tmp").parts[0] for p in (*PYTHON_DIRS, str(tree))
                    if Path(p).is_relative_to("/tmp")}
    assert seen["tmp"] == sorted({"build", "home", "input", *shown_in_tmp})
    assert seen["host_file"] is False
    # of the home, at most the way to the interpreter (pyenv lives under /root here)
    shown_under_home = {Path(p).relative_to(home).parts[0] for p in PYTHON_DIRS
                        if Path(p).is_relative_to(home)}
    assert seen["home"] in (False, sorted(shown_under_home))
    assert seen["run"] is False
    assert seen["postgres"] == seen["listener"] == "ConnectionRefusedError"
    assert seen["postgres_socket"] == "FileNotFoundError"
    assert len(seen["pids"]) <= 3 and os.getpid() not in seen["pids"] or \
        seen["pids"] == [1, 2]
    assert seen["tree"] == ["secret", "visible"] and seen["secret"] is False
    assert seen["write_root"] == seen["write_usr"] == seen["write_input"] == "OSError"
    assert seen["write_tmp"] == "written"
    # no host directory is writable: what it wrote is nowhere on the host
    assert list(area.rglob("piw-file")) == []
    assert seen["hostname"] == "piwheels-build"
    assert int(seen["capabilities"], 16) == 0  # none, even when the tests run as root


QUOTA_AND_ESCAPE = """
import json, os
written = 0
try:
    with open("/tmp/filler", "wb") as f:
        while written < 64 * 1024 * 1024:
            f.write(b"x" * 65536)
            f.flush()
            written += 65536
    outcome = "filled"
except OSError as exc:
    outcome = exc.strerror
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execve("/bin/sleep", ["sleep", TOKEN], {})
    os._exit(0)
os.wait()
print(json.dumps({"written": written, "outcome": outcome}))
"""


def sleeping(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and \
                    (entry / "cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", token.encode()]:
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_the_quota_holds_and_nothing_outlives_the_sandbox(area: Path) -> None:
    token = f"600.{os.getpid()}{time.monotonic_ns()}"
    seen = answer(run_inside(area, f"TOKEN = {token!r}\n" + QUOTA_AND_ESCAPE,
                             disk_bytes=8 * MiB))
    assert seen["outcome"] == "No space left on device"
    assert 7 * MiB <= seen["written"] <= 8 * MiB
    # the escapee left the session and every fd, yet died with the sandbox's pid 1
    deadline = time.monotonic() + 5
    while sleeping(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sleeping(token) == []


FORKER = """
import json, os, time
children = 0
try:
    while children < 300:
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        children += 1
    outcome = "all"
except OSError as exc:
    outcome = exc.strerror
print(json.dumps({"children": children, "outcome": outcome}), flush=True)
os.killpg(0, 9)
"""


def test_the_pid_limit_holds_for_an_unprivileged_user(area: Path) -> None:
    if os.geteuid() != 0:
        user = pwd.getpwuid(os.getuid())
    else:
        try:
            user = pwd.getpwnam(BUILD_USER)
        except KeyError:
            pytest.skip(f"no build user {BUILD_USER}")
    allowance = 40
    limit = sandbox.user_tasks(user.pw_uid) + allowance
    proc = run_inside(area, FORKER, user=user, nproc=limit)
    assert proc.stdout, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[0])
    assert seen["outcome"] == "Resource temporarily unavailable"
    # bwrap and python count too, and other processes of the user come and go
    # (other slaves' builds): the allowance is an upper bound on what one build gets
    assert 0 < seen["children"] <= allowance


def test_detect_says_why_there_is_no_containment() -> None:
    missing = sandbox.detect("/nonexistent/bwrap")
    assert not missing.available
    assert missing.description == ("none: /nonexistent/bwrap not found "
                                   "(install the bubblewrap package)")
    found = sandbox.detect("bwrap")
    assert found.description.startswith("bwrap 0.") or found.description.startswith("bwrap ")


def test_the_slave_hides_its_configuration_files(tmp_path: Path) -> None:
    from piwheels import config, settings
    config_file = tmp_path / "slave.conf"
    config_file.write_text("label = hider\n")
    parser = config.make_parser("piw-slave", "test", settings.SLAVE_OPTIONS)
    options = settings.SlaveConfig.from_options(parser.parse_args(["-c", str(config_file)]),
                                                log=settings.LogSettings())
    assert str(config_file) in options.private_paths
    assert "/etc/piwheels.conf" in options.private_paths


# --- handing the wheels out ------------------------------------------------------------


def hand_out_inside(area: Path, code: str, *, disk_bytes: int = 16 * MiB
                    ) -> tuple[subprocess.CompletedProcess, bool, Path]:
    """Run *code* in the sandbox under the hand-out wrapper, as a build's ``pip wheel``
    runs: (the run, whether the stream kept within the quota, where it was kept)."""
    shutil.copyfile(hand_out.__file__, area / "input" / "hand_out.py")
    box = Sandbox(bwrap=sandbox.detect("bwrap").bwrap, readonly=PYTHON_DIRS, hidden=(),
                  disk_bytes=disk_bytes)
    read_fd, write_fd = os.pipe()
    stream = area / "stream.tar"
    kept: list[bool] = []
    receiver = threading.Thread(
        target=lambda: kept.append(hand_out.receive(read_fd, stream, disk_bytes)))
    receiver.start()
    command = box.command(
        [sys.executable, "-I", str(sandbox.INSIDE_INPUT / "hand_out.py"), str(write_fd),
         str(sandbox.INSIDE_WHEELS), "--", sys.executable, "-I", "-c", code],
        input_dir=area / "input")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, pass_fds=(write_fd,),
                              env={"PATH": os.environ["PATH"]})
    finally:
        os.close(write_fd)
        receiver.join(30)
    return proc, kept == [True], stream


def test_the_wheels_are_handed_out_as_they_were_written(area: Path) -> None:
    proc, kept, stream = hand_out_inside(area, (
        "import os\n"
        "open('/tmp/wheels/a-1.0-py3-none-any.whl', 'wb').write(b'wheel a' * 1000)\n"
        "open('/tmp/wheels/b-1.0-py3-none-any.whl', 'wb').write(os.urandom(300000))\n"
        "raise SystemExit(3)\n"))
    assert proc.returncode == 3, proc.stderr  # the command's own status
    assert kept
    names, why = hand_out.unpack(stream, area / "wheels")
    assert why is None
    assert names == ["a-1.0-py3-none-any.whl", "b-1.0-py3-none-any.whl"]
    assert (area / "wheels" / names[0]).read_bytes() == b"wheel a" * 1000
    assert (area / "wheels" / names[1]).stat().st_size == 300000


def test_a_fast_writer_in_the_wheel_dir_meets_the_quota(area: Path) -> None:
    # what a poll of the wheel dir's size could not stop: 4x the quota at full speed
    proc, kept, _ = hand_out_inside(area, (
        "import os\n"
        "try:\n"
        "    with open('/tmp/wheels/filler', 'wb') as f:\n"
        "        for _ in range(256):\n"
        "            f.write(b'x' * 262144)\n"
        "            f.flush()\n"
        "    print('filled')\n"
        "except OSError as exc:\n"
        "    print(exc.strerror)\n"), disk_bytes=16 * MiB)
    assert proc.stdout.strip() == "No space left on device", proc.stderr
    assert kept  # at most the quota reached the pipe


def test_a_sparse_file_is_cut_off_at_the_quota(area: Path) -> None:
    proc, kept, stream = hand_out_inside(area, (
        "with open('/tmp/wheels/x-1.0-py3-none-any.whl', 'wb') as f:\n"
        "    f.truncate(64 * 2**30)\n"), disk_bytes=8 * MiB)
    assert not kept
    assert stream.stat().st_size <= 8 * MiB + hand_out.TAR_OVERHEAD_BYTES
    assert proc.returncode in (0, 1), proc.stderr  # the wrapper saw the pipe close


@pytest.mark.parametrize("trick", ["symlink", "fifo"])
def test_what_is_not_a_regular_file_is_refused(area: Path, trick: str) -> None:
    make = ("os.symlink('/etc/passwd', path)" if trick == "symlink" else "os.mkfifo(path)")
    proc, kept, stream = hand_out_inside(area, (
        "import os\n"
        "open('/tmp/wheels/a-1.0-py3-none-any.whl', 'wb').write(b'fine')\n"
        "path = '/tmp/wheels/b-1.0-py3-none-any.whl'\n" + make + "\n"))
    assert proc.returncode == 0 and kept, proc.stderr
    names, why = hand_out.unpack(stream, area / "wheels")
    assert names == []
    assert why == ("the build left b-1.0-py3-none-any.whl in its wheel directory, "
                   "which is not a regular file")
    assert not (area / "wheels" / "b-1.0-py3-none-any.whl").exists()


def test_what_the_build_leaves_running_is_ended_before_the_wheels_are_read(area: Path) -> None:
    # a daemon that would write a wheel after pip ended, while the slave reads
    proc, kept, stream = hand_out_inside(area, (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    time.sleep(1)\n"
        "    open('/tmp/wheels/late-1.0-py3-none-any.whl', 'wb').write(b'late')\n"
        "    os._exit(0)\n"
        "open('/tmp/wheels/a-1.0-py3-none-any.whl', 'wb').write(b'fine')\n"))
    assert proc.returncode == 0 and kept, proc.stderr
    time.sleep(1.5)  # the daemon's moment has passed
    names, why = hand_out.unpack(stream, area / "wheels")
    assert (names, why) == (["a-1.0-py3-none-any.whl"], None)
    assert not (area / "wheels" / "late-1.0-py3-none-any.whl").exists()


def test_a_stream_with_a_path_in_it_is_refused(tmp_path: Path) -> None:
    stream = tmp_path / "stream.tar"
    (tmp_path / "wheels").mkdir()
    with tarfile.open(stream, "w") as tar:
        info = tarfile.TarInfo("../escape-1.0-py3-none-any.whl")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    names, why = hand_out.unpack(stream, tmp_path / "wheels")
    assert names == [] and "not a plain file" in why
    assert not (tmp_path / "escape-1.0-py3-none-any.whl").exists()
