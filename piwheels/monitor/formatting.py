"""The monitor's words: durations, sizes, the slave table's cells, the master panel.

Pure functions from the model to text, each piece tagged with the name of a
palette entry (urwid "markup": a list of ``(attribute, text)`` pairs), so
they can be tested without a terminal.  Missing figures show as ``-``: the
master reports each task's figures every few seconds, not all at once.
"""

from __future__ import annotations

from typing import Iterable, Optional, Union

from ..tags import Target, target_key
from .link import MASTER_SILENCE_S, RETRY_INTERVAL_S
from .model import CONNECTED, CONNECTING, FarmModel, SlaveRecord

Markup = list[Union[str, tuple[str, str]]]

#: The slave table: (heading, width); None: takes the room that is left.
SLAVE_COLUMNS: tuple[tuple[str, Optional[int]], ...] = (
    ("State", 17), ("Id", 4), ("Label", 16), ("ABI", 7), ("Platform", 24),
    ("Uptime", 8), ("Build", None), ("Time", 8), ("Seen", 6), ("Load", 5),
    ("Last failure", 18), ("Key", 17),
)
#: the Key cell of a slave without a key (a farm without keys)
NO_KEY = "none"

MISSING = "-"


def duration(seconds: Optional[float]) -> str:
    """A short, human duration: 42s, 12m05s, 3h07m, 2d03h."""
    if seconds is None:
        return MISSING
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def size(nbytes: Optional[int]) -> str:
    """Bytes in binary units: 512 B, 1.5 KiB, 12.3 GiB."""
    if nbytes is None:
        return MISSING
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def percent(rate: Optional[float]) -> str:
    return MISSING if rate is None else f"{rate * 100:.0f}%"


def per_target(counts: Optional[dict]) -> str:
    """``cp39 armv7l 3  cp311 aarch64 12``: counts per build target (keyed by
    ``str(target)``), in Python version order."""
    if not counts:
        return "none" if counts is not None else MISSING
    targets = sorted(counts, key=lambda key: target_key(Target.from_key(key)))
    return "  ".join(f"{Target.from_key(key).label} {counts[key]}" for key in targets)


# --- the slave table ------------------------------------------------------------------

def slave_state(report: dict) -> tuple[str, str]:
    """(attribute, text) of a slave's state; a paused slave says so."""
    state = report.get("state", "?")
    if report.get("paused"):
        if state in ("idle", "parked", "sleeping"):
            return "state_paused", "paused"
        return "state_paused", f"{state} (paused)"
    if state in ("idle", "parked", "sleeping", "building", "sending"):
        return f"state_{state}", state
    return "dim", state


def slave_cells(record: SlaveRecord, now_s: float, wall_now: float) -> list[tuple[str, str]]:
    """One row of the slave table, one (attribute, text) per :data:`SLAVE_COLUMNS` entry."""
    report = record.report
    load = report.get("load_1m")
    return [
        slave_state(report),
        ("value", str(record.slave_id)),
        ("value", record.label),
        ("value", report.get("abi_tag") or MISSING),
        ("value", report.get("platform_tag") or MISSING),
        ("value", duration(record.uptime_s(wall_now))),
        ("value", record.building or MISSING),
        ("value", duration(record.job_s(now_s)) if record.building else MISSING),
        ("value", duration(record.last_seen_s(now_s))),
        ("value", MISSING if load is None else f"{load:.2f}"),
        ("value", last_failure(report.get("last_failure"), short=True)),
        ("value", report.get("key_id") or NO_KEY),
    ]


def last_failure(failure: Optional[dict], *, short: bool = False) -> str:
    """A slave's latest failed attempt: its cause and the package to install
    (*short*: for its cell, the package it needs or else the cause; else with the
    release and the detail)."""
    if not failure:
        return MISSING
    if short:
        return f"needs {failure['install']}" if failure.get("install") else failure["label"]
    install = f", install {failure['install']}" if failure.get("install") else ""
    detail = f" ({failure['detail']})" if failure.get("detail") else ""
    return f"{failure['package']} {failure['version']}: {failure['label']}{detail}{install}"


def slave_details(record: SlaveRecord) -> str:
    """What the selection line says of a slave beyond its row: its key, its builds'
    containment."""
    report = record.report
    failure = report.get("last_failure")
    return (f"key {report.get('key_id') or NO_KEY}, builds contained by "
            f"{report.get('containment') or MISSING}"
            + (f"; last failure: {last_failure(failure)}" if failure else ""))


