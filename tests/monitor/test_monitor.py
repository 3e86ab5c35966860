"""piw-monitor: its model, words and screen on their own, then the real thing in a terminal.

The end-to-end tests run piw-monitor in a tmux pane against a real piw-master
and real piw-slaves, press its keys, and check both the screen and what
happened: through the master's control socket (SNAPSHOT), its exit status,
and the slaves' logs and processes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import urwid
import zmq
from farm import BIN, HOST_PLATFORM, Farm, build_user, pyenv_python, wait_for
from sdist_factory import make_sdist
from terminal import Terminal

from piwheels.control_client import ControlClient, MasterUnavailable, ipc_problem
from piwheels.monitor import formatting
from piwheels.monitor.link import MasterLink
from piwheels.monitor.model import CONNECTED, CONNECTING, SLAVE_STALE_S, UNREACHABLE, FarmModel
from piwheels.monitor.view import MonitorView
from piwheels.protocols import CONTROL
from piwheels.slave import EXIT_TOLD_TO_STOP
from piwheels.tags import Target
from piwheels.transport import Socket

WALL = 1_800_000_000.0  # a wall-clock time for the model tests


def slave_report(slave_id: int, **fields) -> dict:
    """A slave as the master's slave driver reports it (SlaveState.report)."""
    report = {
        "slave_id": slave_id, "label": f"pi{slave_id}", "abi_tag": "cp311",
        "platform_tag": "linux_aarch64", "python_version": "3.11.2", "os": "Debian 12",
        "state": "sleeping", "paused": False, "connected_at": WALL - 3725,
        "last_seen_s": 0.4, "package": None, "version": None, "job_s": None,
        "load_1m": 0.25, "memory_free": 2**30, "disk_free": 2**34, "temperature_c": 51.0,
        "key_id": "0123456789abcdef", "containment": "bwrap 0.8.0",
    }
    report.update(fields)
    return report


def master_status(**changes) -> dict:
    """The master's summary as admin_service.master_status() builds it."""
    status = {
        "paused": False, "slaves": 2, "started_at": WALL - 90061, "rebuild": None,
        "slave_driver": {"slaves": 2, "building": 1, "queued": {"cp311 linux_aarch64": 5, "cp39 linux_armv7l": 2},
                         "handed_out": 40, "holds": []},
        "stats": {"builds_last_hour": {"cp311 linux_aarch64": 10, "cp39 linux_armv7l": 3}, "success_rate": 0.923,
                  "pending": {"cp311 linux_aarch64": 12, "cp39 linux_armv7l": 3}, "load_1m": 1.5,
                  "memory_free": 3 * 2**30, "disk_free": 12 * 2**30, "temperature_c": None,
                  "disk_low": False, "min_free": 2**30},
        "file_receiver": {"transfers": 1, "expected": 2, "bytes_received": 5 * 2**20,
                          "files_verified": 20, "files_rejected": 1, "chunks_refetched": 0},
        "index_writer": {"dirty": 3, "root_pending": False, "pages_written": 77},
        "pypi_follower": {"events": 120, "to_read": 4, "feed": True},
        "build_recorder": {"recorded": 38},
    }
    status.update(changes)
    return status


# --- the model --------------------------------------------------------------------------

def test_snapshot_then_feed():
    model = FarmModel()
    model.apply_snapshot({"master": master_status(),
                          "slaves": [slave_report(2), slave_report(1)]}, now_s=100)
    assert [s.slave_id for s in model.sorted_slaves()] == [1, 2]
    model.apply_status("SLAVE", {"slave": slave_report(
        1, state="building", package="numpy", version="2.0", job_s=3.0)}, now_s=101)
    model.apply_status("SLAVE_GONE", {"slave_id": 2}, now_s=101)
    model.apply_status("SLAVE", {"slave": slave_report(3)}, now_s=101)
    model.apply_status("MASTER", {"master": master_status(paused=True)}, now_s=102)
    assert [s.slave_id for s in model.sorted_slaves()] == [1, 3]
    assert model.slaves[1].building == "numpy 2.0"
    assert model.slaves[3].building is None
    assert model.master_paused and model.master_received_s == 102
    # a new snapshot is the whole truth: slave 3 went while the monitor was away
    model.apply_snapshot({"master": master_status(), "slaves": [slave_report(1)]}, now_s=110)
    assert list(model.slaves) == [1] and not model.master_paused
    model.apply_status("SLAVE_GONE", {"slave_id": 42}, now_s=111)  # unknown: ignored
    assert list(model.slaves) == [1]


