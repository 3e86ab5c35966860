"""Run by the build interpreter inside the sandbox: install a wheel into a fresh venv and import it.

``python -I smoke_probe.py WHEEL VENV MODULES_JSON``

It makes a venv at VENV (``--without-pip``: nothing but the interpreter),
then runs that venv's interpreter on this file again, which installs WHEEL
into its own scheme as the wheel format specifies (the root into purelib or
platlib as the WHEEL file says, each ``*.data/KEY/`` directory into the
scheme's KEY path; byte-compiling and rewriting RECORD are left out, as they
change nothing an import sees) and imports each module of MODULES_JSON in
turn, in that one process.  The answer is one line, ``PIWHEELS-SMOKE {"answers":
{MODULE: {"ok": true} | {"missing": NAME} | {"error": TRACEBACK}}}`` or
``PIWHEELS-SMOKE {"failure": WHY}``: "missing" is a module that the import
needs and the wheel does not provide (another distribution, not installed).
Before each import a line ``PIWHEELS-SMOKE {"importing": MODULE}`` says which
one runs, so an import that ends the process is still named.  It runs with no network.  This file is copied into the sandbox and must not
import piwheels.
"""

import json
import os
import sys

# the rest is imported where it is needed: each import here costs every
# module's process its start-up time

MARKER = "PIWHEELS-SMOKE "
#: How much of a failed import's traceback is kept.
TRACEBACK_CHARS = 8000
#: The scheme keys a wheel's ``*.data`` directory may use.
DATA_KEYS = ("purelib", "platlib", "headers", "scripts", "data")


def _answer(payload):
    """One answer line, on the standard output the process started with (an
    import may have replaced ``sys.stdout``)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os.write(1, ("\n" + MARKER + json.dumps(payload) + "\n").encode())


def _install(wheel):
    """Spread *wheel* into this (venv) interpreter's scheme."""
    import sysconfig
    import zipfile
    paths = sysconfig.get_paths()
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = sorted({n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")})
        if not info:
            raise ValueError("the wheel has no .dist-info directory")
        wheel_file = archive.read(info[0] + "/WHEEL").decode("utf-8", "replace")
        purelib = "root-is-purelib: true" in wheel_file.lower()
        root = paths["purelib" if purelib else "platlib"]
        data_dir = info[0][:-len(".dist-info")] + ".data"
        for member in archive.infolist():
            name = member.filename
            parts = name.split("/")
            if name.startswith("/") or ".." in parts or "\\" in name:
                raise ValueError(f"the wheel has a member outside its tree: {name!r}")
            if member.is_dir():
                continue
            if parts[0] == data_dir:
                if len(parts) < 3 or parts[1] not in DATA_KEYS:
                    raise ValueError(f"the wheel has an unknown data directory: {name!r}")
                target = os.path.join(paths[parts[1]], *parts[2:])
            else:
                target = os.path.join(root, *parts)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                while True:
                    chunk = source.read(1024 * 1024)
                    if not chunk:
                        break
                    out.write(chunk)
            mode = (member.external_attr >> 16) & 0o777
            if mode & 0o111:
                os.chmod(target, 0o755)


def _import_one(module, own):
    """Import *module* and answer for it."""
    import importlib
    import traceback
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing and missing not in own:
            return {"missing": exc.name}
        return {"error": traceback.format_exc()[-TRACEBACK_CHARS:]}
    except BaseException:  # SystemExit and KeyboardInterrupt are failures too
        return {"error": traceback.format_exc()[-TRACEBACK_CHARS:]}
    return {"ok": True}


def _inside_venv(wheel, modules):
    """In the venv's interpreter: install, then import each module in turn."""
    try:
        _install(wheel)
    except Exception as exc:
        _answer({"failure": f"installing the wheel failed: {exc.__class__.__name__}: {exc}"})
        return 0
    import importlib
    importlib.invalidate_caches()
    answers = {}
    own = set(modules)
    for module in modules:
        # if the import ends this process, the last line names the module it was in
        _answer({"importing": module})
        answers[module] = _import_one(module, own)
    _answer({"answers": answers})
    return 0


def main(argv):
    if argv[1:2] == ["--inside"]:
        return _inside_venv(argv[2], json.loads(argv[3]))
    wheel, venv_dir, modules = argv[1], argv[2], argv[3]
    import subprocess
    import venv
    try:
        venv.EnvBuilder(with_pip=False, symlinks=True).create(venv_dir)
    except Exception as exc:
        _answer({"failure": f"making the venv failed: {exc.__class__.__name__}: {exc}"})
        return 0
    python = os.path.join(venv_dir, "bin", "python")
    return subprocess.run([python, "-I", __file__, "--inside", wheel, modules],
                          stdin=subprocess.DEVNULL).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
