"""admin_service: the master's control socket and status feed.

Admin tools and monitors send requests to the control socket (one reply
each).  Tasks report their state here; the service keeps the latest picture
for monitors that connect (SNAPSHOT) and republishes every change on the
status PUB socket.  Requests that change the database are done here, with
this task's own connection; the other tasks are told through messages.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import zmq
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from ..build_policy import parse_policy
from ..db_policy import UNCHANGED
from ..errors import BindError, PiwheelsError
from ..names import canonical_name, normal_version
from ..protocols import (
    BUILD_QUEUE, CONTROL, DRIVER_COMMANDS, FOLLOWER_COMMANDS, INDEX_REQUESTS, QUEUE_REQUESTS,
    RECORD_REQUESTS, STATS_COMMANDS, STATUS, STATUS_REPORTS, SUPERVISOR,
)
from ..storage import OutputTree, remove_quietly
from ..tags import Target, build_abi_of, build_abi_problem, target_problem
from ..wheel_facts import UnpackLimits, check_wheel, find_apt_dependencies
from . import bulk_changes
from .db_task import DatabaseTask
from .task import Clock

OPERATOR_HOLD = "paused by the operator"
#: How often the master's summary goes out on the status feed.
MASTER_STATUS_INTERVAL_S = 1.0


class AdminService(DatabaseTask):
    name = "admin_service"
    dropped_message_level = logging.WARNING

    def __init__(self, ctx: zmq.Context, *, dsn: str, control_address: str,
                 status_address: str, output_path: Path, max_wheel_size: int,
                 unpack_limits: UnpackLimits, socket_mode: int = 0o660,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(ctx, dsn=dsn, clock=clock)
        self.tree = OutputTree(output_path)
        self.max_wheel_size = max_wheel_size
        self.unpack_limits = unpack_limits
        self.slaves: dict[int, dict] = {}
        self.tasks: dict[str, dict] = {}
        self.task_reports: dict[str, int] = {}  # reports received, per task
        self.rebuild: Optional[dict] = None  # the last piw-rebuild, while it is followed
        self.rebuilds = 0
        self.master_paused = False
        self.started_at = time.time()  # wall-clock, for monitors
        self.control = self.socket(zmq.ROUTER, CONTROL.reverse())
        _prepare_ipc(control_address)
        self.control.bind(control_address)
        _restrict_ipc(control_address, socket_mode)
        self.status_pub = self.socket(zmq.PUB, STATUS)
        _prepare_ipc(status_address)
        self.status_pub.bind(status_address)
        _restrict_ipc(status_address, socket_mode)
        self.reports = self.socket(zmq.PULL, STATUS_REPORTS.reverse())
        self.reports.bind(STATUS_REPORTS.address)
        self.driver = self._push(DRIVER_COMMANDS, DRIVER_COMMANDS.address)
        self.index = self._push(INDEX_REQUESTS, INDEX_REQUESTS.address)
        self.queue = self._push(QUEUE_REQUESTS, QUEUE_REQUESTS.address)
        self.cancels = self._push(BUILD_QUEUE, BUILD_QUEUE.address)
        self.records = self._push(RECORD_REQUESTS, RECORD_REQUESTS.address)
        self.follower = self._push(FOLLOWER_COMMANDS, FOLLOWER_COMMANDS.address)
        self.stats = self._push(STATS_COMMANDS, STATS_COMMANDS.address)
        self.supervisor = self._push(SUPERVISOR, SUPERVISOR.address)
        self.register(self.reports, self.handle_report)
        self.register(self.control, self.handle_control)
        self.every(MASTER_STATUS_INTERVAL_S, self.publish_master)
        self.handlers: dict[str, Callable[[dict], tuple[str, dict]]] = {
            "SNAPSHOT": self.do_snapshot,
            "PAUSE": self.do_pause,
            "RESUME": self.do_resume,
            "QUIT": self.do_quit,
            "SLAVE": self.do_slave,
            "ADD": self.do_add,
            "REMOVE": self.do_remove,
            "REBUILD": self.do_rebuild,
            "IMPORT": self.do_import,
            "RECONCILE": self.do_reconcile,
            "MIN_FREE_SPACE": self.do_min_free_space,
            "PROJECT_STATUS": self.do_project_status,
            "POLICY": self.do_policy,
            "BULK": self.do_bulk,
            "TARGET": self.do_target,
            "FAILURES": self.do_failures,
        }

    def _push(self, protocol, address: str):
        sock = self.socket(zmq.PUSH, protocol)
        sock.connect(address)
        return sock

    # --- status ---------------------------------------------------------------

    def handle_report(self) -> None:
        msg = self.recv_or_log(self.reports)
        if msg is None:
            return
        name, payload = msg
        if name == "SLAVE":
            self.slaves[payload["slave"]["slave_id"]] = payload["slave"]
            self.status_pub.send("SLAVE", payload)
        elif name == "SLAVE_GONE":
            self.slaves.pop(payload["slave_id"], None)
            self.status_pub.send("SLAVE_GONE", payload)
        else:
            self.tasks[payload["task"]] = payload["status"]
            self.task_reports[payload["task"]] = self.task_reports.get(payload["task"], 0) + 1

    def master_status(self) -> dict:
        status = {"paused": self.master_paused, "slaves": len(self.slaves),
                  "started_at": self.started_at, "rebuild": self.rebuild_status()}
        for task, values in sorted(self.tasks.items()):
            status[task] = values
        return status

    def rebuild_status(self) -> Optional[dict]:
        """How far the index writer is with the last piw-rebuild (None: none asked).

        ``total`` is the projects asked for and ``pending`` those the writer still
        has to write (for one project or page, other changes included; for every
        page, what is left of the full rewrite, which builds' pages do not keep
        from ending); ``settled`` says the
        writer has reported twice since the request, so its figures include it
        (its first report may have been made before it saw the request).
        """
        if self.rebuild is None:
            return None
        writer = self.tasks.get("index_writer", {})
        reports = self.task_reports.get("index_writer", 0) - self.rebuild["mark"]
        return {"rebuild_id": self.rebuild["rebuild_id"], "part": self.rebuild["part"],
                "total": self.rebuild["total"],
                "pending": writer.get("rewrite_pending" if self.rebuild["part"] == "all"
                                      else "dirty", 0),
                "root_pending": bool(writer.get("root_pending")), "settled": reports >= 2}

    def publish_master(self) -> None:
        self.status_pub.send("MASTER", {"master": self.master_status()})

    # --- control requests -------------------------------------------------------

    def handle_control(self) -> None:
        address, name, payload = self.control.recv_from()
        if name is None:
            self.log_limited("bad request", logging.WARNING,
                             "refused a bad control message: %s", payload)
            self.control.send_to(address, "ERROR", {"message": f"bad request: {payload}"[:9000]})
            return
        try:
            reply, answer = self.handlers[name](payload)
        except PiwheelsError as exc:
            # refused with its reason; its transaction left nothing behind (a lost
            # database connection too: the next request connects again)
            self.log_limited(f"refused {name}", logging.WARNING, "refused %s: %s", name, exc)
            reply, answer = "ERROR", {"message": str(exc)}
        self.control.send_to(address, reply, answer)

    def do_snapshot(self, _: dict) -> tuple[str, dict]:
        return "SNAPSHOT", {"master": self.master_status(),
                            "slaves": sorted(self.slaves.values(), key=lambda s: s["slave_id"])}

    def do_pause(self, _: dict) -> tuple[str, dict]:
        self.master_paused = True
        self.tell(self.driver, "HOLD", {"reason": OPERATOR_HOLD})
        self.publish_master()
        return "OK", {"message": "the master is paused: no new builds are handed out"}

    def do_resume(self, _: dict) -> tuple[str, dict]:
        self.master_paused = False
        self.tell(self.driver, "RELEASE", {"reason": OPERATOR_HOLD})
        self.publish_master()
        return "OK", {"message": "the master is handing out builds again"}

    def do_quit(self, _: dict) -> tuple[str, dict]:
        self.tell(self.supervisor, "QUIT", {"reason": "asked to stop by the operator"})
        return "OK", {"message": "the master is stopping"}

    def do_slave(self, request: dict) -> tuple[str, dict]:
        slave_id = request["slave_id"]
        if slave_id is not None and slave_id not in self.slaves:
            return "ERROR", {"message": f"there is no slave {slave_id}"}
        self.tell(self.driver, "SLAVE", request)
        who = "every slave" if slave_id is None else f"slave {slave_id}"
        return "OK", {"message": f"{request['action']} requested for {who}"}

    def do_reconcile(self, _: dict) -> tuple[str, dict]:
        self.tell(self.follower, "RECONCILE")
        return "OK", {"message": "reconciling with the upstream index"}

    def do_target(self, request: dict) -> tuple[str, dict]:
        """An operator adds (or re-activates, pins, retires) a build target: slaves
        of an active one are then taken, keyless ones too, and get its queue;
        one pinned to an OS release takes only slaves of that release."""
        action = "add-target" if request["active"] else "retire-target"
        problem = target_problem(request["abi_tag"], request["platform_tag"])
        if problem is not None:
            return "ERROR", {"message": f"{action}: {problem}"}
        target = Target(request["abi_tag"], request["platform_tag"])
        self.db.add_build_target(target, active=request["active"],
                                 os_release=request["os_release"])
        self.tell(self.queue, "REFRESH", {"package": None})
        if not request["active"]:
            return "OK", {"message": f"the farm no longer builds for {target}"}
        on = f" on {request['os_release']} only" if request["os_release"] else ""
        return "OK", {"message": f"the farm builds for {target}{on}"}

    def do_failures(self, request: dict) -> tuple[str, dict]:
        """The latest failed attempts, with the builder answerable for each."""
        rows = self.db.failures(request["package"], request["limit"])
        return "FAILURES", {"failures": [
            {**row, "started": row["started"].timestamp()} for row in rows]}

    def do_min_free_space(self, request: dict) -> tuple[str, dict]:
        """Change --min-free-space while the master runs (until it restarts)."""
        self.tell(self.stats, "MIN_FREE", {"bytes": request["mib"] * 2**20})
        return "OK", {"message": f"builds are held while under {request['mib']} MiB is free "
                                 "(until the master restarts)"}

    def do_policy(self, request: dict) -> tuple[str, dict]:
        """piw-control build-policy / build-prereleases: the farm's or one project's.

        Validated before anything changes.  The build queue then weighs the
        releases again (on a large farm that takes a while; this socket answers
        at once) and sends the queue afresh (REPLACE), so nothing the policy now
        leaves out is handed out any more.
        """
        db, spec, switch = self.db, request["policy"], request["prereleases"]
        if request["package"] is None:
            if "farm" in (spec, switch):
                return "ERROR", {"message": "'farm' is for a project (--project NAME): the "
                                            "farm's own policy names what it builds"}
            policy = None if spec is None else parse_policy(spec)
            prereleases = None if switch is None else switch == "on"
            db.set_farm_policy(policy, prereleases, weigh=False)
            current, builds_pre = db.farm_policy()
            what = "the farm"
            state = (f"the farm builds {current.describe()} ({current.spec}), "
                     f"{'with' if builds_pre else 'without'} pre-releases")
            lasting = " (in force across restarts until the configured build-policy changes)"
        else:
            package = canonical_name(request["package"])
            policy = UNCHANGED if spec is None else None if spec == "farm" else parse_policy(spec)
            prereleases = UNCHANGED if switch is None else None if switch == "farm" \
                else switch == "on"
            db.set_project_policy(package, policy=policy, prereleases=prereleases, weigh=False)
            own, own_pre = db.project_policy(package)
            farm, farm_pre = db.farm_policy()
            what = package
            state = (f"{package} builds "
                     + (f"{own.describe()} ({own.spec})" if own else
                        f"as the farm does ({farm.spec})")
                     + (", with" if (farm_pre if own_pre is None else own_pre) else ", without")
                     + " pre-releases" + (" as the farm does" if own_pre is None else ""))
            lasting = ""
        if spec is None and switch is None:
            return "OK", {"message": state}
        self.tell(self.queue, "POLICY",
                  {"package": None if request["package"] is None else what})
        self.log.info("build policy of %s changed: %s", what, state)
        return "OK", {"message": f"{state}{lasting}; the build queue follows in seconds"}

    def do_add(self, request: dict) -> tuple[str, dict]:
        """piw-add: a project or release, and its skip, yank and alias settings."""
        db, done = self.db, []
        package = canonical_name(request["package"])
        version = None if request["version"] is None else normal_version(request["version"])
        with db.transaction():
            if db.add_package(request["package"]):
                done.append(f"added {package}")
            if version is not None:
                if db.add_version(package, version, released=datetime.now(timezone.utc),
                                  has_sdist=True):
                    done.append(f"added {package} {version}")
                if request["skip"]:
                    db.skip_version(package, version, request["skip"])
                    done.append(f"{package} {version} will not be built: {request['skip']}")
                if request["unskip"]:
                    db.skip_version(package, version, None)
                    done.append(f"{package} {version} may be built again")
                if request["yank"]:
                    db.yank_version(package, version, request["yank_reason"])
                    done.append(f"yanked {package} {version}")
                if request["unyank"]:
                    db.unyank_version(package, version)
                    done.append(f"unyanked {package} {version}")
            else:
                if request["skip"]:
                    db.skip_package(package, request["skip"])
                    done.append(f"{package} will not be built: {request['skip']}")
                if request["unskip"]:
                    db.skip_package(package, None)
                    done.append(f"{package} may be built again")
            if request["alias"]:
                db.add_alias(package, request["alias"])
                done.append(f"{request['alias']} is another name for {package}")
        if request["skip"] or request["yank"]:
            self.tell(self.cancels, "CANCEL", {"package": package, "version": version})
        self.changed(package)
        return "OK", {"message": "; ".join(done) or f"{package} was already as asked"}

    def do_project_status(self, request: dict) -> tuple[str, dict]:
        """piw-add --status: the operator's PEP 792 status; the stricter of it and
        upstream's is in force (a quarantine withholds files and stops builds)."""
        package = canonical_name(request["package"])
        status = request["status"]
        with self.db.transaction():
            changed = self.db.set_operator_status(package, status, request["reason"])
            project = self.db.get_project(package)
        now = project.status
        if not changed:
            return "OK", {"message": f"{package} was already as asked (it is {now.status})"}
        if now.withheld:
            self.tell(self.cancels, "CANCEL", {"package": package, "version": None})
        self.changed(package)
        said = "cleared the operator's status" if status == "active" else f"marked {status}"
        upstream = f"; upstream's {now.status} stays in force" \
            if now.set_by == "upstream" else ""
        return "OK", {"message": f"{package}: {said}{upstream}"}

    def do_remove(self, request: dict) -> tuple[str, dict]:
        """piw-remove: a project or release, or only its builds (so they are made again)."""
        db = self.db
        package = canonical_name(request["package"])
        version = None if request["version"] is None else normal_version(request["version"])
        what = package if version is None else f"{package} {version}"
        with db.transaction():
            project = db.get_project(package)
            doomed = [] if project is None else [
                f.filename for v in project.versions if version in (None, v.version)
                for b in v.builds for f in b.files]
            doomed_logs = [] if project is None else [
                b.build_id for v in project.versions if version in (None, v.version)
                for b in v.builds]
            if request["builds_only"] or request["skip"]:
                known = db.get_versions(package) if project is not None else None
                if known is None:
                    return "ERROR", {"message": f"unknown package {package}"}
                if version is not None and version not in known:
                    return "ERROR", {"message": f"unknown version {what}"}
                count = db.remove_builds(package, version)
                if request["skip"]:
                    if version is None:
                        db.skip_package(package, request["skip"])
                    else:
                        db.skip_version(package, version, request["skip"])
                    message = f"removed {count} build(s) of {what}; it will not be built: " \
                              f"{request['skip']}"
                else:
                    message = f"removed {count} build(s) of {what}; they will be built again"
            elif version is None:
                if not db.remove_package(package):
                    return "ERROR", {"message": f"unknown package {package}"}
                message = f"removed {what} and its files"
            else:
                if not db.remove_version(package, version):
                    return "ERROR", {"message": f"unknown version {what}"}
                message = f"removed {what} and its files"
        self._remove_outputs(package, doomed, doomed_logs)
        job = {"package": package, "version": version}
        if request["builds_only"] and not request["skip"]:
            # built a moment ago, the slave driver would not hand it out for a while
            self.tell(self.cancels, "REQUEUE", job)
        else:
            self.tell(self.cancels, "CANCEL", job)
        self.changed(package)
        return "OK", {"message": message}

    def do_bulk(self, request: dict) -> tuple[str, dict]:
        """piw-add --skip/--unskip and piw-remove over many projects or releases.

        A dry run does the same work and rolls it back, so its count is exactly
        what the real request would change.
        """
        db = self.db

        class DryRun(Exception):
            pass

        try:
            with db.transaction():
                target = bulk_changes.plan(db, request["package"], request["versions"])
                outcome = bulk_changes.apply(db, target, request["action"], request["reason"])
                if request["dry_run"]:
                    raise DryRun
        except DryRun:
            return "MATCHED", {"message": outcome.summary, "changes": outcome.changes}
        for package in sorted(outcome.packages):
            self._remove_outputs(package, outcome.filenames.get(package, []), [])
            self.changed(package)
        self._remove_outputs(None, [], outcome.build_ids)
        for name, jobs in (("CANCEL", outcome.cancel), ("REQUEUE", outcome.requeue)):
            for package, version in jobs:
                self.tell(self.cancels, name, {"package": package, "version": version})
        return "OK", {"message": outcome.summary}

    def _remove_outputs(self, package: Optional[str], filenames: list[str],
                        build_ids: list[int]) -> None:
        """Take removed builds' wheels and logs out of the output tree.

        The index writer prunes what a page stops listing, but a wheel recorded
        since the last page was written was never listed there; and no page
        lists logs.
        """
        for filename in filenames:
            self.tree.unpublish(package, filename)
        for build_id in build_ids:
            remove_quietly(self.tree.build_log(build_id))

    def do_rebuild(self, request: dict) -> tuple[str, dict]:
        part, package = request["part"], request["package"]
        if part == "home":
            self.tell(self.index, "HOME")
        elif part == "index":
            self.tell(self.index, "ROOT")
        elif part == "project" and package:
            package = canonical_name(package)
            if self.db.get_project(package) is None:
                return "ERROR", {"message": f"unknown package {package}"}
            self.tell(self.index, "REWRITE", {"package": package})
        else:
            self.tell(self.index, "ALL")
        what = f"project {package}" if part == "project" and package else part
        self.rebuilds += 1
        total = {"home": 0, "index": 0, "project": 1 if package else None}.get(part)
        if total is None:
            total = len(self.db.all_packages())
        self.rebuild = {"rebuild_id": self.rebuilds, "part": what, "total": total,
                        "mark": self.task_reports.get("index_writer", 0)}
        return "REBUILDING", {"message": f"rewriting {what}", "rebuild_id": self.rebuilds}

    def do_import(self, request: dict) -> tuple[str, dict]:
        """piw-import: a wheel built elsewhere, checked exactly like a received one.

        The wheel is copied beside the transfers first and the copy is what is
        checked and published, so a file changed meanwhile cannot slip in.
        """
        path = Path(request["path"])
        if not path.is_file():
            return "ERROR", {"message": f"{path} is not a file the master can read"}
        try:
            name, version, _, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename as exc:
            return "ERROR", {"message": f"{path.name}: {exc}"}
        package = canonical_name(str(name))
        tag = next(iter(tags))
        abi_tag = request["abi_tag"] or build_abi_of(tag)
        if abi_tag is None:
            return "ERROR", {"message": f"{path.name} does not say which ABI it was built "
                                        "for; name one with --abi"}
        problem = build_abi_problem(abi_tag)
        if problem is not None:
            return "ERROR", {"message": f"--abi: {problem}"}
        platform_tag = request["platform_tag"] or (
            tag.platform if tag.platform != "any" else next(
                (t.platform_tag for t in self.db.get_build_targets(active_only=False)
                 if t.abi_tag == abi_tag), None))
        if platform_tag is None:
            return "ERROR", {"message": f"{path.name} does not say which platform it was "
                                        f"built for, and the farm has no {abi_tag} target; "
                                        "name one with --platform"}
        problem = target_problem(abi_tag, platform_tag)
        if problem is not None:
            return "ERROR", {"message": f"--platform: {problem}"}
        project = self.db.get_project(package)
        if project is not None and any(
                f.filename == path.name
                for v in project.versions for b in v.builds for f in b.files):
            return "ERROR", {"message": f"{path.name} is already in the index; remove its "
                                        f"build first (piw-remove --builds)"}
        staged = self.tree.import_copy()
        try:
            shutil.copyfile(path, staged)
            facts = check_wheel(
                staged, filename=path.name, package=str(name), version=str(version),
                claimed=None, builder_abi=abi_tag,
                builder_platform=None if tag.platform == "any" else tag.platform,
                max_size=self.max_wheel_size, unpack=self.unpack_limits)
            apt = find_apt_dependencies(staged)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            return "ERROR", {"message": f"cannot read {path}: {exc.strerror or exc}"}
        except PiwheelsError:
            staged.unlink(missing_ok=True)
            raise
        with self.db.transaction():
            self.db.add_package(str(name))
            self.db.add_version(str(name), str(version), has_sdist=False)
            # a target the farm does not build for is recorded, but not made active
            self.db.register_build_target(Target(abi_tag, platform_tag), active=False)
        record = {**dataclasses.replace(facts, apt_dependencies=apt).to_dict(),
                  "path": str(staged)}
        self.tell(self.records, "RECORD", {
            "package": str(name), "version": str(version), "abi_tag": abi_tag,
            "platform_tag": platform_tag,
            "slave_label": request["label"], "builder": request["label"],
            "started": time.time(), "duration_s": 0.0,
            "status": "success", "reason": None,
            "log": f"imported from {path} by piw-import\n", "files": [record],
            "claimed_diagnosis": None,
        })
        return "OK", {"message": f"imported {path.name} as a {abi_tag} {platform_tag} build of "
                                 f"{package} {version}"}

    def changed(self, package: str) -> None:
        self.tell(self.index, "PACKAGE", {"package": package})
        self.tell(self.queue, "REFRESH", {"package": package})


def _prepare_ipc(address: str) -> None:
    """Make the directory of an ipc:// socket, and clear a stale socket file.

    A socket file someone still listens on is another master's: it is left
    alone and the address refused, as a TCP port in use would be.
    """
    if address.startswith("ipc://"):
        path = Path(address[len("ipc://"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BindError(f"cannot listen on {address!r}: {exc.strerror} "
                            f"({exc.filename})") from None
        if path.is_socket():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(path))
                except OSError:
                    path.unlink()  # nobody answers: left by a master that died
                else:
                    raise BindError(f"cannot listen on {address!r}: another process "
                                    "(a running master?) is listening there")


def _restrict_ipc(address: str, mode: int) -> None:
    """An ipc socket only the master's user and group may use."""
    if address.startswith("ipc://"):
        os.chmod(address[len("ipc://"):], mode)

