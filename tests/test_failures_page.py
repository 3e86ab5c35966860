"""The failures page's grouping (pure) and its HTML, read as a person reads it; the
quick start's report of failures; the fallback web server serving the page."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone

import requests
from bs4 import BeautifulSoup
from farm import free_port

from piwheels.failures_page import failures_context
from piwheels.fallback_server import FallbackServer
from piwheels.index_pages import Renderer, Site, project_context, to_json
from piwheels.quickstart import failure_report
from piwheels.records import BuildData, ProjectData, VersionData
from piwheels.storage import OutputTree, atomic_write
from piwheels.tags import Target

SITE = Site(name="Test farm", index_url="http://farm.test/simple/",
            upstream_simple="http://upstream.test/simple/")

LBER = "fatal error: lber.h: No such file or directory"
PLATFORM = "linux_aarch64"
TARGET = Target("cp311", PLATFORM)
UNBUILT = [
    # package, version, target ("abi platform"), cause, detail, Debian package
    *[("ldapy", f"1.{n}", str(Target(abi, PLATFORM)), "missing-header", LBER, "libldap-dev")
      for n in range(3) for abi in ("cp311", "cp312")],
    ("ldapx", "2.0", str(TARGET), "missing-header", LBER, "libldap-dev"),
    ("curly", "1.0", str(TARGET), "missing-program", "Could not run curl-config",
     "libcurl4-openssl-dev"),
    ("mystery", "1.0", str(TARGET), "missing-header", "foo.h: No such file or directory", None),
    ("slow", "1.0", str(TARGET), "timeout", "timed out after 5 s", None),
    ("old", "0.1", str(TARGET), None, None, None),  # recorded before causes were
    ("bogus", "0.1", str(TARGET), "no-such-cause", "x", None),
]


def counted(unbuilt: list[tuple]) -> list[tuple]:
    """What the database's count gives for these releases x targets."""
    counts = Counter((package, cause, debian) for package, _, _, cause, _, debian in unbuilt)
    details = {(package, cause, debian): detail
               for package, _, _, cause, detail, debian in unbuilt}
    return [(*key, count, details[key]) for key, count in counts.items()]


ROWS = counted(UNBUILT)


def test_grouped_by_cause_then_package_with_counts():
    context = failures_context(ROWS, top=1)
    assert context["builds"] == len(UNBUILT)
    causes = {group["code"]: group for group in context["causes"]}
    assert [group["code"] for group in context["causes"]][0] == "missing-header"
    header = causes["missing-header"]
    assert header["builds"] == 8 and header["fixable"]
    assert [(p["package"], p["builds"]) for p in header["packages"]] == [
        ("libldap-dev", 7), (None, 1)]
    ldap = header["packages"][0]
    assert ldap["projects"][0] == {"name": "ldapy", "builds": 6, "detail": LBER,
                                   "page": "../project/ldapy/"}
    assert ldap["more_projects"] == 1  # ldapx, beyond the top 1
    # not fixable by the builder image: projects, no packages
    assert causes["timeout"]["packages"] == [] and causes["timeout"]["builds"] == 1
    # undiagnosed and unknown codes count as unknown
    assert causes["unknown"]["builds"] == 2
    assert context["unlock"][:2] == [
        {"package": "libldap-dev", "builds": 7, "cause": "missing-header"},
        {"package": "libcurl4-openssl-dev", "builds": 1, "cause": "missing-program"}]
    assert json.loads(to_json(context)) == context


def test_the_page_says_what_to_install():
    html = Renderer(SITE).render("failures", **failures_context(ROWS))
    text = " ".join(BeautifulSoup(html, "html.parser").get_text(" ").split())
    assert "libldap-dev would unlock 7 builds" in text
    assert "libcurl4-openssl-dev would unlock 1 build " in text
    assert "missing header: 8 builds" in text
    assert "No package named: 1 build" in text
    assert "timed out: 1 build" in text
    assert f"ldapy (6): {LBER}" in text


def test_no_failures():
    html = Renderer(SITE).render("failures", **failures_context([]))
    assert "No release is left unbuilt" in BeautifulSoup(html, "html.parser").get_text()


