"""Run by the build interpreter inside the sandbox: an sdist's dynamic build requirements.

``python -I requires_probe.py SDIST BUILD_SYSTEM_JSON WHEEL_DIR SCRATCH``

It unpacks SDIST into SCRATCH, unzips the wheels of WHEEL_DIR (the build
dependencies fetched so far) into an import path for the backend, and asks the
backend's ``get_requires_for_build_wheel`` hook (through the copy of
pyproject_hooks that pip vendors) what else it needs.  The answer is one line,
``PIWHEELS-REQUIRES {"requires": [...], "missing": [...]}``: every requirement
the hook named, and those of them (whose markers hold here) that no fetched
wheel satisfies.  It runs with no network, so it can only find out, never
fetch.  This file is copied into the sandbox and must not import piwheels.
"""

import json
import os
import sys
import tarfile
import zipfile

MARKER = "PIWHEELS-REQUIRES "


def _unpack(sdist, scratch):
    source = os.path.join(scratch, "source")
    os.makedirs(source)
    if sdist.endswith(".zip"):
        with zipfile.ZipFile(sdist) as archive:
            archive.extractall(source)
    else:
        with tarfile.open(sdist) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(source, filter="data")
            else:
                archive.extractall(source)
    entries = os.listdir(source)
    if len(entries) == 1 and os.path.isdir(os.path.join(source, entries[0])):
        return os.path.join(source, entries[0])
    return source


def _environment(wheel_dir, scratch):
    path = os.path.join(scratch, "backend-env")
    os.makedirs(path)
    for name in sorted(os.listdir(wheel_dir)):
        if name.endswith(".whl"):
            with zipfile.ZipFile(os.path.join(wheel_dir, name)) as wheel:
                wheel.extractall(path)
    return path


def _missing(requires, env_path):
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return list(requires)
    have = {}
    for dist in metadata.distributions(path=[env_path]):
        have.setdefault(canonicalize_name(dist.metadata["Name"] or ""), dist.version)
    missing = []
    for text in requires:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        version = have.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing


def main(argv):
    sdist, system_json, wheel_dir, scratch = argv[1:5]
    system = json.loads(system_json)
    try:
        from pip._vendor.pyproject_hooks import BuildBackendHookCaller, default_subprocess_runner
    except ImportError:  # pip < 23
        from pip._vendor.pep517.wrappers import Pep517HookCaller as BuildBackendHookCaller
        from pip._vendor.pep517.wrappers import default_subprocess_runner
    source = _unpack(sdist, scratch)
    env_path = _environment(wheel_dir, scratch)

    def runner(cmd, cwd=None, extra_environ=None):
        extra = dict(extra_environ or {})
        extra["PYTHONPATH"] = env_path
        default_subprocess_runner(cmd, cwd=cwd, extra_environ=extra)

    caller = BuildBackendHookCaller(
        source, system["backend"], backend_path=system["backend_path"] or None,
        runner=runner, python_executable=sys.executable)
    requires = [str(r) for r in caller.get_requires_for_build_wheel()]
    print(MARKER + json.dumps({"requires": requires, "missing": _missing(requires, env_path)}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
