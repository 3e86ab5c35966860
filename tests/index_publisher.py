"""The master's publishing end for the serving and client tests.

:class:`Publisher` runs build_recorder and index_writer, the real master tasks,
on a throw-away database and feeds them as the slave driver and the upstream
follower do, so the output tree a web server is given is the farm's own.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Optional

import zmq

from farm import task_failure

from piwheels.index_pages import Site
from piwheels.master.build_recorder import BuildRecorder
from piwheels.master.index_writer import IndexWriter
from piwheels.master.task import TaskControl
from piwheels.protocols import INDEX_REQUESTS, RECORD_REQUESTS, SUPERVISOR
from piwheels.transport import Socket
from piwheels.wheel_facts import inspect_wheel


def clean_env(home: Path) -> dict[str, str]:
    """No pip or uv configuration from this machine: only the index a command names."""
    return {
        "PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "LC_ALL": "C.UTF-8",
        "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1", "UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never",
        "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1",
    }


def let_others_in(path: Path) -> list[tuple[Path, int]]:
    """Let every user through the directories down to *path*; what to restore."""
    changed = []
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & 0o001:
            changed.append((directory, mode))
            directory.chmod(mode | 0o001)
    return changed


class Publisher:
    """build_recorder and index_writer as piw-master runs them, fed as the slave driver
    and the upstream follower feed them."""

    def __init__(self, dsn: str, output: Path, site: Site, incoming: Path,
                 **writer_options) -> None:
        self.incoming = incoming
        incoming.mkdir(parents=True, exist_ok=True)
        self.ctx = zmq.Context()
        self.supervisor = Socket.make(self.ctx, zmq.PULL, SUPERVISOR.reverse())
        self.supervisor.bind(SUPERVISOR.address)
        self.tasks = [
            IndexWriter(self.ctx, dsn=dsn, output_path=output, site=site,
                        **{"coalesce_s": 0.05, "summary_interval_s": 0.5,
                           **writer_options}),
            BuildRecorder(self.ctx, dsn=dsn, output_path=output),
        ]
        self.controls = [TaskControl(self.ctx, task.name) for task in self.tasks]
        self.records = Socket.make(self.ctx, zmq.PUSH, RECORD_REQUESTS)
        self.records.connect(RECORD_REQUESTS.address)
        self.index = Socket.make(self.ctx, zmq.PUSH, INDEX_REQUESTS)
        self.index.connect(INDEX_REQUESTS.address)
        for task in self.tasks:
            task.start()

    def record(self, project: str, version: str, target: tuple[str, str], wheel: Path, *,
               os_release: Optional[str] = None) -> None:
        """A successful build of *project* *version* for the build *target* (abi, platform),
        on a builder of *os_release* (None: not known), whose verified wheel waits in the
        transfer dir."""
        abi_tag, platform_tag = target
        arrived = self.incoming / wheel.name
        shutil.copyfile(wheel, arrived)
        facts = inspect_wheel(arrived).to_dict()
        self.records.send("RECORD", {
            "package": project, "version": version, "abi_tag": abi_tag,
            "platform_tag": platform_tag, "os_release": os_release,
            "slave_label": "serving-test", "builder": "serving-test", "started": time.time(),
            "duration_s": 2.5,
            "status": "success", "reason": None, "log": f"built {wheel.name}\n",
            "files": [{**facts, "path": str(arrived)}],
        })

    def changed(self, project: str) -> None:
        """What the upstream follower says after it changed *project* in the database."""
        self.index.send("PACKAGE", {"package": project})

    def check(self) -> None:
        failed = task_failure(self.supervisor)
        if failed:
            raise AssertionError(f"a master task failed: {failed}")

    def stop(self) -> None:
        for control in self.controls:
            control.send("QUIT")
        for task in self.tasks:
            task.join(10)
        try:
            self.check()
        finally:
            for sock in (*self.controls, self.records, self.index, self.supervisor):
                sock.close()
            self.ctx.destroy(linger=0)  # never term(): a failed test may have left sockets open
