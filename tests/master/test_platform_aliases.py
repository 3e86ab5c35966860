"""Platform aliases (--platform-alias): the rule, the index writer's pages and links,
removal, quarantine and the reconciliation at start, on a real database and tree."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from farm import wait_for
from packaging.tags import Tag
from packaging.utils import parse_wheel_filename
from test_index_writer import SITE, Writer

from piwheels import config, settings
from piwheels.errors import ConfigError
from piwheels.master.reconcile import reconcile
from piwheels.platform_aliases import NO_ALIASES, PlatformAliases
from piwheels.protocols import WheelFacts
from piwheels.records import BuildRecord
from piwheels.storage import OutputTree

T0 = datetime(2026, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
ARMV6 = PlatformAliases.parse(["linux_armv7l=linux_armv6l"])
ALIAS_SITE = dataclasses.replace(SITE, platform_aliases=ARMV6)


# --- the rule -------------------------------------------------------------------------

@pytest.mark.parametrize("filename, aliases", [
    ("foo-1.0-cp311-cp311-linux_armv7l.whl", ("foo-1.0-cp311-cp311-linux_armv6l.whl",)),
    ("foo_bar-2.0.post1-cp39-abi3-linux_armv7l.whl",
     ("foo_bar-2.0.post1-cp39-abi3-linux_armv6l.whl",)),
    ("foo-1.0-7-cp311-cp311-linux_armv7l.whl", ("foo-1.0-7-cp311-cp311-linux_armv6l.whl",)),
    ("foo-1.0-cp310.cp311-cp310.cp311-linux_armv7l.whl",
     ("foo-1.0-cp310.cp311-cp310.cp311-linux_armv6l.whl",)),
    ("foo-1.0-py3-none-any.whl", ()),                           # pure: served to all already
    ("foo-1.0-cp311-cp311-linux_aarch64.whl", ()),              # another platform
    ("foo-1.0-cp311-cp311-manylinux_2_17_armv7l.whl", ()),      # not the aliased tag
    ("foo-1.0-cp311-cp311-linux_armv7l.manylinux_2_17_armv7l.whl", ()),  # mixed platforms
    ("not a wheel.whl", ()),
])
def test_alias_names(filename, aliases):
    assert ARMV6.names(filename) == aliases
    assert NO_ALIASES.names(filename) == ()
    for alias in aliases:
        name, version, build, tags = parse_wheel_filename(filename)
        assert parse_wheel_filename(alias) == (
            name, version, build, frozenset(Tag(t.interpreter, t.abi, "linux_armv6l")
                                            for t in tags))


def test_a_real_build_of_the_alias_name_wins():
    built = "foo-1.0-cp311-cp311-linux_armv7l.whl"
    real = "foo-1.0-cp311-cp311-linux_armv6l.whl"
    assert ARMV6.of([built]) == {built: (real,)}
    assert ARMV6.of([built, real]) == {}


@pytest.mark.parametrize("specs, words", [
    (["linux_armv7l"], "BUILT=ALIAS"),
    (["linux_armv7l=linux_armv7l"], "its own alias"),
    (["linux_armv7l=Linux_ARMv6l"], "not lower-case"),
    (["linux_armv7l=any"], "'any'"),
    (["linux_armv7l=linux armv6l"], "letters, digits"),
    (["linux_armv7l=linux_armv6l", "linux_armv7l=linux_armv6l"], "twice"),
    (["linux_aarch64=linux_armv7l", "linux_armv7l=linux_armv6l"], "do not chain"),
    (["linux_armv7l=linux_armv6l", "linux_armv8l=linux_armv6l"], "two platforms"),
])
def test_bad_aliases_are_refused_with_the_reason(specs, words):
    with pytest.raises(ConfigError, match="--platform-alias") as caught:
        PlatformAliases.parse(specs)
    assert words in str(caught.value)


def test_the_option_reaches_the_master_record(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILES", (str(tmp_path / "none.conf"),))
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)

    def load(*args):
        return settings.MasterConfig.from_options(
            config.make_parser("piw-test", "test", settings.MASTER_OPTIONS).parse_args(
                ["--pypi-simple", "http://127.0.0.1:9/simple/", "--open-farm", *args]),
            log=settings.LogSettings())
    assert load().platform_aliases == NO_ALIASES  # off by default
    assert load("--platform-alias", "linux_armv7l=linux_armv6l").platform_aliases == ARMV6
    with pytest.raises(ConfigError, match="its own alias"):
        load("--platform-alias", "linux_armv7l=linux_armv7l")


# --- the output tree ---------------------------------------------------------------------

def publish(db, output: Path, name: str, version: str, platform: str, *, abi="cp311",
            content: bytes = b"") -> str:
    """Record a successful build with one wheel for *platform* and put it in place."""
    db.add_build_target((abi, platform))
    db.add_package(name, description=f"{name} does things")
    db.add_version(name, version, released=T0, has_sdist=True)
    stem = f"{name.replace('-', '_')}-{version}"
    filename = f"{stem}-{abi}-{abi}-{platform}.whl"
    content = content or f"wheel {filename}".encode()
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    tree = OutputTree(output)
    tree.simple_dir(name).mkdir(parents=True, exist_ok=True)
    tree.wheel(name, filename).write_bytes(content)
    tree.metadata_of(tree.wheel(name, filename)).write_bytes(metadata)
    db.record_build(BuildRecord(
        package=name, version=version, abi_tag=abi, platform_tag=platform, slave_label="pi",
        started=T0,
        duration=timedelta(seconds=3), status="success", log="log\n",
        files=(WheelFacts(
            filename=filename, size=len(content), sha256=hashlib.sha256(content).hexdigest(),
            package_tag=stem.split("-")[0], version_tag=version, py_tag=abi, abi_tag=abi,
            platform_tag=platform, requires_python=None, requires_dist=(), metadata=metadata,
            metadata_sha256=hashlib.sha256(metadata).hexdigest(), apt_dependencies=()),),
    ))
    return filename


def read_json(path: Path):
    return json.loads(path.read_text())


def listed(output: Path, package: str) -> dict[str, dict]:
    page = output / "simple" / package / "index.json"
    return {f["filename"]: f for f in read_json(page)["files"]} if page.exists() else {}


@pytest.fixture
def alias_writer(master_dsn, output_dir):
    w = Writer(master_dsn, output_dir, site=ALIAS_SITE)
    yield w
    w.stop()


@pytest.fixture
def output_dir(tmp_path):
    return tmp_path / "output"


def test_an_armv7l_wheel_is_served_under_the_armv6l_name_too(db, alias_writer, output_dir):
    built = publish(db, output_dir, "piw-armthing", "1.0", "linux_armv7l")
    other = publish(db, output_dir, "piw-armthing", "1.0", "linux_aarch64")
    alias = built.replace("linux_armv7l", "linux_armv6l")
    alias_writer.package("piw-armthing")
    wait_for(lambda: alias in listed(output_dir, "piw-armthing"), 10, "the alias listed")
    files = listed(output_dir, "piw-armthing")
    assert set(files) == {built, other, alias}
    # its own entry: the same bytes, so the same hashes, size and metadata hash
    for key in ("hashes", "size", "core-metadata", "requires-python", "yanked"):
        assert files[alias][key] == files[built][key]
    assert files[alias]["url"] == alias
    directory = output_dir / "simple" / "piw-armthing"
    assert os.path.samefile(directory / alias, directory / built)
    assert os.path.samefile(directory / (alias + ".metadata"), directory / (built + ".metadata"))
    assert hashlib.sha256((directory / alias).read_bytes()).hexdigest() == \
        files[alias]["hashes"]["sha256"]
    html = (directory / "index.html").read_text()
    assert f'href="{alias}#sha256={files[built]["hashes"]["sha256"]}"' in html
    # the project page and JSON say what each file is also served as
    html_page = output_dir / "project" / "piw-armthing" / "index.html"
    wait_for(html_page.exists, 10, "the project page (written after the simple pages)")
    project = read_json(output_dir / "project" / "piw-armthing" / "json" / "index.json")
    [version] = project["versions"]
    shown = {f["filename"]: [a["filename"] for a in f["platform_aliases"]] for f in version["files"]}
    assert shown == {built: [alias], other: []}
    assert alias in html_page.read_text()

    # a yank marks both names
    db.yank_version("piw-armthing", "1.0", "broken")
    alias_writer.package("piw-armthing")
    wait_for(lambda: listed(output_dir, "piw-armthing")[alias]["yanked"] == "broken", 10,
             "the yank")
    assert listed(output_dir, "piw-armthing")[built]["yanked"] == "broken"

    # removal takes both names (piw-remove unpublishes every name of the file)
    db.remove_version("piw-armthing", "1.0")
    OutputTree(output_dir).unpublish("piw-armthing", built)
    assert not (directory / alias).exists() and not (directory / (alias + ".metadata")).exists()
    assert (directory / other).exists()  # another file is not a name of this one


def test_pruning_drops_the_alias_with_its_wheel(db, alias_writer, output_dir):
    built = publish(db, output_dir, "piw-pruned", "1.0", "linux_armv7l")
    kept = publish(db, output_dir, "piw-pruned", "2.0", "linux_armv7l")
    alias = built.replace("linux_armv7l", "linux_armv6l")
    alias_writer.package("piw-pruned")
    wait_for(lambda: alias in listed(output_dir, "piw-pruned"), 10, "the alias listed")
    db.remove_version("piw-pruned", "1.0")  # the index writer alone removes the files
    alias_writer.package("piw-pruned")
    directory = output_dir / "simple" / "piw-pruned"
    wait_for(lambda: not (directory / alias).exists(), 10, "the alias pruned")
    assert not (directory / built).exists()
    assert set(listed(output_dir, "piw-pruned")) == {
        kept, kept.replace("linux_armv7l", "linux_armv6l")}


def test_a_real_armv6l_wheel_is_never_replaced_by_an_alias(db, alias_writer, output_dir):
    built = publish(db, output_dir, "piw-both", "1.0", "linux_armv7l")
    real = publish(db, output_dir, "piw-both", "1.0", "linux_armv6l",
                   content=b"a real armv6l build")
    alias_writer.package("piw-both")
    wait_for(lambda: real in listed(output_dir, "piw-both"), 10, "the page")
    files = listed(output_dir, "piw-both")
    assert set(files) == {built, real}
    assert files[real]["hashes"]["sha256"] == hashlib.sha256(b"a real armv6l build").hexdigest()
    directory = output_dir / "simple" / "piw-both"
    assert (directory / real).read_bytes() == b"a real armv6l build"
    assert not os.path.samefile(directory / real, directory / built)


def test_a_file_in_the_way_of_an_alias_is_left_alone_and_not_listed(db, alias_writer,
                                                                   output_dir):
    built = publish(db, output_dir, "piw-blocked", "1.0", "linux_armv7l")
    alias = built.replace("linux_armv7l", "linux_armv6l")
    directory = output_dir / "simple" / "piw-blocked"
    # a real wheel of that name being put in place (its row not read yet)
    (directory / alias).write_bytes(b"someone else's bytes")
    alias_writer.package("piw-blocked")
    wait_for(lambda: built in listed(output_dir, "piw-blocked"), 10, "the page")
    assert set(listed(output_dir, "piw-blocked")) == {built}
    assert (directory / alias).read_bytes() == b"someone else's bytes"
    assert not (directory / (alias + ".metadata")).exists()


def test_a_quarantine_withholds_and_restores_the_alias(db, alias_writer, output_dir):
    built = publish(db, output_dir, "piw-held", "1.0", "linux_armv7l")
    alias = built.replace("linux_armv7l", "linux_armv6l")
    alias_writer.package("piw-held")
    wait_for(lambda: alias in listed(output_dir, "piw-held"), 10, "the alias listed")
    db.set_upstream_status("piw-held", "quarantined", "malware")
    alias_writer.package("piw-held")
    held = output_dir / ".withheld" / "piw-held"
    wait_for(lambda: (held / alias).exists(), 10, "the alias withheld")
    assert not (output_dir / "simple" / "piw-held" / alias).exists()
    assert os.path.samefile(held / alias, held / built)
    db.set_upstream_status("piw-held", "active")
    alias_writer.package("piw-held")
    wait_for(lambda: alias in listed(output_dir, "piw-held"), 10, "the alias restored")
    assert os.path.samefile(output_dir / "simple" / "piw-held" / alias,
                            output_dir / "simple" / "piw-held" / built)


# --- the reconciliation at start ---------------------------------------------------------

def test_reconcile_keeps_removes_and_asks_for_aliases(db, output_dir):
    tree = OutputTree(output_dir)
    built = publish(db, output_dir, "piw-recon", "1.0", "linux_armv7l")
    alias = built.replace("linux_armv7l", "linux_armv6l")
    directory = tree.simple_dir("piw-recon")
    # turned on: the alias is missing, so the project's pages are to be written again
    done = reconcile(db, tree, ARMV6)
    assert done.packages == {"piw-recon"} and not done.set_aside and not done.leftovers
    assert tree.link_alias("piw-recon", built, alias)
    # in place: kept, nothing to do
    done = reconcile(db, tree, ARMV6)
    assert (directory / alias).exists() and not done.packages and not done.leftovers
    # turned off: the second name goes, the wheel stays (not set aside as an orphan)
    done = reconcile(db, tree, NO_ALIASES)
    assert not (directory / alias).exists() and not (directory / (alias + ".metadata")).exists()
    assert (directory / built).exists() and not done.set_aside
    assert done.leftovers == [directory / alias]
    # stale: a file of the alias name that is not the wheel (an older one of that name)
    (directory / alias).write_bytes(b"old bytes")
    done = reconcile(db, tree, ARMV6)
    assert not (directory / alias).exists() and done.packages == {"piw-recon"}
    # a wheel without a row and its alias: set aside once, under one name
    orphan = "piw_recon-9.0-cp311-cp311-linux_armv7l.whl"
    (directory / orphan).write_bytes(b"no row")
    os.link(directory / orphan, directory / orphan.replace("armv7l", "armv6l"))
    done = reconcile(db, tree, ARMV6)
    assert len(done.set_aside) == 1 and done.set_aside[0].read_bytes() == b"no row"
    assert not list(directory.glob("piw_recon-9.0-*"))
    assert (directory / built).exists()
