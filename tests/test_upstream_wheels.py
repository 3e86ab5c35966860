"""Which upstream wheels a builder can install, and Requires-Python, as the skip rule reads them.

The builder here is a CPython 3.11 on x86_64 with glibc 2.36, its platforms
those :func:`packaging.tags.sys_tags` gives on such a machine; one test checks
on this machine's own interpreter that the rebuilt set is sys_tags()' own.
"""

from __future__ import annotations

import pytest
from packaging import tags

from piwheels.pypi_client import files_by_release
from piwheels.upstream_wheels import (
    REQUIRES_PYTHON, UPSTREAM_WHEEL, Builder, accepted_tags, installable_wheel,
    requires_python_excludes, skip_verdict,
)


#: manylinux's legacy names for glibc versions (PEP 600)
LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


def glibc_platforms(minor: int, arch: str) -> tuple[str, ...]:
    """What a glibc 2.*minor* machine of *arch* lists in HELLO: every manylinux_2_N
    down to 2.5 with the legacy aliases, then its own linux_ platform."""
    many = []
    for m in range(minor, 4, -1):
        many.append(f"manylinux_2_{m}_{arch}")
        if m in LEGACY:
            many.append(f"{LEGACY[m]}_{arch}")
    return (*many, f"linux_{arch}")


CP311 = Builder("cp311", "cp311", "3.11.4", glibc_platforms(36, "x86_64"))
ACCEPTED = accepted_tags(CP311)


@pytest.mark.parametrize("filename, installs", [
    ("demo-1.0-py3-none-any.whl", True),
    ("demo-1.0-py2.py3-none-any.whl", True),
    ("demo-1.0-py311-none-any.whl", True),
    ("demo-1.0-cp37-abi3-manylinux2014_x86_64.whl", True),
    ("demo-1.0-cp311-abi3-manylinux_2_17_x86_64.whl", True),
    ("demo-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
    ("demo-1.0-cp311-cp311-manylinux_2_36_x86_64.whl", True),
    ("demo-1.0-cp311-cp311-linux_x86_64.whl", True),
    ("demo-1.0-cp311-none-linux_x86_64.whl", True),
    # newer than the builder's glibc, another C library, another machine
    ("demo-1.0-cp311-cp311-manylinux_2_39_x86_64.whl", False),
    ("demo-1.0-cp311-cp311-musllinux_1_1_x86_64.whl", False),
    ("demo-1.0-cp311-cp311-manylinux2014_aarch64.whl", False),
    ("demo-1.0-cp311-cp311-win_amd64.whl", False),
    # another Python
    ("demo-1.0-cp312-cp312-manylinux2014_x86_64.whl", False),
    ("demo-1.0-cp312-abi3-manylinux2014_x86_64.whl", False),
    ("demo-1.0-cp310-cp310-manylinux2014_x86_64.whl", False),
    ("demo-1.0-py2-none-any.whl", False),
    ("demo-1.0-pp310-pypy310_pp73-manylinux2014_x86_64.whl", False),
    ("demo-1.0-cp313-cp313t-manylinux2014_x86_64.whl", False),
    ("not a wheel.whl", False),
])
def test_which_upstream_wheels_a_cp311_x86_64_glibc_builder_installs(filename, installs):
    assert (installable_wheel([filename], ACCEPTED) == filename) is installs


def test_the_rule_is_the_interpreters_own_where_it_runs_here():
    """On this machine's interpreter, the rebuilt set is packaging's sys_tags()."""
    every = list(tags.sys_tags())
    first = every[0]
    platforms = tuple(dict.fromkeys(t.platform for t in every
                                    if (t.interpreter, t.abi) == (first.interpreter, first.abi)))
    import platform
    here = Builder(first.interpreter, first.abi, platform.python_version(), platforms)
    assert accepted_tags(here) == frozenset(every)


def test_a_builder_that_says_too_little_installs_nothing():
    assert accepted_tags(Builder("cp311", "cp311", "3.11.4", ())) == frozenset()
    assert accepted_tags(Builder("cp311", "cp311", "garbage", ("linux_x86_64",))) == frozenset()


def test_a_pypy_builder_takes_its_own_abi_and_pure_wheels_only():
    pypy = accepted_tags(Builder("pp310", "pypy310_pp73", "3.10.14", ("linux_x86_64",)))
    assert installable_wheel(["d-1-pp310-pypy310_pp73-linux_x86_64.whl"], pypy)
    assert installable_wheel(["d-1-py3-none-any.whl"], pypy)
    assert not installable_wheel(["d-1-cp310-abi3-linux_x86_64.whl",
                                  "d-1-cp310-cp310-linux_x86_64.whl"], pypy)


@pytest.mark.parametrize("spec, version, excludes", [
    (">=3.12", "3.11.4", True),
    (">=3.8", "3.11.4", False),
    ("<3.11", "3.11.4", True),
    (">=3.11.5", "3.11.4", True),
    (">=3.11.4", "3.11.4", False),
    ("~=3.11", "3.13.0", False),
    ("==3.11.*", "3.12.1", True),
    (">=3.12", "3.12.0rc1", False),  # pip reads the interpreter as 3.12.0
    (">=3.12.1", "3.12.1rc1", False),
    ("!=3.11.*, >=3.7", "3.11.9", True),
    ("", "3.11.4", False),
    (None, "3.11.4", False),
    ("garbage", "3.11.4", False),    # pip ignores an invalid specifier
])
def test_requires_python_is_read_as_pip_reads_it(spec, version, excludes):
    assert requires_python_excludes(spec, version) is excludes


def test_the_verdict_names_the_specifier_or_the_file():
    skip = skip_verdict(CP311, ACCEPTED, ">=3.12", ["demo-1.0-py3-none-any.whl"])
    assert (skip.cause, skip.detail) == (REQUIRES_PYTHON,
                                         "Requires-Python >=3.12 excludes Python 3.11.4")
    skip = skip_verdict(CP311, ACCEPTED, ">=3.7", [
        "demo-1.0-cp312-cp312-manylinux2014_x86_64.whl", "demo-1.0-py3-none-any.whl"])
    assert (skip.cause, skip.detail) == (UPSTREAM_WHEEL,
                                         "upstream serves demo-1.0-py3-none-any.whl")
    assert skip_verdict(CP311, ACCEPTED, ">=3.7",
                        ["demo-1.0-cp312-cp312-manylinux2014_x86_64.whl"]) is None


def test_the_follower_reads_wheels_and_requires_python_from_a_simple_page():
    page = {"name": "demo", "files": [
        {"filename": "demo-1.0.tar.gz", "requires-python": ">=3.9", "hashes": {"sha256": "a" * 64}},
        {"filename": "demo-1.0-py3-none-any.whl", "requires-python": ">=3.9",
         "hashes": {"sha256": "B" * 64}},
        {"filename": "demo-1.0-cp311-cp311-linux_x86_64.whl", "hashes": {}},
        {"filename": "demo-2.0.tar.gz"},
        {"filename": "other-1.0-py3-none-any.whl", "hashes": {"sha256": "c" * 64}},
        {"filename": "demo-1.0-py3-none-any.whl.asc"},
        {"filename": "demo-1.0.whl", "hashes": {"sha256": "d" * 64}},
    ]}
    assert files_by_release(page) == {
        "1.0": (">=3.9", (("demo-1.0-cp311-cp311-linux_x86_64.whl", None),
                          ("demo-1.0-py3-none-any.whl", "b" * 64))),
        "2.0": (None, ()),
    }
