"""piwheels.build_user on a real directory tree: what a user cannot reach, how a
private mount namespace reaches it, and the errors when nothing can."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from piwheels.build_user import Identity, Passage, closed_above
from piwheels.errors import ConfigError


@pytest.fixture
def tree():
    """/tmp/X (open) with home/ (mode 700) holding prefix/bin/tool, and open/ beside it."""
    base = Path(tempfile.mkdtemp(prefix="piw-build-user-"))
    os.chmod(base, 0o755)
    home = base / "home"
    (home / "prefix" / "bin").mkdir(parents=True)
    (home / "prefix" / "bin" / "tool").write_text("reached\n")
    (home / "secret").mkdir()
    (home / "lone-file").write_text("alone\n")
    (base / "open").mkdir()
    (base / "stage").mkdir()
    for directory in (home / "prefix", home / "prefix" / "bin", base / "open"):
        os.chmod(directory, 0o755)
    os.chmod(home / "prefix" / "bin" / "tool", 0o644)
    os.chmod(home / "lone-file", 0o644)
    os.chmod(home / "secret", 0o700)
    os.chmod(home, 0o700)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def test_what_a_user_cannot_reach(tree):
    who = Identity.stand_in("newcomer")
    assert closed_above(tree / "home" / "prefix" / "bin" / "tool", who) == tree / "home"
    assert closed_above(tree / "open", who) is None
    passage = Passage(who, [tree / "home" / "prefix", tree / "home" / "prefix" / "bin",
                            tree / "open"], tree / "stage")
    assert passage.openings == {tree / "home": [tree / "home" / "prefix"]}
    assert passage.fix_command() == f"chmod o+x {tree / 'home'}"
    assert not Passage(who, [tree / "open"], tree / "stage").needed


def test_a_needed_tree_closed_itself_or_a_stage_inside_is_an_error(tree):
    who = Identity.stand_in("newcomer")
    with pytest.raises(ConfigError, match=rf"cannot read {tree}/home/secret .*"
                                          rf"`chmod -R o\+rX {tree}/home/secret`"):
        Passage(who, [tree / "home" / "secret"], tree / "stage")
    with pytest.raises(ConfigError, match="lies under .* set TMPDIR"):
        Passage(who, [tree / "home" / "prefix"], tree / "home" / "stage")


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces are made as root")
def test_the_namespace_reaches_the_tree_and_leaves_the_host_alone(tree):
    who = Identity.stand_in("newcomer")
    tool = tree / "home" / "prefix" / "bin" / "tool"
    direct = subprocess.run(["cat", str(tool)], capture_output=True, text=True,
                            user=who.uid, group=who.gid, extra_groups=[])
    assert direct.returncode != 0 and "Permission denied" in direct.stderr
    needs = [tree / "home" / "prefix", tree / "home" / "lone-file"]
    args, kwargs = Passage(who, needs, tree / "stage").command(
        ["sh", "-c", f"id -u; cat {tool} {needs[1]}; ls -A {tree / 'home'}"])
    inside = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert inside.returncode == 0, inside.stderr
    # as the user, the tool is readable, and nothing else of the closed home is there
    assert inside.stdout.split("\n") == [str(who.uid), "reached", "alone", "lone-file",
                                         "prefix", ""]
    assert (tree / "home").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in (tree / "home").iterdir()) == ["lone-file", "prefix",
                                                                 "secret"]
    assert list((tree / "stage").iterdir()) == []