def test_times_move_between_reports():
    model = FarmModel()
    model.apply_status("SLAVE", {"slave": slave_report(
        1, state="building", package="numpy", version="2.0", job_s=10.0,
        last_seen_s=0.5)}, now_s=50)
    record = model.slaves[1]
    assert record.job_s(now_s=50) == 10.0
    assert record.job_s(now_s=53.5) == 13.5
    assert record.last_seen_s(now_s=52) == 2.5
    assert record.uptime_s(wall_now=WALL) == 3725
    assert model.slaves[1].job_s(now_s=49) == 10.0  # never backwards


def test_silent_slaves_are_forgotten():
    model = FarmModel()
    model.apply_status("SLAVE", {"slave": slave_report(1)}, now_s=0)
    model.apply_status("SLAVE", {"slave": slave_report(2)}, now_s=SLAVE_STALE_S)
    model.forget_stale(now_s=SLAVE_STALE_S + 1)
    assert list(model.slaves) == [2]


def test_link_state_remembers_since_when():
    model = FarmModel()
    assert model.link == CONNECTING
    model.set_link(UNREACHABLE, "no socket", now_s=5)
    model.set_link(UNREACHABLE, "no answer", now_s=9)
    assert (model.link, model.link_reason, model.link_since_s) == (UNREACHABLE, "no answer", 5)
    model.set_link(CONNECTED, None, now_s=12)
    assert model.link_since_s == 12


# --- the words ------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (0, "0s"), (59.9, "59s"), (60, "1m00s"), (725, "12m05s"),
    (3600, "1h00m"), (11220, "3h07m"), (86400 * 2 + 3 * 3600, "2d03h"), (-5, "0s"),
])
def test_duration(seconds, text):
    assert formatting.duration(seconds) == text


