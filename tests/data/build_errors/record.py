"""Record the build-error corpus: run the real tools, keep what they print.

    python tests/data/build_errors/record.py [--only NAME ...]

Each case runs a real compiler, linker, pkg-config, cmake, meson, setuptools,
maturin, setuptools-rust, pip or the slave's own fetch code in a scratch
directory, and writes ``NAME.json`` here with what it printed (the tail of it)
and the expectation stated below.  The expectation is written by hand, not
taken from the classifier: ``tests/test_diagnosis.py`` checks the classifier
against it.  Run it on a builder like the farm's (Debian bookworm, gcc 12) that
lacks the -dev packages named; a case whose tool does not fail is reported and
not written.  See README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent.parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent))

from failing_sdists import FAILING_SDISTS, build_log  # noqa: E402

from piwheels.diagnosis import OUT_OF_MEMORY_REASON, TIMEOUT_REASON  # noqa: E402

#: Lines of a tool's output kept (its end: where errors are).
KEEP_LINES = 60
#: Where wheels of maturin, setuptools-rust and meson come from (pip's own config if unset).
WHEELS = os.environ.get("RECORD_WHEELS", "/opt/pypi/files")
PLAIN_PATH = "/usr/bin:/bin"


def sh(script: str, *, files: Optional[dict[str, str]] = None, env: Optional[dict[str, str]] = None,
       utf8: bool = False) -> tuple[int, str]:
    """Run *script* with bash in a scratch directory holding *files*."""
    with tempfile.TemporaryDirectory(prefix="record-") as scratch:
        for rel, text in (files or {}).items():
            path = Path(scratch, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        run_env = {"PATH": PLAIN_PATH, "HOME": scratch,
                   "LC_ALL": "C.UTF-8" if utf8 else "C", **(env or {})}
        done = subprocess.run(["bash", "-c", script], cwd=scratch, env=run_env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace", timeout=300)
        return done.returncode, done.stdout


def header(name: str, compiler: str = "gcc") -> Callable[[], tuple[int, str]]:
    ext = "cpp" if compiler == "g++" else "c"
    return lambda: sh(f"{compiler} -c module.{ext} -o module.o",
                      files={f"module.{ext}": f"#include <{name}>\nint x;\n"})


def link(library: str) -> Callable[[], tuple[int, str]]:
    return lambda: sh(f"gcc -c lib.c -o lib.o && gcc -shared lib.o -l{library} -o mod.so",
                      files={"lib.c": "int x;\n"})


def farm_sdist(name: str) -> Callable[[], tuple[int, str]]:
    def run() -> tuple[int, str]:
        with tempfile.TemporaryDirectory(prefix="record-") as scratch:
            return build_log(FAILING_SDISTS[name], Path(scratch), [Path(WHEELS)])
    return run


#: Where wheels of older pips are (pip download pip==23.0.1 pip==24.0 pip==25.1.1).
PIPS = Path(os.environ.get("RECORD_PIPS", "/tmp/pips"))


def farm_sdist_with_pip(name: str, pip: str) -> Callable[[], tuple[int, str]]:
    """The failing sdist built by pip *pip* (in a venv of its own, with setuptools)."""
    def run() -> tuple[int, str]:
        with tempfile.TemporaryDirectory(prefix="record-") as scratch:
            venv = Path(scratch, "venv")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin/pip"), "install", "-q", "--no-index",
                            "--find-links", WHEELS, *map(str, PIPS.glob(f"pip-{pip}-*.whl")),
                            "setuptools", "wheel"], check=True)
            return build_log(FAILING_SDISTS[name], Path(scratch, "work"), [Path(WHEELS)],
                             python=str(venv / "bin/python"))
    return run


def in_venv(packages: str, script: str, files: dict[str, str],
            env: Optional[dict[str, str]] = None) -> Callable[[], tuple[int, str]]:
    """*script* after a venv with *packages* (wheels from WHEELS, offline) is made."""
    setup = (f"{sys.executable} -m venv venv >/dev/null && venv/bin/pip install -q "
             f"--no-index --find-links {WHEELS} {packages} >/dev/null && ")
    return lambda: sh(setup + script, files=files, env=env)


def fetch_reason(index_url: str, package: str) -> tuple[int, str]:
    """The slave's own reason when its fetch phase fails (as Builder._build words it)."""
    from piwheels.errors import FetchError
    from piwheels.slave.fetch import Fetcher

    fetcher = Fetcher(index_url)
    try:
        fetcher.sdist(package, "1.0")
    except FetchError as exc:
        return 1, f"fetch phase: {exc}"
    finally:
        fetcher.close()
    return 0, ""


