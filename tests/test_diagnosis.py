"""The diagnosis of failed builds: the corpus of real errors, hostile logs, the Debian lookup."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from piwheels import limits
from piwheels.debian_lookup import DebianLookup, Provider, _owners, choose, valid_package
from piwheels.diagnosis import (
    CAUSES,
    OUT_OF_MEMORY_REASON,
    TIMEOUT_REASON,
    Diagnosis,
    Wanted,
    diagnose,
    import_failure,
)
from piwheels.slave.build_log import failure_reason

CORPUS_DIR = Path(__file__).parent / "data" / "build_errors"
CORPUS = {path.stem: json.loads(path.read_text()) for path in sorted(CORPUS_DIR.glob("*.json"))}
#: The most CPU time a hostile log may cost diagnose() (CPU, not wall: the
#: machine may be busy).
HOSTILE_BOUND_S = 1.0


def classify(case: dict) -> Diagnosis:
    if case["kind"] == "import":
        return import_failure(case["log"])
    return diagnose(case["log"], case["reason"])


def wanted_of(case: dict):
    return Wanted(**case["wanted"]) if case["wanted"] else None


# --- the causes --------------------------------------------------------------


def test_the_causes_are_declared_once_with_their_nature():
    assert set(CAUSES) == {
        "missing-header", "missing-library", "missing-pkg-config", "missing-program",
        "out-of-memory", "timeout", "needs-rust", "needs-newer-compiler", "needs-newer-python",
        "broken-sdist", "no-sdist", "upstream-unreachable", "unknown", "smoke-import",
    }
    assert all(code == cause.code and cause.label for code, cause in CAUSES.items())
    assert max(map(len, CAUSES)) <= limits.CAUSE  # the column the code is stored in
    chance = {"timeout", "out-of-memory", "upstream-unreachable", "unknown"}
    assert {code for code, cause in CAUSES.items() if not cause.deterministic} == chance
    assert CAUSES["smoke-import"].fixable_by_image and CAUSES["smoke-import"].deterministic
    assert CAUSES["missing-header"].fixable_by_image
    assert not CAUSES["broken-sdist"].fixable_by_image


# --- the corpus ---------------------------------------------------------------


def test_the_corpus_is_large_and_covers_every_cause_a_build_meets():
    assert len(CORPUS) >= 30
    assert {case["cause"] for case in CORPUS.values()} == set(CAUSES) - {"unknown"}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_corpus_case_is_classified_right(name):
    case = CORPUS[name]
    found = classify(case)
    assert (found.cause, found.wanted) == (case["cause"], wanted_of(case)), found
    assert found.detail and len(found.detail) <= limits.CAUSE_DETAIL
    assert "\n" not in found.detail


def test_the_slaves_own_reasons_are_recognised():
    assert diagnose("", TIMEOUT_REASON.format(timeout_s=30.0)).cause == "timeout"
    reason = failure_reason(1, "  MemoryError\n", memory_bytes=512 * 1024 ** 2, pid_limit=0,
                            disk_bytes=0, contained=True, fetched=[])
    assert OUT_OF_MEMORY_REASON.format(limit_mib=512) in reason
    assert diagnose("", reason).cause == "out-of-memory"


def test_nothing_recognisable_is_unknown_with_the_reason_as_detail():
    found = diagnose("some output\nmore output\n", "pip wheel failed with exit status 1")
    assert found == Diagnosis("unknown", "pip wheel failed with exit status 1")


def test_a_header_of_the_sdists_own_that_pip_prints_in_a_traceback_is_not_memory():
    log = "    except MemoryError:\nfoo.c:1:10: fatal error: foo.h: No such file or directory\n"
    assert diagnose(log).wanted == Wanted("header", "foo.h")


def test_import_failure_names_the_shared_object():
    found = import_failure(
        "Traceback (most recent call last):\n  File \"<string>\", line 1\n"
        "ImportError: libldap-2.5.so.0: cannot open shared object file: No such file or directory")
    assert found.cause == "smoke-import"
    assert found.wanted == Wanted("soname", "libldap-2.5.so.0")
    other = import_failure("ModuleNotFoundError: No module named 'six'")
    assert (other.cause, other.wanted) == ("smoke-import", None)
    assert "six" in other.detail


# --- hostile logs -----------------------------------------------------------


JUNK = bytes(range(256)).decode("latin-1")
#: Logs meant to cost the classifier time, each made when its test runs.
HOSTILE_LOGS = {
    "10 MB of error lines": lambda: "x.c:1:10: fatal error: \n" * (10 * 1024 * 1024 // 24),
    "binary junk": lambda: JUNK * 40000,
    "a 1 MB line of a header name": lambda: "fatal error: " + "a" * (1024 * 1024) + ".h",
    "1 MB lines of keywords": lambda: ("No such file or directory: '" * 40000 + "\n") * 12,
    "a 1 MB word before a keyword": lambda: "b" * (1024 * 1024) + ": command not found\n",
    "many keywords, no match": lambda: ("cannot find -l Package No package ' Dependency sh: 1: "
                                        "Could not run fatal error Error: \n") * 200000,
}


@pytest.mark.parametrize("name", sorted(HOSTILE_LOGS))
def test_a_hostile_log_is_diagnosed_in_bounded_time(name):
    log = HOSTILE_LOGS[name]()
    started = time.process_time()
    found = diagnose(log, log[:10000])
    assert time.process_time() - started < HOSTILE_BOUND_S
    assert found.cause in CAUSES and len(found.detail) <= limits.CAUSE_DETAIL
    started = time.process_time()
    assert import_failure(log).cause == "smoke-import"
    assert time.process_time() - started < HOSTILE_BOUND_S


def test_any_input_gives_a_diagnosis():
    for weird in (None, b"\xff\xfe", 42, "", "\0" * 10):
        assert diagnose(weird, weird).cause in CAUSES  # type: ignore[arg-type]
        assert import_failure(weird).cause == "smoke-import"  # type: ignore[arg-type]


# --- what a want matches ------------------------------------------------------


@pytest.mark.parametrize("wanted, good, bad", [
    (Wanted("header", "lber.h"), "/usr/include/lber.h", "/usr/include/a/b/lber.h"),
    (Wanted("header", "libxml/xmlversion.h"), "/usr/include/libxml2/libxml/xmlversion.h",
     "/usr/include/libxml2/xmlversion.h"),
    (Wanted("header", "ffi.h"), "/usr/include/x86_64-linux-gnu/ffi.h", "/usr/share/ffi.h"),
    (Wanted("library", "ldap"), "/usr/lib/x86_64-linux-gnu/libldap.so",
     "/usr/lib/x86_64-linux-gnu/libldap.so.2"),
    (Wanted("pkg-config", "mysqlclient"), "/usr/lib/x86_64-linux-gnu/pkgconfig/mysqlclient.pc",
     "/usr/lib/mysqlclient.pc"),
    (Wanted("program", "curl-config"), "/usr/bin/curl-config", "/usr/share/doc/curl-config"),
    (Wanted("soname", "libldap-2.5.so.0"), "/usr/lib/x86_64-linux-gnu/libldap-2.5.so.0",
     "/usr/lib/x86_64-linux-gnu/libldap-2.5.so.0.1"),
])
def test_a_want_matches_the_paths_that_provide_it(wanted, good, bad):
    assert wanted.matches(good)
    assert not wanted.matches(bad)


# --- choosing among providers -----------------------------------------------


def test_the_provider_is_where_the_compiler_looks_then_named_for_the_want():
    ldap = {"libldap-dev": "/usr/include/ldap.h",
            "libmailutils-dev": "/usr/include/mailutils/ldap.h"}
    assert choose(Wanted("header", "ldap.h"), ldap, {}) == Provider("libldap-dev")
    krb5 = {"heimdal-dev": "/usr/bin/krb5-config", "libkrb5-dev": "/usr/bin/krb5-config"}
    assert choose(Wanted("program", "krb5-config"), krb5, {}) == Provider(
        "libkrb5-dev", ("heimdal-dev",))
    curl = {name: "/usr/bin/curl-config" for name in
            ("libcurl4-gnutls-dev", "libcurl4-nss-dev", "libcurl4-openssl-dev")}
    # the one whose runtime library is installed
    assert choose(Wanted("program", "curl-config"), curl,
                  {"libcurl4-openssl-dev": 1}).package == "libcurl4-openssl-dev"
    many = {f"lib{i}-dev": f"/usr/include/lib{i}/config.h" for i in range(20)}
    assert choose(Wanted("header", "config.h"), many, {}) is None


def test_package_names_from_the_tools_are_checked():
    assert valid_package("libcurl4-openssl-dev") and valid_package("g++")
    assert valid_package("x" * limits.DEBIAN_PACKAGE)
    for bad in ("Foo", "-x", "a", "a b", "x" * (limits.DEBIAN_PACKAGE + 1), "../etc"):
        assert not valid_package(bad)
    output = ("Evil Name, libfoo-dev: /usr/include/foo.h\n"
              "libfoo-dev:amd64: /usr/include/foo.h\ngarbage\n")
    assert _owners(output, [Wanted("header", "foo.h")]) == {
        Wanted("header", "foo.h"): {"libfoo-dev": "/usr/include/foo.h"}}


# --- the lookup on this host --------------------------------------------------


def test_the_lookup_caches_and_forgets_when_apt_lists_change(tmp_path, monkeypatch):
    lists = tmp_path / "lists"
    lists.mkdir()
    contents = lists / "example_dists_bookworm_main_Contents-amd64.lz4"
    contents.write_bytes(b"one")
    cache = tmp_path / "cache.json"
    dpkg = Wanted("program", "dpkg")  # installed: dpkg -S answers, no apt-file run
    lookup = DebianLookup(cache, apt_lists=lists)
    assert lookup.package_for(dpkg) == Provider("dpkg")
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    assert DebianLookup(cache, apt_lists=lists).package_for(dpkg) == Provider("dpkg")
    contents.write_bytes(b"two, after apt-file update")
    assert DebianLookup(cache, apt_lists=lists).package_for(dpkg) is None


def test_the_lookup_never_raises(tmp_path, monkeypatch):
    cache = tmp_path / "cache.json"
    cache.write_text("{not json")
    monkeypatch.setenv("PATH", str(tmp_path))
    lookup = DebianLookup(cache)
    assert lookup.package_for(Wanted("header", "lber.h")) is None
    assert lookup.packages_for([Wanted("nonsense", "x")]) == {}
    assert DebianLookup(tmp_path / "a-file" / "cache.json").package_for(
        Wanted("header", "x.h")) is None


def wrong_packages(found: dict) -> dict:
    """The corpus cases whose package *found* does not give right."""
    wrong = {}
    for name, case in CORPUS.items():
        if case["wanted"]:
            provider = found.get(wanted_of(case))
            if provider is None or provider.package not in {case["package"],
                                                            *case["package_also"]}:
                wrong[name] = provider
    return wrong


def test_every_corpus_package_is_found_by_apt_file(tmp_path, monkeypatch):
    """The packages, looked up for real: apt-file over this host's apt sources.

    CI installs apt-file and runs ``apt-file update``: without it this fails."""
    assert shutil.which("apt-file"), "apt-file is not installed (apt-get install apt-file)"
    assert any(Path("/var/lib/apt/lists").glob("*Contents-*")), \
        "apt-file has no cache: run apt-file update"
    cache = tmp_path / "cache.json"
    wants = [wanted_of(case) for case in CORPUS.values() if case["wanted"]]
    nothing = Wanted("header", "piwheels-no-package-ships-this.h")
    found = DebianLookup(cache).packages_for([*wants, nothing])
    assert not wrong_packages(found)
    assert found[nothing] is None
    entries = json.loads(cache.read_text())["entries"]
    assert entries[f"header:{nothing.name}"] == {}  # a negative answer is cached too
    # ... and used: without the tools the answers come from the cache
    monkeypatch.setenv("PATH", str(tmp_path))
    again = DebianLookup(cache).packages_for([*wants, nothing])
    assert not wrong_packages(again)
    assert again[nothing] is None


def test_the_docs_list_every_cause_as_declared():
    text = (Path(__file__).parent.parent / "docs" / "diagnosis.rst").read_text()
    for code, cause in CAUSES.items():
        row = [line for line in text.splitlines() if line.startswith(f"``{code}``")]
        assert len(row) == 1, code
        words = row[0].split()
        assert " ".join(words[1:-2]) == cause.label
        assert words[-2:] == [("yes" if cause.deterministic else "no"),
                              ("yes" if cause.fixable_by_image else "no")], code


def test_a_diagnosis_goes_through_a_dict_and_bad_ones_are_refused():
    found = Diagnosis("missing-header", "lber.h: No such file", Wanted("header", "lber.h"))
    assert Diagnosis.from_dict(found.to_dict()) == found
    assert Diagnosis.from_dict(Diagnosis("timeout", "x").to_dict()) == Diagnosis("timeout", "x")
    for bad in ({"cause": "nonsense"}, {"cause": "timeout", "wanted_kind": "header"},
                {"cause": "timeout", "wanted_kind": "disk", "wanted_name": "x"},
                {"cause": "timeout", "detail": "x" * (limits.CAUSE_DETAIL + 1)}):
        with pytest.raises(ValueError):
            Diagnosis.from_dict(bad)


@pytest.mark.parametrize("line, cause, wanted", [
    # clang's words for a missing header
    ("x.c:1:10: fatal error: 'lber.h' file not found", "missing-header", Wanted("header", "lber.h")),
    # older pip's words when Requires-Python excludes every version
    ("ERROR: Ignored the following versions that require a different python version: "
     "1.0 Requires-Python >=3.99", "needs-newer-python", None),
    # a file in capitals is the sdist's, not a program
    ("FileNotFoundError: [Errno 2] No such file or directory: 'VERSION'", "broken-sdist", None),
    ("OSError: mysql_config not found", "missing-program", Wanted("program", "mysql_config")),
    ("/bin/sh: 1: cargo: not found", "needs-rust", Wanted("program", "cargo")),
    ("meson.build:1:0: ERROR: None of values ['c++23'] are supported by the CPP compiler.",
     "needs-newer-compiler", None),
])
def test_other_tools_words(line, cause, wanted):
    found = diagnose(f"some output\n{line}\nmore output\n")
    assert (found.cause, found.wanted) == (cause, wanted)