@pytest.mark.parametrize("nbytes, text", [
    (None, "-"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
    (12 * 2**30 + 2**29, "12.5 GiB"), (3 * 2**50, "3072.0 TiB"),
])
def test_size(nbytes, text):
    assert formatting.size(nbytes) == text


def test_abis_in_python_order():
    assert formatting.per_target({"cp311 linux_aarch64": 1, "cp39 linux_armv7l": 2,
                                  "cp310 linux_aarch64": 0, "cp311 linux_armv7l": 4}) == (
        "cp39 armv7l 2  cp310 aarch64 0  cp311 aarch64 1  cp311 armv7l 4")
    assert formatting.per_target({}) == "none"
    assert formatting.per_target(None) == "-"


@pytest.mark.parametrize("fields, expected", [
    ({"state": "idle"}, ("state_idle", "idle")),
    ({"state": "parked"}, ("state_parked", "parked")),
    ({"state": "parked", "paused": True}, ("state_paused", "paused")),
    ({"state": "building"}, ("state_building", "building")),
    ({"state": "sleeping", "paused": True}, ("state_paused", "paused")),
    ({"state": "building", "paused": True}, ("state_paused", "building (paused)")),
    ({"state": "weird"}, ("dim", "weird")),
])
def test_slave_state(fields, expected):
    assert formatting.slave_state(slave_report(1, **fields)) == expected


def test_slave_row_has_every_column():
    model = FarmModel()
    model.apply_status("SLAVE", {"slave": slave_report(
        7, label="rack-3", state="building", package="numpy", version="2.0", job_s=100.0,
        last_seen_s=1.0)}, now_s=10)
    cells = formatting.slave_cells(model.slaves[7], now_s=15, wall_now=WALL)
    assert len(cells) == len(formatting.SLAVE_COLUMNS)
    assert [text for _, text in cells] == [
        "building", "7", "rack-3", "cp311", "linux_aarch64", "1h02m", "numpy 2.0", "1m45s",
        "6s", "0.25", "-", "0123456789abcdef"]
    failure = {"package": "ldapy", "version": "1.0", "cause": "missing-header",
               "label": "missing header", "detail": "lber.h: No such file or directory",
               "install": "libldap-dev"}
    model.apply_status("SLAVE", {"slave": slave_report(7, last_failure=failure)}, now_s=20)
    record = model.slaves[7]
    cells = formatting.slave_cells(record, now_s=20, wall_now=WALL)
    assert (cells[6][1], cells[7][1]) == ("-", "-")
    # the latest failure's package (or cause), in its row; in full on the selection line
    assert cells[-2][1] == "needs libldap-dev"
    assert formatting.slave_details(record).endswith(
        "; last failure: ldapy 1.0: missing header (lber.h: No such file or directory), "
        "install libldap-dev")


def test_master_panel_shows_the_farm():
    model = FarmModel()
    model.apply_status("MASTER", {"master": master_status()}, now_s=10)
    lines = [formatting.plain(line) for line in formatting.master_lines(model, 11, WALL)]
    text = "\n".join(lines)
    assert lines[0].startswith("Master    running   up 1d01h   slaves 2 (1 building)")
    assert ("pending cp39 armv7l 3  cp311 aarch64 12   at hand cp39 armv7l 2  cp311 aarch64 5"
            in text)
    assert "builds held" not in text
    assert "last hour cp39 armv7l 3  cp311 aarch64 10 (total 13)   success rate 92%" in text
    assert "in flight 1 (2 expected)   received 5.0 MiB   verified 20   rejected 1" in text
    assert "disk free 12.0 GiB (minimum 1.0 GiB)   load 1.50   memory free 3.0 GiB" in text
    assert "temperature" not in text
    assert "pages waiting 3   written 77   upstream events 120   projects to read 4" in text

    assert "piw-rebuild" not in text

    held = master_status(paused=True, rebuild={
        "rebuild_id": 1, "part": "all", "total": 40, "pending": 12, "root_pending": True,
        "settled": True})
    held["slave_driver"]["holds"] = ["free disk space is low", "paused by the operator"]
    held["stats"].update(disk_low=True, disk_free=2**29, temperature_c=48.25)
    model.apply_status("MASTER", {"master": held}, now_s=20)
    lines = formatting.master_lines(model, 30, WALL)
    text = "\n".join(formatting.plain(line) for line in lines)
    assert "PAUSED: no new builds are handed out" in text
    assert "builds held: free disk space is low; paused by the operator" in text
    assert "disk free 512.0 MiB (minimum 1.0 GiB) LOW" in text
    assert ("bad", "disk free 512.0 MiB (minimum 1.0 GiB) LOW") in lines[4]
    assert "temperature 48.2 C" in text
    assert "last heard 10s ago" in text  # the summary comes every second
    assert "piw-rebuild all under way" in text


def test_master_panel_before_any_news():
    model = FarmModel()
    assert formatting.master_lines(model, 0, WALL) == [[("dim", "nothing heard from the master yet")]]
    model.apply_status("MASTER", {"master": {"paused": False, "slaves": 0}}, now_s=0)
    text = "\n".join(formatting.plain(line) for line in formatting.master_lines(model, 0, WALL))
    assert "pending -   at hand -" in text and "disk free - (minimum -)" in text


def test_link_line():
    model = FarmModel()
    assert "connecting" in formatting.plain(formatting.link_line(model, "ipc://x", 0))
    model.set_link(UNREACHABLE, "there is no socket at x", now_s=0)
    line = formatting.link_line(model, "ipc://x", 75)
    assert line[0][0] == "bad"
    assert "not running or not reachable at ipc://x (for 1m15s): there is no socket at x" \
        in formatting.plain(line)


# --- the screen, rendered without a terminal ----------------------------------------------

def render(view: MonitorView) -> str:
    canvas = view.top.render((120, 30), focus=True)
    return "\n".join(line.decode() for line in canvas.text)


def test_view_keeps_the_selected_slave():
    model = FarmModel()
    view = MonitorView("ipc://control")
    view.show(model, 0, WALL)
    assert "no slaves connected" in render(view) and view.selected_id() is None
    model.apply_snapshot({"master": master_status(),
                          "slaves": [slave_report(1), slave_report(2), slave_report(3)]}, 0)
    view.show(model, 0, WALL)
    assert view.selected_id() == 1
    view.walker.set_focus(2)
    view.show(model, 0, WALL)
    screen = render(view)
    assert "selected: slave 3 (pi3)" in screen
    assert re.search(r"^sleeping +1 +pi1 +cp311 +linux_aarch64 +1h02m", screen, re.M)
    # slaves come and go: the cursor stays on slave 3
    model.apply_status("SLAVE_GONE", {"slave_id": 1}, 1)
    model.apply_status("SLAVE", {"slave": slave_report(9)}, 1)
    view.show(model, 1, WALL)
    assert view.selected_id() == 3
    # slave 3 goes: the cursor stays where it was
    model.apply_status("SLAVE_GONE", {"slave_id": 3}, 2)
    view.show(model, 2, WALL)
    assert view.selected_id() == 9
    model.slaves.clear()
    view.show(model, 3, WALL)
    assert view.selected_id() is None and "no slaves connected" in render(view)


def test_view_dialog():
    view = MonitorView("ipc://control")
    view.show(FarmModel(), 0, WALL)
    view.ask("Stop the master?")
    assert "Stop the master?" in render(view) and "Please confirm" in render(view)
    view.dismiss()
    assert "Stop the master?" not in render(view)
    assert isinstance(view.top.original_widget, urwid.Frame)


# --- talking to a master ---------------------------------------------------------------------

def test_ipc_problem(tmp_path):
    assert ipc_problem("tcp://127.0.0.1:5555") is None
    assert "there is no socket at" in ipc_problem(f"ipc://{tmp_path}/nothing")
    (tmp_path / "file").write_text("")
    assert "is not a socket" in ipc_problem(f"ipc://{tmp_path}/file")


def test_ipc_problem_names_a_forbidden_socket(tmp_path):
    """Someone outside the master's user and group is told so, not left waiting."""
    user = build_user()  # as root, ask as the build user; else as ourselves
    shared = Path(tempfile.mkdtemp(prefix="piw-ipc-"))
    shared.chmod(0o755)
    ctx = zmq.Context()
    sockets = []
    try:
        for directory in (shared, tmp_path):
            sock = ctx.socket(zmq.ROUTER)
            sock.bind(f"ipc://{directory}/control")
            sockets.append(sock)
            (directory / "control").chmod(0o660 if user is not None else 0o000)
        if user is None:
            tmp_path.chmod(0o000)
        kwargs = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid,
                                          "extra_groups": []}
        result = subprocess.run([sys.executable, "-c", (
            "import sys\nfrom piwheels.control_client import ipc_problem\n"
            "for path in sys.argv[1:]: print(ipc_problem(f'ipc://{path}/control'))")
            , str(shared), str(tmp_path)], capture_output=True, text=True, timeout=30,
            cwd="/", **kwargs)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 2
        for line, directory in zip(lines, (shared, tmp_path)):
            assert f"may not use {directory}/control: the master's sockets are open only " \
                   "to its user and group" in line
    finally:
        tmp_path.chmod(0o700)
        for sock in sockets:
            sock.close(linger=0)
        ctx.destroy(linger=0)
        shutil.rmtree(shared, ignore_errors=True)