def no_sdist() -> tuple[int, str]:
    from fake_index import FakeIndex

    with tempfile.TemporaryDirectory(prefix="record-") as scratch:
        root = Path(scratch, "index")
        root.mkdir()
        (root / "onlywheel-1.0-py3-none-any.whl").write_bytes(b"PK\x05\x06" + b"\0" * 18)
        index = FakeIndex(root)
        index.start()
        try:
            return fetch_reason(index.url, "onlywheel")
        finally:
            index.stop()


def killed_compiler() -> tuple[int, str]:
    """g++ whose cc1plus is killed, as the kernel's OOM killer does."""
    source = "".join(f"template<int N> struct T{i} {{ enum {{ v = T{i}<N-1>::v + 1 }}; }};\n"
                     f"template<> struct T{i}<0> {{ enum {{ v = 0 }}; }};\n"
                     f"int a{i} = T{i}<800>::v;\n" for i in range(400))
    return sh("g++ -ftemplate-depth=2000 -O2 -c big.cpp -o big.o & gpp=$!; sleep 1.5; "
              "kill -KILL $(pgrep -P $gpp -x cc1plus); wait $gpp",
              files={"big.cpp": source})


def memory_reason() -> tuple[int, str]:
    from piwheels.slave.build_log import failure_reason
    _, output = sh("ulimit -v 1048576; python3 -c 'bytearray(4 * 1024 ** 3)'")
    reason = failure_reason(1, output, memory_bytes=1024 ** 3, pid_limit=0, disk_bytes=0,
                            contained=True, fetched=[])
    assert OUT_OF_MEMORY_REASON.split(" (")[0] in reason
    return 1, reason


MESON_BUILD = "project('m', 'c')\ndependency('libsystemd')\n"
CMAKE_PKG = """\
cmake_minimum_required(VERSION 3.16)
project(m C)
find_package(PkgConfig REQUIRED)
pkg_check_modules(CAIRO REQUIRED cairo)
"""
SWIG_SETUP = """\
from setuptools import setup, Extension
setup(name="swigged", version="1.0",
      ext_modules=[Extension("_swigged", sources=["swigged.i"])])
"""
RUST_SETUP = """\
from setuptools import setup
from setuptools_rust import RustExtension
setup(name="rusty", version="1.0", rust_extensions=[RustExtension("rusty.rusty")])
"""
CARGO = "[package]\nname = 'rusty'\nversion = '1.0.0'\n[lib]\ncrate-type = ['cdylib']\n"
MATURIN_PYPROJECT = ("[build-system]\nrequires = ['maturin']\nbuild-backend = 'maturin'\n"
                     "[project]\nname = 'rusty'\nversion = '1.0'\n")
PACKAGES_SETUP = "from setuptools import setup\nsetup(name='p', version='1.0', packages=['p'])\n"
SONAME_LIB = "int geos_answer(void) { return 42; }\n"
SONAME_EXT = """\
#include <Python.h>
int geos_answer(void);
static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "geosish", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_geosish(void) { geos_answer(); return PyModule_Create(&m); }
"""
INCLUDE_PY = "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()[\"include\"])')"

#: name -> (source description, run, expected cause, wanted, package, kind);
#: "a|b" for the package: a is expected here, b also right where other packages are installed
Case = tuple[str, Callable[[], tuple[int, str]], str, Optional[tuple[str, str]],
             Optional[str], str]