def failed_build(build_id, cause, detail, package) -> BuildData:
    return BuildData(build_id=build_id, abi_tag=TARGET.abi_tag, platform_tag=TARGET.platform_tag,
                     slave_label="s", builder="s", started=datetime.now(timezone.utc),
                     duration=timedelta(seconds=1), status="failed", reason="pip wheel failed",
                     files=(), cause=cause, cause_detail=detail, cause_package=package,
                     os_release="Debian GNU/Linux 12")


def test_quick_start_reports_each_failure_and_the_packages_to_install():
    def failed(cause, detail, package):
        return failed_build(1, cause, detail, package)
    # keyed as the quick start keys them: (project, version, "abi platform")
    report = failure_report({
        ("ldapy", "1.0", str(TARGET)): failed("missing-header", LBER, "libldap-dev"),
        ("curly", "2.0", str(TARGET)): failed("missing-program", "Could not run curl-config",
                                              "libcurl4-openssl-dev"),
        ("slow", "1.0", str(TARGET)): failed("timeout", "timed out after 5 s", None),
        ("old", "1.0", str(TARGET)): failed(None, None, None),
    })
    assert report == [
        "4 build(s) failed:",
        "  curly 2.0 for cp311 linux_aarch64: missing program: Could not run curl-config; "
        "install libcurl4-openssl-dev",
        f"  ldapy 1.0 for cp311 linux_aarch64: missing header: {LBER}; install libldap-dev",
        "  old 1.0 for cp311 linux_aarch64: unknown",
        "  slow 1.0 for cp311 linux_aarch64: timed out: timed out after 5 s",
        "to fix them, install on the builder: sudo apt install libcurl4-openssl-dev libldap-dev",
    ]
    assert failure_report({}) == []


def test_a_failed_cell_says_its_cause_detail_and_package_in_words():
    two = [failed_build(build_id, "missing-header", LBER, "libldap-dev") for build_id in (1, 2)]
    project = ProjectData(package="ldapy", description="", skip_reason=None, names=("ldapy",),
                          versions=(VersionData(version="1.0", released=None, has_sdist=True,
                                                yanked=False, yank_reason=None,
                                                skip_reason=None, builds=tuple(two)),))
    context = project_context(project, [TARGET], SITE)
    cell = context["versions"][0]["builds"]["cp311 linux_aarch64"]
    assert cell["status"] == "failed"  # twice: it counts
    assert cell["cause"] == {"code": "missing-header", "label": "missing header",
                             "detail": LBER, "package": "libldap-dev"}
    assert [a["cause"]["package"] for a in context["versions"][0]["attempts"]] == [
        "libldap-dev"] * 2
    html = Renderer(SITE).render("project", format_size=str, **context)
    soup = BeautifulSoup(html, "html.parser")
    [td] = soup.select("table.builds td.cell")
    assert " ".join(td.get_text(" ").split()) == f"failed missing header {LBER} install libldap-dev"
    rows = [" ".join(tr.get_text(" ").split()) for tr in soup.select("table.attempts tbody tr")]
    assert all(row.endswith(f"failed : missing header ({LBER}); install libldap-dev")
               for row in rows), rows
    # each attempt says the target it was for and the OS release its builder ran
    assert all(row.startswith("1.0 cp311 linux_aarch64 Debian GNU/Linux 12 s ")
               for row in rows), rows
    assert td["title"] == "pip wheel failed; by s; on Debian GNU/Linux 12"
    assert [th["title"] for th in soup.select("table.builds thead th[title]")] == [str(TARGET)]


def test_the_fallback_server_serves_the_failures_page_and_its_json(tmp_path):
    tree = OutputTree(tmp_path / "output")
    context = failures_context(ROWS)
    atomic_write(tree.failures_page("html"), Renderer(SITE).render("failures", **context))
    atomic_write(tree.failures_page("json"), to_json(context))
    port = free_port()
    server = FallbackServer(tree.root, "127.0.0.1", port, tmp_path / "access.log")
    server.start()
    try:
        page = requests.get(f"http://127.0.0.1:{port}/failures/", timeout=10)
        twin = requests.get(f"http://127.0.0.1:{port}/failures/json/", timeout=10)
    finally:
        server.stop()
    assert page.status_code == 200
    assert "libldap-dev would unlock 7 builds" in " ".join(
        BeautifulSoup(page.text, "html.parser").get_text(" ").split())
    assert twin.status_code == 200 and twin.headers["content-type"] == "application/json"
    assert twin.json() == context
