"""The admin tools: piw-add, piw-remove, piw-rebuild, piw-import and piw-control.

Each talks to the running master's control socket, prints what was done, and
exits non-zero when the master refuses or does not answer.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .. import cli, config, limits, settings, tool_settings
from ..control_client import ControlClient, MasterUnavailable, StatusFeed
from ..errors import Aborted, PiwheelsError
from ..project_status import PROJECT_STATUSES
from ..protocols import REBUILD_PARTS
from ..tool_settings import CLIENT_OPTIONS, CONTROL_ACTIONS, ClientSettings

#: Characters in piw-rebuild's progress bar.
PROGRESS_WIDTH = 40
#: piw-rebuild gives up following a master that published nothing for this long
#: (it publishes its status every second).
STATUS_SILENCE_S = 30.0


def _client(client: ClientSettings) -> ControlClient:
    return ControlClient(client.control_address, timeout_s=client.request_timeout_s)


def _confirm(question: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise Aborted(f"{question} — not asked, as there is no terminal; pass -y to go ahead")
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise Aborted("nothing was changed")


def _bulk(client: ControlClient, action: str, package: str, versions: Optional[str],
          reason: Optional[str], assume_yes: bool) -> None:
    """A change to everything a pattern or version list names: count it, ask, do it."""
    request = {"action": action, "package": package, "versions": versions,
               "reason": reason, "dry_run": True}
    reply, answer = client.request("BULK", request)
    if reply == "ERROR":
        raise PiwheelsError(answer["message"])
    if answer["changes"] == 0:
        print(f"nothing to change ({answer['message']})")
        return
    _confirm(f"{answer['message']}: go ahead?", assume_yes)
    print("done: " + client.command("BULK", {**request, "dry_run": False}))


PATTERN_HELP = ("; a shell-style pattern (quote it) names every matching project, and a "
                "VERSION pattern ('1.*') or list ('1.0,1.1') several releases: the tool says "
                "how many and asks first")

# --- piw-add ---------------------------------------------------------------------

def _add(argv: Optional[Sequence[str]]) -> int:
    parser = config.make_parser(
        "piw-add", "Add a project or release to the farm, or change how it is built.",
        CLIENT_OPTIONS + ["yes"])
    parser.add_argument("package", help="the project's name" + PATTERN_HELP + " (with --skip "
                                        "or --unskip only)")
    parser.add_argument("version", nargs="?", help="one release of it")
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip", metavar="REASON", help="never build it, for this reason")
    skip.add_argument("--unskip", action="store_true", help="build it again")
    yank = parser.add_mutually_exclusive_group()
    yank.add_argument("--yank", nargs="?", const="", metavar="REASON",
                      help="mark the release yanked (pip skips it unless pinned)")
    yank.add_argument("--unyank", action="store_true", help="undo --yank")
    parser.add_argument("--alias", metavar="NAME", help="another name the project is known by")
    parser.add_argument("--status", metavar="STATUS",
                        help=f"the project's PEP 792 status on this farm, one of "
                             f"{', '.join(PROJECT_STATUSES)} (quarantined: its wheels are "
                             "withheld and it is not built; active: clear this farm's status; "
                             "the stricter of this and upstream's is in force)")
    parser.add_argument("--status-reason", metavar="REASON", help="why, for --status")
    options = settings.load_with(tool_settings.AddConfig, parser, argv)
    add = {
        "package": options.package, "version": options.version,
        "skip": options.skip, "unskip": options.unskip,
        "yank": options.yank is not None, "yank_reason": options.yank or None,
        "unyank": options.unyank, "alias": options.alias,
    }
    status = {"package": options.package, "status": options.status,
              "reason": options.status_reason}
    ControlClient.check("ADD", add)
    if options.status is not None:
        ControlClient.check("PROJECT_STATUS", status)  # before ADD is sent: all or nothing
    client = _client(options.client)
    try:
        if options.bulk:
            _bulk(client, "skip" if options.skip is not None else "unskip", options.package,
                  options.version, options.skip, options.yes)
            return 0
        print(client.command("ADD", add))
        if options.status is not None:
            print(client.command("PROJECT_STATUS", status))
    finally:
        client.close()
    return 0


def add_main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_add, argv)


# --- piw-remove ------------------------------------------------------------------

def _remove(argv: Optional[Sequence[str]]) -> int:
    parser = config.make_parser(
        "piw-remove", "Remove a project or release (and its wheels) from the farm.",
        CLIENT_OPTIONS + ["yes"])
    parser.add_argument("package", help="the project's name" + PATTERN_HELP)
    parser.add_argument("version", nargs="?", help="one release of it")
    parser.add_argument("--builds", action="store_true",
                        help="remove only the builds, their wheels and logs, so they are built "
                             "again")
    parser.add_argument("--skip", metavar="REASON",
                        help="remove the builds and never build it again, for this reason")
    options = settings.load_with(tool_settings.RemoveConfig, parser, argv)
    if options.bulk:
        action = "skip_builds" if options.skip is not None else \
            "remove_builds" if options.builds else "remove"
        client = _client(options.client)
        try:
            _bulk(client, action, options.package, options.version, options.skip, options.yes)
        finally:
            client.close()
        return 0
    what = options.package + (f" {options.version}" if options.version else "")
    if options.builds or options.skip is not None:
        question = f"Remove every build and wheel of {what}?"
    else:
        question = f"Remove {what} with all its builds and wheels?"
    _confirm(question, options.yes)
    client = _client(options.client)
    try:
        print(client.command("REMOVE", {
            "package": options.package, "version": options.version,
            "builds_only": options.builds, "skip": options.skip,
        }))
    finally:
        client.close()
    return 0


def remove_main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_remove, argv)


# --- piw-rebuild -----------------------------------------------------------------

def _rebuild(argv: Optional[Sequence[str]]) -> int:
    parser = config.make_parser(
        "piw-rebuild", "Rewrite pages of the published index.",
        CLIENT_OPTIONS + ["status_address"])
    parser.add_argument("part", choices=REBUILD_PARTS,
                        help="home: the home page; index: the simple root, packages.json and "
                             "sitemap; project: one project's pages (or all with no PKG); "
                             "all: everything")
    parser.add_argument("package", nargs="?", help="the project, for 'project'")
    parser.add_argument("--no-wait", action="store_true",
                        help="do not wait for the writing to finish")
    options = settings.load_with(tool_settings.RebuildConfig, parser, argv)
    feed = None if options.no_wait else StatusFeed(options.status_address)
    client = _client(options.client)
    try:
        reply, answer = client.request(
            "REBUILD", {"part": options.part, "package": options.package})
        if reply == "ERROR":
            raise PiwheelsError(answer["message"])
        print(answer["message"], flush=True)
        if feed is not None:
            _follow_rebuild(feed, answer["rebuild_id"], sys.stderr)
    finally:
        client.close()
        if feed is not None:
            feed.close()
    return 0


def _follow_rebuild(feed: StatusFeed, rebuild_id: int, out,
                    silence_s: float = STATUS_SILENCE_S) -> None:
    """A progress bar from the master's account of rebuild *rebuild_id*, until it is done.

    The master counts the projects the index writer still has to write; the
    rebuild is done once that count is zero in a report the writer made after
    the request (``settled``) and the simple root is written too.
    """
    total = 0
    last_heard = time.monotonic()
    while True:
        msg = feed.poll(1.0)
        if msg is None or msg[0] != "MASTER":
            if time.monotonic() - last_heard > silence_s:
                raise MasterUnavailable(
                    f"the master has said nothing on its status feed for {silence_s:.0f} s; "
                    "the rewrite may still finish (see its log)")
            continue
        last_heard = time.monotonic()
        rebuild = msg[1]["master"].get("rebuild")
        if not rebuild or rebuild["rebuild_id"] < rebuild_id:
            continue  # a status from before the request
        # (a later rebuild by someone else finishes after ours: following it is right)
        pending = rebuild["pending"]
        total = max(total, rebuild["total"], pending)
        if total:
            done = total - pending
            filled = PROGRESS_WIDTH * done // total
            out.write(f"\r[{'#' * filled}{'.' * (PROGRESS_WIDTH - filled)}] "
                      f"{done}/{total} projects")
            out.flush()
        if rebuild["settled"] and pending == 0 and not rebuild["root_pending"]:
            out.write("\ndone\n" if total else "done\n")
            return


def rebuild_main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_rebuild, argv)


# --- piw-import ------------------------------------------------------------------

def _import(argv: Optional[Sequence[str]]) -> int:
    parser = config.make_parser(
        "piw-import", "Add wheels built elsewhere; they are checked like those from slaves.",
        CLIENT_OPTIONS)
    parser.add_argument("wheels", nargs="+", metavar="WHEEL", help="wheel files to import")
    parser.add_argument("--abi", metavar="TAG",
                        help="the build ABI to record them under (default: from the tags)")
    parser.add_argument("--platform", metavar="TAG",
                        help="the platform of the build target to record them under "
                             "(default: from the tags; for a pure wheel, a platform the farm "
                             "builds that ABI on)")
    parser.add_argument("--label", default=f"import@{os.uname().nodename}"[:limits.LABEL],
                        help="who built them, for the build record")
    options = settings.load_with(tool_settings.ImportConfig, parser, argv)
    client = _client(options.client)
    failed = 0
    try:
        for wheel in options.wheels:
            path = Path(wheel).resolve()
            if not path.is_file():
                failed += 1
                print(f"error: {wheel}: {'not a file' if path.exists() else 'no such file'}",
                      file=sys.stderr)
                continue
            reply, answer = client.request("IMPORT", {
                "path": str(path), "abi_tag": options.abi, "platform_tag": options.platform,
                "label": options.label})
            if reply == "OK":
                print(answer["message"])
            else:
                failed += 1
                print(f"error: {answer['message']}", file=sys.stderr)
    finally:
        client.close()
    return 1 if failed else 0


def import_main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_import, argv)


# --- piw-control -----------------------------------------------------------------

#: how many failures piw-control failures lists unless told
FAILURES_SHOWN = 50


def _control(argv: Optional[Sequence[str]]) -> int:
    parser = config.make_parser(
        "piw-control", "Steer the running master: hold or resume builds, compare with the "
        "upstream index now, change the free space under which builds are held, change "
        "which releases are built, or list the failed attempts and their builders.",
        CLIENT_OPTIONS)
    parser.add_argument("action", choices=sorted(CONTROL_ACTIONS),
                        help="pause or resume handing out builds; reconcile with the upstream "
                             "project list now; min-free-space MIB (until the master restarts); "
                             "build-policy [SPEC] (all, newest:N, since:YYYY-MM-DD, "
                             "versions:V1,V2,...; 'farm' with --project: the farm's; no SPEC: "
                             "show it); build-prereleases {on,off,farm}; add-target ABI "
                             "PLATFORM [--os-release R] (build for this target, on OS release "
                             "R only if given: the way to add one besides a slave with an "
                             "enrolled key); retire-target ABI PLATFORM (build for it no "
                             "more); failures [N]: the latest N failed attempts, who "
                             "made each and whether it counts yet")
    parser.add_argument("value", nargs="?", metavar="VALUE",
                        help="MIB for min-free-space, SPEC for build-policy, on/off/farm for "
                             "build-prereleases, ABI for add-target and retire-target, N for "
                             "failures")
    parser.add_argument("platform", nargs="?", metavar="PLATFORM",
                        help="for add-target and retire-target: the platform tag, such as "
                             "linux_aarch64")
    parser.add_argument("--os-release", metavar="RELEASE",
                        help="for add-target: build this target only on slaves of this OS "
                             "release (as they report it, such as 'Debian 12')")
    parser.add_argument("--project", metavar="NAME",
                        help="for build-policy and build-prereleases: this project's own "
                             "setting rather than the farm's; for failures: only its")
    options = settings.load_with(tool_settings.ControlConfig, parser, argv)
    payload: dict = {}
    if options.action == "min-free-space":
        payload = {"mib": options.mib}
    elif options.action == "build-policy":
        payload = {"package": options.project, "policy": options.value, "prereleases": None}
    elif options.action == "build-prereleases":
        payload = {"package": options.project, "policy": None, "prereleases": options.value}
    elif options.action.endswith("-target"):
        payload = {"abi_tag": options.value, "platform_tag": options.platform,
                   "os_release": options.os_release,
                   "active": options.action == "add-target"}
    elif options.action == "failures":
        payload = {"package": options.project,
                   "limit": int(options.value) if options.value is not None else FAILURES_SHOWN}
    client = _client(options.client)
    try:
        if options.action == "failures":
            reply, answer = client.request("FAILURES", payload)
            if reply == "ERROR":
                raise PiwheelsError(answer["message"])
            print(format_failures(answer["failures"]))
        else:
            print(client.command(CONTROL_ACTIONS[options.action], payload))
    finally:
        client.close()
    return 0


def format_failures(failures: list[dict]) -> str:
    """piw-control failures: one line per failed attempt, newest first, saying who
    made it and where it left the release (retrying, counts, built since)."""
    if not failures:
        return "no failed attempts"
    header = ("started (UTC)", "project", "version", "target", "builder", "result", "outcome",
              "reason")
    rows = [header] + [(
        time.strftime("%Y-%m-%d %H:%M", time.gmtime(f["started"])), f["package"],
        f["version"], f"{f['abi_tag']} {f['platform_tag']}", f["builder"], f["status"],
        f["outcome"],
        (f["reason"] or "").splitlines()[0] if f["reason"] else "",
    ) for f in failures]
    widths = [max(len(row[n]) for row in rows) for n in range(len(header) - 1)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)),
                                 row[-1]]).rstrip() for row in rows)


def control_main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(_control, argv)