def test_control_client_never_takes_a_late_answer():
    """After giving up on a request, the answer to it is not mistaken for the next one's."""
    ctx = zmq.Context()
    server = Socket.make(ctx, zmq.ROUTER, CONTROL.reverse())
    port = server.zsocket.bind_to_random_port("tcp://127.0.0.1")
    client = ControlClient(f"tcp://127.0.0.1:{port}", timeout_s=0.3, ctx=ctx)
    try:
        with pytest.raises(MasterUnavailable, match="did not answer"):
            client.request("SNAPSHOT")
        assert server.zsocket.poll(1000)
        address, name, _ = server.recv_from()
        assert name == "SNAPSHOT"
        server.send_to(address, "SNAPSHOT", {"master": {}, "slaves": []})  # too late
        client.send("PAUSE")
        assert server.zsocket.poll(1000)
        address, name, _ = server.recv_from()
        assert name == "PAUSE"
        server.send_to(address, "OK", {"message": "paused"})
        assert client.reply(2) == ("OK", {"message": "paused"})
    finally:
        client.close()
        server.close()
        ctx.destroy(linger=0)


def test_link_without_a_master(tmp_path):
    model = FarmModel()
    link = MasterLink(model, f"ipc://{tmp_path}/control", f"ipc://{tmp_path}/status",
                      timeout_s=0.3)
    try:
        link.poll()
        assert model.link == UNREACHABLE
        assert f"there is no socket at {tmp_path}/control" in model.link_reason
        link.ask("PAUSE", None, "pause the master")
        assert model.notice.error and "not sent" in model.notice.text
    finally:
        link.close()
    # a master that does not answer (nothing listens on the port)
    port_socket = zmq.Context.instance().socket(zmq.ROUTER)
    port = port_socket.bind_to_random_port("tcp://127.0.0.1")
    port_socket.close(linger=0)
    model = FarmModel()
    link = MasterLink(model, f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port}",
                      timeout_s=0.3)
    try:
        link.poll()
        assert model.link == CONNECTING
        wait_for(lambda: link.poll() or model.link == UNREACHABLE, 5, "giving up")
        assert "no answer on" in model.link_reason
    finally:
        link.close()