CASES: dict[str, Case] = {
    # missing headers: gcc 12 / g++ 12
    "header-lber": ("gcc 12", header("lber.h"), "missing-header", ("header", "lber.h"),
                    "libldap-dev", "build"),
    "header-ldap": ("gcc 12", header("ldap.h"), "missing-header", ("header", "ldap.h"),
                    "libldap-dev", "build"),
    "header-mysql": ("gcc 12", header("mysql.h"), "missing-header", ("header", "mysql.h"),
                     "libmariadb-dev", "build"),
    "header-libpq": ("gcc 12 (libpq-dev installed, no -I)", header("libpq-fe.h"),
                     "missing-header", ("header", "libpq-fe.h"), "libpq-dev", "build"),
    "header-krb5": ("gcc 12", header("krb5.h"), "missing-header", ("header", "krb5.h"),
                    "libkrb5-dev", "build"),
    "header-cups": ("gcc 12", header("cups/cups.h"), "missing-header",
                    ("header", "cups/cups.h"), "libcups2-dev", "build"),
    "header-sasl": ("gcc 12", header("sasl/sasl.h"), "missing-header",
                    ("header", "sasl/sasl.h"), "libsasl2-dev", "build"),
    "header-libxml": ("gcc 12 (libxml2-dev installed, no -I)", header("libxml/xmlversion.h"),
                      "missing-header", ("header", "libxml/xmlversion.h"), "libxml2-dev", "build"),
    "header-pcap": ("gcc 12", header("pcap.h"), "missing-header", ("header", "pcap.h"),
                    "libpcap0.8-dev", "build"),
    "header-systemd": ("gcc 12", header("systemd/sd-daemon.h"), "missing-header",
                       ("header", "systemd/sd-daemon.h"), "libsystemd-dev", "build"),
    "header-snappy": ("gcc 12", header("snappy-c.h"), "missing-header",
                      ("header", "snappy-c.h"), "libsnappy-dev", "build"),
    "header-alsa": ("gcc 12", header("alsa/asoundlib.h"), "missing-header",
                    ("header", "alsa/asoundlib.h"), "libasound2-dev", "build"),
    "header-geos": ("gcc 12", header("geos_c.h"), "missing-header", ("header", "geos_c.h"),
                    "libgeos-dev", "build"),
    "header-python": ("gcc 12, no -I for Python", header("Python.h"), "missing-header",
                      ("header", "Python.h"), "libpython3.11-dev", "build"),
    "header-boost-python": ("g++ 12", header("boost/python.hpp", "g++"), "missing-header",
                            ("header", "boost/python.hpp"), "libboost1.74-dev|libboost1.81-dev", "build"),
    "header-setuptools-lber": ("setuptools build_ext, gcc 12, pip wheel --verbose",
                               farm_sdist("fail-header"), "missing-header",
                               ("header", "lber.h"), "libldap-dev", "build"),
    # missing libraries: GNU ld 2.40
    "library-ldap": ("GNU ld 2.40", link("ldap"), "missing-library", ("library", "ldap"),
                     "libldap-dev", "build"),
    "library-mysqlclient": ("GNU ld 2.40", link("mysqlclient"), "missing-library",
                            ("library", "mysqlclient"), "libmariadb-dev-compat", "build"),
    "library-pcap": ("GNU ld 2.40", link("pcap"), "missing-library", ("library", "pcap"),
                     "libpcap0.8-dev", "build"),
    "library-snappy": ("GNU ld 2.40", link("snappy"), "missing-library",
                       ("library", "snappy"), "libsnappy-dev", "build"),
    "library-setuptools-sasl2": ("setuptools build_ext, GNU ld 2.40, pip wheel --verbose",
                                 farm_sdist("fail-library"), "missing-library",
                                 ("library", "sasl2"), "libsasl2-dev", "build"),
    "soname-ctypes": ("python3 ctypes at build time",
                      lambda: sh("python3 -c \"import ctypes; ctypes.CDLL('libgeos_c.so.1')\""),
                      "missing-library", ("soname", "libgeos_c.so.1"), "libgeos-c1v5",
                      "build"),
    # missing pkg-config modules
    "pkg-config-pkgconf": ("pkgconf 1.8", lambda: sh("pkg-config --cflags --libs libsystemd"),
                           "missing-pkg-config", ("pkg-config", "libsystemd"), "libsystemd-dev",
                           "build"),
    "pkg-config-mysqlclient": ("mysqlclient's setup.py steps, pip wheel --verbose",
                               farm_sdist("fail-pkg-config"), "missing-pkg-config",
                               ("pkg-config", "mysqlclient"), "libmariadb-dev-compat", "build"),
    "pkg-config-cmake": ("cmake 3.25 pkg_check_modules",
                         lambda: sh("cmake -S . -B build", files={"CMakeLists.txt": CMAKE_PKG}),
                         "missing-pkg-config", ("pkg-config", "cairo"), "libcairo2-dev",
                         "build"),
    "pkg-config-meson": ("meson (wheel) dependency()",
                         in_venv("meson", "venv/bin/meson setup build",
                                 {"meson.build": MESON_BUILD}),
                         "missing-pkg-config", ("pkg-config", "libsystemd"),
                         "libsystemd-dev", "build"),
    # missing programs
    "program-curl-config": ("pycurl's setup.py steps, pip wheel --verbose",
                            farm_sdist("fail-program"), "missing-program",
                            ("program", "curl-config"),
                            "libcurl4-gnutls-dev|libcurl4-openssl-dev", "build"),
    "program-mysql-config": ("dash running a missing program",
                             lambda: sh("sh -c 'mysql_config --libs'"), "missing-program",
                             ("program", "mysql_config"), "libmariadb-dev-compat", "build"),
    "program-krb5-config": ("bash running a missing program",
                            lambda: sh("krb5-config --libs"), "missing-program",
                            ("program", "krb5-config"), "libkrb5-dev", "build"),
    "program-cmake": ("python3 subprocess, cmake not on PATH",
                      lambda: sh("PATH=/nonexistent /usr/bin/python3 -c \"import subprocess; "
                                 "subprocess.check_call(['cmake', '--version'])\""),
                      "missing-program", ("program", "cmake"), "cmake", "build"),
    "program-swig": ("setuptools build_ext with a .i source",
                     in_venv("setuptools", "venv/bin/python setup.py build_ext",
                             {"setup.py": SWIG_SETUP, "swigged.i": "%module swigged\n"}),
                     "missing-program", ("program", "swig"), "swig", "build"),
    # Rust
    "rust-maturin-puccinialin": ("maturin 1.x without cargo, offline pip wheel --verbose",
                                 farm_sdist("fail-rust"), "needs-rust", ("program", "cargo"),
                                 "cargo", "build"),
    "rust-maturin": ("maturin 1.x backend, MATURIN_NO_INSTALL_RUST, no cargo",
                     in_venv("maturin", "PATH=$PWD/venv/bin:$PATH venv/bin/python -c "
                             "'import maturin; "
                             "maturin.build_wheel(\"w\")'",
                             {"pyproject.toml": MATURIN_PYPROJECT, "Cargo.toml": CARGO,
                              "src/lib.rs": ""}, env={"MATURIN_NO_INSTALL_RUST": "1"}),
                     "needs-rust", ("program", "cargo"), "cargo", "build"),
    "rust-setuptools-rust": ("setuptools-rust 1.x, no cargo",
                             in_venv("setuptools setuptools-rust",
                                     "venv/bin/python setup.py build_ext",
                                     {"setup.py": RUST_SETUP, "Cargo.toml": CARGO,
                                      "src/lib.rs": "", "rusty/__init__.py": ""}),
                             "needs-rust", ("program", "cargo"), "cargo", "build"),
    # compiler
    "compiler-c23-utf8": ("setuptools build_ext, gcc 12, UTF-8 locale",
                          farm_sdist("fail-compiler"), "needs-newer-compiler", None, None,
                          "build"),
    "compiler-cxx26": ("g++ 12", lambda: sh("g++ -std=c++26 -c m.cpp", files={"m.cpp": "int x;\n"}),
                       "needs-newer-compiler", None, None, "build"),
    "compiler-format": ("g++ 12 -std=c++20, <format> is libstdc++ 13's",
                        lambda: sh("g++ -std=c++20 -c m.cpp",
                                   files={"m.cpp": "#include <format>\nint x;\n"}),
                        "needs-newer-compiler", None, None, "build"),
    # Python
    "python-requires": ("pip 26 wheel name==version", farm_sdist("fail-python"),
                        "needs-newer-python", None, None, "build"),
    "python-requires-pip23": ("pip 23.0.1 wheel name==version",
                              farm_sdist_with_pip("fail-python", "23.0.1"),
                              "needs-newer-python", None, None, "build"),
    "python-requires-pip24": ("pip 24.0 wheel name==version",
                              farm_sdist_with_pip("fail-python", "24.0"),
                              "needs-newer-python", None, None, "build"),
    "python-requires-pip25": ("pip 25.1.1 wheel name==version",
                              farm_sdist_with_pip("fail-python", "25.1.1"),
                              "needs-newer-python", None, None, "build"),
    # broken sdists
    "sdist-inconsistent-pip23": ("pip 23.0.1, metadata version differs from the file name",
                                 farm_sdist_with_pip("fail-inconsistent", "23.0.1"),
                                 "broken-sdist", None, None, "build"),
    "sdist-inconsistent-pip25": ("pip 25.1.1, metadata version differs from the file name",
                                 farm_sdist_with_pip("fail-inconsistent", "25.1.1"),
                                 "broken-sdist", None, None, "build"),
    "sdist-readme": ("setup.py reading a file the sdist lacks", farm_sdist("fail-missing-file"),
                     "broken-sdist", None, None, "build"),
    "sdist-source": ("setuptools build_ext, a source the sdist lacks",
                     farm_sdist("fail-missing-source"), "broken-sdist", None, None, "build"),
    "sdist-inconsistent": ("pip 26, metadata version differs from the file name",
                           farm_sdist("fail-inconsistent"), "broken-sdist", None, None,
                           "build"),
    "sdist-package-dir": ("setuptools, a package directory the sdist lacks",
                          in_venv("setuptools", "venv/bin/python setup.py build",
                                  {"setup.py": PACKAGES_SETUP}),
                          "broken-sdist", None, None, "build"),
    # memory
    "memory-killed-cc1plus": ("g++ 12, cc1plus killed by SIGKILL (as the OOM killer does)",
                              killed_compiler, "out-of-memory", None, None, "build"),
    "memory-cc1plus-ulimit": ("g++ 12 under ulimit -v",
                              lambda: sh("ulimit -v 60000; g++ -O2 -c m.cpp",
                                         files={"m.cpp": "#include <iostream>\nint x;\n"}),
                              "out-of-memory", None, None, "build"),
    "memory-python": ("setup.py allocating past RLIMIT_AS, pip wheel --verbose",
                      farm_sdist("fail-memory"), "out-of-memory", None, None, "build"),
    "memory-slave-reason": ("the slave's failure_reason() of a real MemoryError",
                            memory_reason, "out-of-memory", None, None, "reason"),
    # the slave's own reasons
    "timeout-slave-reason": ("the slave's timeout reason",
                             lambda: (1, TIMEOUT_REASON.format(timeout_s=900.0)),
                             "timeout", None, None, "reason"),
    "no-sdist": ("the slave's fetch phase against an index listing only a wheel", no_sdist,
                 "no-sdist", None, None, "reason"),
    "upstream-unreachable": ("the slave's fetch phase against a closed port",
                             lambda: fetch_reason("http://127.0.0.1:9/simple/", "anything"),
                             "upstream-unreachable", None, None, "reason"),
    # a built wheel that does not import
    "import-soname": ("CPython 3.11 importing an extension whose DT_NEEDED is absent",
                      lambda: sh("gcc -shared -fPIC -Wl,-soname,libgeos_c.so.1 lib.c -o "
                                 "libgeos_c.so.1 && gcc -shared -fPIC -I" + INCLUDE_PY +
                                 " ext.c ./libgeos_c.so.1 -o geosish$(python3-config "
                                 "--extension-suffix) -Wl,-rpath,/nonexistent && "
                                 "mkdir gone && mv libgeos_c.so.1 gone/ && "
                                 "python3 -c 'import geosish'",
                                 files={"lib.c": SONAME_LIB, "ext.c": SONAME_EXT}),
                      "smoke-import", ("soname", "libgeos_c.so.1"), "libgeos-c1v5", "import"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    failed = 0
    for name, (source, run, cause, wanted, package, kind) in CASES.items():
        if args.only and name not in args.only:
            continue
        returncode, output = run()
        if returncode == 0:
            print(f"{name}: the tool did not fail here; not recorded", file=sys.stderr)
            failed += 1
            continue
        lines = output.rstrip("\n").splitlines()[-KEEP_LINES:]
        text = "\n".join(lines) + "\n"
        case = {
            "source": source, "kind": kind,
            "log": text if kind != "reason" else "",
            "reason": text.strip() if kind == "reason" else "",
            "cause": cause,
            "wanted": {"kind": wanted[0], "name": wanted[1]} if wanted else None,
            "package": package.split("|")[0] if package else None,
            "package_also": package.split("|")[1:] if package else [],
        }
        (HERE / f"{name}.json").write_text(json.dumps(case, indent=1) + "\n")
        print(f"{name}: recorded ({len(lines)} lines)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