# --- the master panel ----------------------------------------------------------------

def link_line(model: FarmModel, address: str, now_s: float) -> Markup:
    """How the monitor's connection to the master stands."""
    if model.link == CONNECTED:
        return [("good", f"connected to the master at {address}")]
    if model.link == CONNECTING:
        return [("warn", f"connecting to the master at {address} ...")]
    since = duration(now_s - model.link_since_s)
    return [("bad", f"The master is not running or not reachable at {address} "
                    f"(for {since}): {model.link_reason}. Trying again every "
                    f"{RETRY_INTERVAL_S:g} s; anything shown is from before.")]


def master_lines(model: FarmModel, now_s: float, wall_now: float) -> list[Markup]:
    """The master panel: state, queue, builds, transfers, disk and host, index."""
    m = model.master
    driver = m.get("slave_driver", {})
    stats = m.get("stats", {})
    files = m.get("file_receiver", {})
    index = m.get("index_writer", {})
    follower = m.get("pypi_follower", {})
    recorder = m.get("build_recorder", {})
    if not m:
        return [[("dim", "nothing heard from the master yet")]]

    if m.get("paused"):
        state: Markup = [("warn", "PAUSED: no new builds are handed out")]
    else:
        state = [("good", "running")]
    started = m.get("started_at")
    uptime = duration(wall_now - started) if started else MISSING
    age = now_s - model.master_received_s if model.master_received_s is not None else 0
    state += [f"   up {uptime}   slaves {m.get('slaves', MISSING)}"
              f" ({driver.get('building', MISSING)} building)"]
    if age > MASTER_SILENCE_S:
        state += [("bad", f"   last heard {duration(age)} ago")]

    queue: Markup = [f"pending {per_target(stats.get('pending'))}"
                     f"   at hand {per_target(driver.get('queued'))}"]
    holds = driver.get("holds")
    if holds:
        queue += [("warn", "   builds held: " + "; ".join(holds))]

    last_hour = stats.get("builds_last_hour")
    total = sum(last_hour.values()) if last_hour else 0
    builds: Markup = [
        f"last hour {per_target(last_hour)}" + (f" (total {total})" if last_hour else ""),
        f"   success rate {percent(stats.get('success_rate'))}",
        f"   handed out {driver.get('handed_out', MISSING)}",
        f"   recorded {recorder.get('recorded', MISSING)}",
    ]

    transfers: Markup = [
        f"in flight {files.get('transfers', MISSING)}"
        f" ({files.get('expected', MISSING)} expected)",
        f"   received {size(files.get('bytes_received'))}",
        f"   verified {files.get('files_verified', MISSING)}",
        f"   rejected {files.get('files_rejected', MISSING)}",
    ]

    disk = f"disk free {size(stats.get('disk_free'))} (minimum {size(stats.get('min_free'))})"
    host: Markup = [("bad", disk + " LOW") if stats.get("disk_low") else disk]
    load = stats.get("load_1m")
    host += [f"   load {MISSING if load is None else f'{load:.2f}'}",
             f"   memory free {size(stats.get('memory_free'))}"]
    if stats.get("temperature_c") is not None:
        host += [f"   temperature {stats['temperature_c']:.1f} C"]

    output: Markup = [
        f"pages waiting {index.get('dirty', MISSING)}",
        f"   written {index.get('pages_written', MISSING)}",
        f"   upstream events {follower.get('events', MISSING)}",
        f"   projects to read {follower.get('to_read', MISSING)}",
    ]
    rebuild = m.get("rebuild")
    if rebuild and (rebuild.get("pending") or rebuild.get("root_pending")
                    or not rebuild.get("settled")):
        output += [("warn", f"   piw-rebuild {rebuild.get('part', '')} under way")]
    rows = [("Master", state), ("Queue", queue), ("Builds", builds),
            ("Transfers", transfers), ("Host", host), ("Index", output)]
    return [[("title", f"{title:<10}"), *markup] for title, markup in rows]


def plain(markup: Iterable[Union[str, tuple[str, str]]]) -> str:
    """The text of some markup, without its attributes (for tests and logs)."""
    return "".join(part if isinstance(part, str) else part[1] for part in markup)