# --- the real thing ---------------------------------------------------------------------------

BASE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: A build that runs until it is skipped (or the test ends).
ENDLESS = "import time\ntime.sleep(600)\n"


@pytest.fixture
def monitor(tmp_path, farm):
    """piw-monitor in a terminal, watching the farm's master."""
    terminal = Terminal(tmp_path, [
        str(BIN / "piw-monitor"), "--control-address", farm.control_address,
        "--status-address", farm.status_address, "--request-timeout", "2",
        "--log-file", str(tmp_path / "monitor.log"),
    ], env={"LANG": "C.UTF-8", "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    try:
        yield terminal
    finally:
        terminal.close()


def slaves_by_label(farm: Farm) -> dict[str, dict]:
    return {slave["label"]: slave for slave in farm.snapshot()["slaves"]}


def row(screen: str, label: str) -> str:
    """The slave table's line for *label*."""
    lines = [line for line in screen.splitlines() if re.search(rf" {label} ", line)]
    return lines[0] if len(lines) == 1 else ""


@pytest.mark.slow
def test_master_actions_and_reconnecting(farm, monitor):
    # no master yet: the monitor says so, and keeps trying
    monitor.wait_text("The master is not running or not reachable")
    monitor.wait_text(f"there is no socket at {farm.tmp_path}/control")
    farm.start_master()
    monitor.wait_text(f"connected to the master at {farm.control_address}")
    # every task's figures, as they come in
    panel = [r"Master +running +up \d+s +slaves 0 \(0 building\)",
             r"Queue +pending none +at hand ",
             r"Builds +last hour none +success rate - +handed out 0 +recorded 0",
             r"Transfers +in flight 0 \(0 expected\) +received 0 B +verified 0 +rejected 0",
             r"Host +disk free \d+\.\d \w+ \(minimum 1\.0 MiB\) +load \d+\.\d\d +memory free",
             r"Index +pages waiting \d+ +written \d+ +upstream events \d+ +projects to read"]
    screen = monitor.wait(lambda s: all(re.search(line, s) for line in panel), 10, "the panel")
    for words in ("no slaves connected", "m pause master", "Q stop master", "q quit"):
        assert words in screen

    monitor.press("m")
    wait_for(lambda: farm.snapshot()["master"]["paused"], 5, "the master to pause")
    wait_for(lambda: "paused by the operator" in
             farm.snapshot()["master"]["slave_driver"]["holds"], 5, "the driver to hold builds")
    monitor.wait_text("PAUSED: no new builds are handed out")
    monitor.wait_text("builds held: paused by the operator")
    monitor.wait_text("m resume master")
    monitor.wait_text("pause the master: the master is paused")

    monitor.press("m")
    wait_for(lambda: not farm.snapshot()["master"]["paused"], 5, "the master to resume")
    monitor.wait_gone("builds held")
    monitor.wait_match(r"Master +running")

    # stopping the master asks first; "no" leaves it running
    monitor.press("Q")
    monitor.wait_text("Stop the master?")
    monitor.press("n")
    monitor.wait_gone("Stop the master?")
    monitor.wait_text("nothing was done")
    time.sleep(0.5)
    assert farm.master.proc.poll() is None
    assert "stopping" not in farm.master.log()
    assert farm.snapshot()["master"]["paused"] is False

    monitor.press("Q")
    monitor.wait_text("Stop the master?")
    farm.master.expected_exit = True
    monitor.press("y")
    assert farm.master.proc.wait(20) == 0
    assert "stopping: asked to stop by the operator" in farm.master.log()
    monitor.wait_text("The master is not running or not reachable", 15)

    # it comes back: the monitor finds it by itself
    farm.start_master()
    monitor.wait_text(f"connected to the master at {farm.control_address}", 15)
    monitor.wait_match(r"Master +running +up \d+s")
    monitor.press("q")
    wait_for(lambda: monitor.exit_status() == 0, 5, "piw-monitor to exit")


@pytest.fixture
def endless_releases(db, build_index, tmp_path):
    """Releases whose builds never end by themselves, served and recorded."""
    names = ["monitor-a", "monitor-b", "monitor-c"]
    for hours, name in enumerate(names, 1):
        build_index.add(make_sdist(tmp_path / "sdists", name, "1.0", setup_body=ENDLESS))
        db.add_package(name)
        db.add_version(name, "1.0", released=BASE_TIME - timedelta(hours=hours), has_sdist=True)
    return names


@pytest.mark.slow
def test_slave_actions(farm, monitor, db, endless_releases):
    farm.start_master("--package-allow", "monitor-*")
    python = pyenv_python("11")
    alpha = farm.start_slave("alpha", python)
    beta = farm.start_slave("beta", python)
    farm.wait(lambda: [s["state"] for s in slaves_by_label(farm).values()] == ["building"] * 2,
              30, "both slaves to build")
    slaves = slaves_by_label(farm)
    building = {label: slave["package"] for label, slave in slaves.items()}
    assert sorted(building.values()) == ["monitor-a", "monitor-b"]

    # one row per slave: state, id, label, ABI, platform, uptime, build, time, seen
    screen = monitor.wait(lambda s: all(re.search(rf"building +\d+ +{label} ", s)
                                        for label in ("alpha", "beta")), 15, "both rows")
    for label, slave in slaves.items():
        assert re.search(
            rf"^building +{slave['slave_id']} +{label} +cp311 +{slave['platform_tag']} +"
            rf"\d+[smh]\S* +{building[label]} 1\.0 +\d+[smh]\S* +\d+s", row(screen, label)), \
            row(screen, label)
        # and the id of the key it was enrolled with, as the master saw it
        assert slave["key_id"] == farm.key_id(label)
        assert row(screen, label).rstrip().endswith(slave["key_id"]), row(screen, label)
    # both build for this host's target, and the queue panel counts per target
    assert {slave["platform_tag"] for slave in slaves.values()} == {HOST_PLATFORM}
    monitor.wait_match(rf"Queue +pending {re.escape(Target('cp311', HOST_PLATFORM).label)} \d+ ",
                       15)

    # the cursor onto alpha
    ids = sorted(slave["slave_id"] for slave in slaves.values())
    alpha_id, beta_id = slaves["alpha"]["slave_id"], slaves["beta"]["slave_id"]
    monitor.wait_text(f"selected: slave {ids[0]} ")
    if ids.index(alpha_id):
        monitor.press("Down")
    monitor.wait_text(f"selected: slave {alpha_id} (alpha)")
    monitor.wait_text(f"selected: slave {alpha_id} (alpha): key {slaves['alpha']['key_id']}, "
                      f"builds contained by {slaves['alpha']['containment']}")

    # pause alpha, then skip its build: it ends as skipped and no new one comes
    monitor.press("p")
    farm.wait(lambda: slaves_by_label(farm)["alpha"]["paused"], 5, "alpha to be paused")
    assert not slaves_by_label(farm)["beta"]["paused"]
    monitor.wait_match(r"building \(paused\) +\d+ +alpha ")
    monitor.press("s")
    alpha.wait_log(f"the master skipped {building['alpha']} 1.0", 10)
    farm.wait(lambda: slaves_by_label(farm)["alpha"]["package"] is None, 10, "alpha to stop")
    monitor.wait_match(r"^paused +\d+ +alpha ")
    time.sleep(3)  # six chances to be handed monitor-c
    alpha_now = slaves_by_label(farm)["alpha"]
    assert (alpha_now["state"], alpha_now["package"]) == ("sleeping", None)
    assert "building monitor-c" not in alpha.log()
    assert db.get_project(building["alpha"]).versions[0].builds == ()  # a skip is no build

    # resume alpha: it takes the build that was waiting
    monitor.press("r")
    farm.wait(lambda: slaves_by_label(farm)["alpha"]["package"] == "monitor-c", 10,
              "alpha to take monitor-c")
    monitor.wait_match(r"^building +\d+ +alpha .* monitor-c 1\.0 ")

    # every slave at once: pause, resume, skip
    monitor.press("P")
    farm.wait(lambda: all(s["paused"] for s in slaves_by_label(farm).values()), 5, "all paused")
    monitor.wait(lambda s: "(paused)" in row(s, "alpha") and "(paused)" in row(s, "beta"), 5,
                 "both rows paused")
    monitor.press("R")
    farm.wait(lambda: not any(s["paused"] for s in slaves_by_label(farm).values()), 5,
              "all resumed")
    monitor.press("S")
    alpha.wait_log("the master skipped monitor-c 1.0", 10)
    beta.wait_log(f"the master skipped {building['beta']} 1.0", 10)
    farm.wait(lambda: all(s["package"] is None for s in slaves_by_label(farm).values()), 10,
              "both builds to end")

    # stop beta (after a question), then every slave
    if ids.index(beta_id):
        monitor.press("Down")
    else:
        monitor.press("Up")
    monitor.wait_text(f"selected: slave {beta_id} (beta)")
    monitor.press("x")
    monitor.wait_text(f"Stop slave {beta_id} (beta)?")
    beta.expected_exit = True
    monitor.press("y")
    # status 3: systemd's RestartPreventExitStatus keeps a stopped slave stopped
    assert beta.proc.wait(10) == EXIT_TOLD_TO_STOP == 3
    assert "the master told this slave to stop: stopped by the operator" in beta.log()
    assert alpha.proc.poll() is None
    assert list(slaves_by_label(farm)) == ["alpha"]
    monitor.wait(lambda s: " beta " not in s, 10, "beta's row to go")

    monitor.press("X")
    monitor.wait_text("Stop every slave?")
    alpha.expected_exit = True
    monitor.press("y")
    alpha.proc.wait(10)
    assert "stopped by the operator" in alpha.log()
    assert farm.snapshot()["slaves"] == []
    monitor.wait_text("no slaves connected")
