"""Reading wheels and the master's acceptance check, on real and on crafted wheels.

Real wheels come from factory sdists built once per module with ``pip wheel``
(no build isolation: setuptools of the test environment, no index needed).
Broken wheels are crafted with zipfile, one defect each.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import msgpack
import pytest
from packaging.tags import sys_tags
from sdist_factory import build_wheels, make_sdist
from voluptuous import Invalid
from wheel_craft import craft_wheel, record_hash, with_header

from piwheels import limits
from piwheels.errors import HashMismatch, WheelError
from piwheels.protocols import FILE_FACTS, MAX_FACT_ITEMS, MAX_METADATA_BYTES, message
from piwheels.wheel_facts import (
    UnpackLimits,
    WheelFacts,
    check_identity,
    check_wheel,
    inspect_wheel,
    sha256_file,
)

PY_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
# The platform a local build is tagged with (not manylinux or musllinux).
PLATFORM = [
    tag.platform for tag in sys_tags()
    if (tag.interpreter, tag.abi) == (PY_TAG, PY_TAG)
    and not tag.platform.startswith(("manylinux", "musllinux"))
][-1]
OTHER_PLATFORM = "linux_aarch64" if PLATFORM != "linux_aarch64" else "linux_x86_64"
OTHER_PY_TAG = "cp313" if PY_TAG != "cp313" else "cp312"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def real_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A pure and a C extension wheel, built from factory sdists by pip."""
    root = tmp_path_factory.mktemp("real-wheels")
    sdists = [
        make_sdist(root / "sdists", "piw_facts", "1.0", requires_python=">=3.8",
                   requires=["attrs>=20", 'six; python_version < "3"']),
        make_sdist(root / "sdists", "piw-facts-ext", "2.1", kind="c_ext"),
    ]
    build_wheels(sdists, root / "wheels", root)
    [pure] = (root / "wheels").glob("piw_facts-1.0-*.whl")
    [ext] = (root / "wheels").glob("piw_facts_ext-2.1-*.whl")
    return {"pure": pure, "ext": ext}


# --- crafting wheels ------------------------------------------------------------------


def check(path: Path, **overrides) -> WheelFacts:
    facts = {
        "package": "piw-craft", "version": "1.0", "claimed": None, "builder_abi": PY_TAG,
        "builder_platform": PLATFORM, "max_size": 10 * MiB,
        "unpack": UnpackLimits(max_unpacked=40 * MiB, max_ratio=100),
    }
    facts.update(overrides)
    return check_wheel(path, **facts)


# --- facts of real wheels --------------------------------------------------------------


def test_pure_wheel_facts(real_wheels: dict[str, Path]) -> None:
    path = real_wheels["pure"]
    facts = inspect_wheel(path)
    assert facts.filename == path.name == "piw_facts-1.0-py3-none-any.whl"
    assert (facts.package_tag, facts.version_tag) == ("piw_facts", "1.0")
    assert (facts.py_tag, facts.abi_tag, facts.platform_tag) == ("py3", "none", "any")
    assert facts.size == path.stat().st_size
    assert facts.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == sha256_file(path)
    assert facts.requires_python == ">=3.8"
    assert facts.requires_dist == ("attrs>=20", 'six; python_version < "3"')
    with zipfile.ZipFile(path) as wheel:
        assert facts.metadata == wheel.read("piw_facts-1.0.dist-info/METADATA")
    assert facts.metadata_sha256 == hashlib.sha256(facts.metadata).hexdigest()
    assert facts.apt_dependencies == ()


APT_TOOLS = ("readelf", "ldd", "dpkg", "dpkg-query")


@pytest.fixture
def apt_tools() -> None:
    """The apt line's tools are required here (.ci/run installs binutils): a
    missing one fails the test with its name rather than skipping it."""
    missing = [tool for tool in APT_TOOLS if shutil.which(tool) is None]
    assert not missing, f"the apt line's tests need {missing} (Debian: binutils, libc-bin, dpkg)"


@pytest.mark.usefixtures("apt_tools")
def test_extension_wheel_lists_no_apt_packages_every_system_has(real_wheels: dict[str, Path]) -> None:
    facts = inspect_wheel(real_wheels["ext"])
    assert facts.filename == f"piw_facts_ext-2.1-{PY_TAG}-{PY_TAG}-{PLATFORM}.whl"
    assert (facts.py_tag, facts.abi_tag, facts.platform_tag) == (PY_TAG, PY_TAG, PLATFORM)
    assert facts.apt_dependencies == ()  # it needs libc.so.6 alone: libc6 is on every system


def _system_library(soname: str) -> Optional[Path]:
    """Where the loader finds *soname* on this machine, if it is a file dpkg owns."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for directory in (f"/usr/lib/{multiarch}", f"/lib/{multiarch}", "/usr/lib", "/lib"):
        if (Path(directory) / soname).is_file():
            return Path(directory) / soname
    return None


def _dpkg_owner(path: Path) -> str:
    for query in (str(path), str(path.resolve()), str(path).removeprefix("/usr")):
        result = subprocess.run(["dpkg", "-S", query], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.split(":", 1)[0]
    raise AssertionError(f"dpkg owns no {path}")


@pytest.mark.usefixtures("apt_tools")
def test_apt_line_holds_the_packages_of_direct_dt_needed_libraries_only(tmp_path: Path) -> None:
    """An extension needing libpq (which itself needs libssl, Kerberos, LDAP...)
    and libm, and bundling a library of its own that needs libpng (which needs
    zlib): the apt line is libpq's and libpng's packages, nothing of their
    closure, nothing every system has, nothing the wheel bundles."""
    assert shutil.which("gcc"), "this test compiles its extension with gcc"
    assert _system_library("libpq.so.5") and _system_library("libpng16.so.16"), \
        "this test links libpq5 and libpng16-16 (.ci/run installs them)"
    libpq, libpng = _system_library("libpq.so.5"), _system_library("libpng16.so.16")
    build = tmp_path / "build"
    (build / "piw_dt.libs").mkdir(parents=True)
    (build / "src.c").write_text("int piw_dt(void) { return 42; }\n")
    bundled = build / "piw_dt.libs" / "libpiwbundle-1a2b3c.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(bundled), str(build / "src.c"),
                    "-Wl,--no-as-needed", "-Wl,-soname,libpiwbundle-1a2b3c.so", str(libpng)],
                   check=True)
    extension = build / "_ext.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(extension), str(build / "src.c"),
                    "-Wl,--no-as-needed", str(libpq), "-lm", str(bundled),
                    "-Wl,-rpath,$ORIGIN/piw_dt.libs"], check=True)
    needed = subprocess.run(["readelf", "-dW", str(extension)], capture_output=True,
                            text=True, check=True).stdout
    assert "[libpq.so.5]" in needed and "[libpiwbundle-1a2b3c.so]" in needed
    closure = subprocess.run(["ldd", str(extension)], capture_output=True, text=True).stdout
    assert "libssl" in closure and "libz.so" in closure  # what the old ldd lookup counted

    wheel = craft_wheel(tmp_path, f"piw_dt-1.0-{PY_TAG}-{PY_TAG}-{PLATFORM}.whl", name="piw-dt",
                        files={"piw_dt/_ext.so": extension.read_bytes(),
                               "piw_dt.libs/libpiwbundle-1a2b3c.so": bundled.read_bytes()})
    facts = inspect_wheel(wheel)
    assert facts.apt_dependencies == tuple(sorted({_dpkg_owner(libpq), _dpkg_owner(libpng)}))
    assert "libc6" not in facts.apt_dependencies and "zlib1g" not in facts.apt_dependencies
    assert inspect_wheel(wheel, find_apt_deps=False).apt_dependencies == ()


@pytest.mark.usefixtures("apt_tools")
def test_without_readelf_the_apt_line_is_empty_not_an_error(
        real_wheels: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ldd", "dpkg", "dpkg-query"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))
    assert inspect_wheel(real_wheels["ext"]).apt_dependencies == ()


def test_facts_survive_a_msgpack_message(real_wheels: dict[str, Path]) -> None:
    facts = inspect_wheel(real_wheels["pure"])
    data = facts.to_dict()
    assert {type(value) for value in data.values()} <= {str, int, bytes, list, type(None)}
    wire = msgpack.unpackb(msgpack.packb(data, use_bin_type=True), raw=False)
    assert WheelFacts.from_dict(wire) == facts


def test_the_facts_schema_is_the_record_and_holds_its_limits(real_wheels: dict[str, Path]) -> None:
    """BUILT's facts schema is derived from WheelFacts: the same fields, each held
    to the width of the column that stores it."""
    facts = inspect_wheel(real_wheels["pure"]).to_dict()
    assert list(FILE_FACTS) == [f.name for f in dataclasses.fields(WheelFacts)]
    assert set(FILE_FACTS) == set(facts)
    schema = message(FILE_FACTS)
    assert WheelFacts.from_dict(schema(facts)) == WheelFacts.from_dict(facts)
    for name, width in (("filename", limits.FILENAME), ("package_tag", limits.NAME),
                        ("version_tag", limits.VERSION), ("py_tag", limits.TAG),
                        ("abi_tag", limits.TAG), ("platform_tag", limits.TAG),
                        ("requires_python", limits.REQUIRES_PYTHON)):
        schema({**facts, name: "x" * width})
        with pytest.raises(Invalid, match=name):
            schema({**facts, name: "x" * (width + 1)})
    with pytest.raises(Invalid, match="sha256"):
        schema({**facts, "sha256": "0" * (limits.SHA256 - 1)})
    with pytest.raises(Invalid, match="extra keys"):
        schema({**facts, "filesize": 1})


def test_real_wheels_pass_the_acceptance_check(real_wheels: dict[str, Path]) -> None:
    for key, package, version in (("pure", "piw.facts", "1.0"), ("ext", "Piw_Facts_Ext", "2.1.0")):
        path = real_wheels[key]
        facts = check(path, package=package, version=version)
        assert facts == WheelFacts(**{**inspect_wheel(path).__dict__, "apt_dependencies": ()})
        # a true claim is the facts again: the apt packages are the builder's to say
        claimed = inspect_wheel(path)
        assert check(path, package=package, version=version, claimed=claimed) == claimed


#: a builder's false claim about the real pure wheel -> what the reason says
FALSE_CLAIMS = {
    "name": (lambda f: {"metadata": with_header(f.metadata, "Name", "evil")},
             "METADATA with Name 'evil', but the file's has 'piw-facts'"),
    "version": (lambda f: {"metadata": with_header(f.metadata, "Version", "6.6")},
                "METADATA with Version '6.6', but the file's has '1.0'"),
    "requires_dist": (lambda f: {"requires_dist": ("attrs>=20",)},
                      "Requires-Dist 'attrs>=20', but the file has 'attrs>=20, six;"),
    "requires_python": (lambda f: {"requires_python": ">=2.7"},
                        "Requires-Python '>=2.7', but the file has '>=3.8'"),
    "py_tag": (lambda f: {"py_tag": "py2"}, "Python tag 'py2', but the file has 'py3'"),
    "abi_tag": (lambda f: {"abi_tag": PY_TAG}, f"ABI tag '{PY_TAG}', but the file has 'none'"),
    "platform_tag": (lambda f: {"platform_tag": PLATFORM},
                     f"platform tag '{PLATFORM}', but the file has 'any'"),
    "size": (lambda f: {"size": f.size + 1}, "size '{}', but the file has '{}'"),
    "sha256": (lambda f: {"sha256": "0" * 64}, "SHA-256 '" + "0" * 64 + "', but the file"),
    "metadata": (lambda f: {"metadata": with_header(f.metadata, "Summary", "trust me")},
                 "METADATA of"),
    "metadata_sha256": (lambda f: {"metadata_sha256": "0" * 64}, "METADATA SHA-256 '0000"),
}


@pytest.mark.parametrize("fact", sorted(FALSE_CLAIMS))
def test_a_false_claim_is_rejected_naming_the_fact(real_wheels: dict[str, Path],
                                                    fact: str) -> None:
    path = real_wheels["pure"]
    true = inspect_wheel(path, find_apt_deps=False)
    change, reason = FALSE_CLAIMS[fact]
    claimed = dataclasses.replace(true, **change(true))
    if fact == "size":
        reason = reason.format(true.size + 1, true.size)
    with pytest.raises(WheelError) as raised:
        check(path, package="piw-facts", claimed=claimed)
    message = str(raised.value)
    assert message.startswith("the builder reported ") and reason in message
    assert "\n" not in message and len(message) < limits.REASON
    assert isinstance(raised.value, HashMismatch) == (fact == "sha256")


def test_every_checked_fact_has_a_false_claim_tested() -> None:
    checked = {f.name for f in dataclasses.fields(WheelFacts) if f.metadata["checked"]}
    # the name and version are METADATA's (the file name's are the tested tags')
    assert checked - {"filename", "package_tag", "version_tag"} <= set(FALSE_CLAIMS)
    assert {f.name for f in dataclasses.fields(WheelFacts)} - checked == {"apt_dependencies"}


def test_compressed_tag_sets_are_kept_as_written(tmp_path: Path) -> None:
    path = craft_wheel(tmp_path, "piw_craft-1.0-py2.py3-none-any.whl")
    facts = check(path)
    assert (facts.py_tag, facts.abi_tag, facts.platform_tag) == ("py2.py3", "none", "any")


def test_signature_files_and_record_itself_need_no_hash(tmp_path: Path) -> None:
    path = craft_wheel(tmp_path, files={
        "piw_craft.py": b"X = 1\n",
        "piw_craft-1.0.dist-info/RECORD.jws": b"{}",
    })
    assert check(path).filename == path.name
    with zipfile.ZipFile(path) as wheel:
        record = wheel.read("piw_craft-1.0.dist-info/RECORD").decode()
    assert "piw_craft-1.0.dist-info/RECORD,," in record


def test_tags_the_builder_can_make_are_accepted(tmp_path: Path) -> None:
    for tags in (f"{PY_TAG}-abi3-{PLATFORM}", f"py3-none-{PLATFORM}", "py3-none-any",
                 f"{PY_TAG}-{PY_TAG}-{PLATFORM}", f"{PY_TAG}-none-any"):
        path = craft_wheel(tmp_path, f"piw_craft-1.0-{tags}.whl")
        assert check(path).filename == path.name
    # nothing is known of the builder: any tag will do
    path = craft_wheel(tmp_path, "piw_craft-1.0-cp399-cp399-linux_sparc.whl")
    assert check(path, builder_abi=None, builder_platform=None).abi_tag == "cp399"


# --- rejections -----------------------------------------------------------------------


@pytest.mark.parametrize("filename, reason", [
    ("piw_craft-1.0.tar.gz", "is not a wheel file name"),
    ("piw_craft-1.0.whl", "is not a wheel file name"),
    ("piw craft-1.0-py3-none-any.whl", "is not a wheel file name"),
    ("../piw_craft-1.0-py3-none-any.whl", "is not a plain file name"),
    ("sub/piw_craft-1.0-py3-none-any.whl", "is not a plain file name"),
    ("sub\\piw_craft-1.0-py3-none-any.whl", "is not a plain file name"),
    (".piw_craft-1.0-py3-none-any.whl", "is not a plain file name"),
    ("", "is not a plain file name"),
])
def test_bad_file_names_are_rejected(tmp_path: Path, filename: str, reason: str) -> None:
    path = craft_wheel(tmp_path)
    with pytest.raises(WheelError, match=reason):
        check(path, filename=filename)


def test_a_wheel_over_the_size_limit_is_rejected(tmp_path: Path) -> None:
    path = craft_wheel(tmp_path)
    size = path.stat().st_size
    assert check(path, max_size=size).size == size
    with pytest.raises(WheelError, match=f"is {size} bytes, over the limit of {size - 1} bytes"):
        check(path, max_size=size - 1)


def test_a_wheel_that_unpacks_too_far_is_rejected(tmp_path: Path) -> None:
    path = craft_wheel(tmp_path, files={"piw_craft/data.bin": os.urandom(MiB)},
                       compression=zipfile.ZIP_DEFLATED)
    assert check(path).size == path.stat().st_size
    with pytest.raises(WheelError, match="unpacks to .* bytes, over the limit of 500000 bytes"):
        check(path, unpack=UnpackLimits(max_unpacked=500_000, max_ratio=100))


def test_a_zip_bomb_is_rejected_by_its_compression_ratio(tmp_path: Path) -> None:
    # 16 MiB of zeros deflate to ~16 KB: a thousandfold, as a bomb's members do
    path = craft_wheel(tmp_path, files={"piw_craft/zeros.bin": bytes(16 * MiB)},
                       compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    with pytest.raises(WheelError, match=r"unpacks to \d+ times its compressed size, "
                                         r"over the limit of 100"):
        check(path)
    assert check(path, unpack=UnpackLimits(max_unpacked=40 * MiB, max_ratio=5000)).size


def test_small_files_that_compress_far_are_fine(tmp_path: Path) -> None:
    path = craft_wheel(tmp_path, files={"piw_craft/zeros.txt": bytes(MiB // 2),
                                        "piw_craft/__init__.py": b"ANSWER = 42\n"},
                       compression=zipfile.ZIP_DEFLATED)
    assert check(path).size == path.stat().st_size


def test_a_member_that_unpacks_past_its_declared_size_is_rejected(tmp_path: Path) -> None:
    """The zip directory can lie; unpacking stops where it said the member ends."""
    path = craft_wheel(tmp_path, files={"piw_craft/zeros.bin": bytes(4 * MiB)},
                       compression=zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    declared = (4 * MiB).to_bytes(4, "little")
    # every size field that says 4 MiB (local header, central directory) says 1000
    count = 0
    at = data.find(declared)
    while at != -1:
        data[at:at + 4] = (1000).to_bytes(4, "little")
        count += 1
        at = data.find(declared, at + 4)
    assert count == 2
    path.write_bytes(bytes(data))
    with pytest.raises(WheelError, match="zeros.bin"):
        check(path)


def test_an_oversized_metadata_is_rejected_before_it_is_read(tmp_path: Path) -> None:
    metadata = (b"Metadata-Version: 2.1\nName: piw-craft\nVersion: 1.0\n\n"
                + b"x" * (MAX_METADATA_BYTES + 1))
    path = craft_wheel(tmp_path, metadata=metadata)
    with pytest.raises(WheelError, match=f"METADATA in .* over the limit of {MAX_METADATA_BYTES}"):
        check(path)
    with pytest.raises(WheelError, match="over the limit"):
        inspect_wheel(path, find_apt_deps=False)


def test_size_and_hash_are_checked_before_the_zip_is_opened(tmp_path: Path) -> None:
    path = craft_wheel(tmp_path)
    claimed = inspect_wheel(path, find_apt_deps=False)
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # the zip's end no longer parses
    with pytest.raises(HashMismatch, match="the builder reported SHA-256"):
        check(path, claimed=claimed)
    path.write_bytes(b"not a zip")
    with pytest.raises(WheelError, match=f"the builder reported size '{claimed.size}', "
                                         f"but the file has '9'"):
        check(path, claimed=claimed)


def test_a_file_that_is_not_a_zip_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "piw_craft-1.0-py3-none-any.whl"
    path.write_bytes(b"this is not a zip file at all")
    with pytest.raises(WheelError, match="is not a valid zip file"):
        check(path)
    with pytest.raises(WheelError, match="is not a valid zip file"):
        inspect_wheel(path)


def test_a_truncated_wheel_is_rejected(tmp_path: Path) -> None:
    path = craft_wheel(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WheelError, match="is not a valid zip file"):
        check(path)


def test_corrupt_member_data_is_rejected(tmp_path: Path) -> None:
    path = craft_wheel(tmp_path, files={"piw_craft.py": b"ANSWER = 42  # untouched\n"})
    data = path.read_bytes()
    assert data.count(b"untouched") == 1
    path.write_bytes(data.replace(b"untouched", b"TAMPERED!"))
    with pytest.raises(WheelError, match="is corrupt at piw_craft.py: Bad CRC-32"):
        check(path)


@pytest.mark.parametrize("member, reason", [
    ("/etc/evil.py", "a member with an absolute path"),
    ("\\evil.py", "a member with an absolute path"),
    ("C:/evil.py", "a member with an absolute path"),
    ("../evil.py", "a member that climbs out with '..'"),
    ("piw_craft/../../evil.py", "a member that climbs out with '..'"),
    ("piw_craft\\..\\evil.py", "a member that climbs out with '..'"),
    ("piw_craft/evil\n.py", "a member with a control character in its name"),
])
def test_members_outside_the_wheel_are_rejected(tmp_path: Path, member: str, reason: str) -> None:
    path = craft_wheel(tmp_path, files={"piw_craft.py": b"X = 1\n", member: b"evil\n"})
    with zipfile.ZipFile(path) as wheel:
        assert member in wheel.namelist()  # zipfile wrote the name as given
    with pytest.raises(WheelError, match=reason):
        check(path)


def test_a_member_stored_twice_is_rejected(tmp_path: Path) -> None:
    path = craft_wheel(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        with zipfile.ZipFile(path, "a") as wheel:
            wheel.writestr("piw_craft.py", b"import os; os.system('evil')\n")
    with pytest.raises(WheelError, match="holds piw_craft.py twice"):
        check(path)


def test_a_wheel_without_record_is_rejected(tmp_path: Path) -> None:
    path = craft_wheel(tmp_path, record="omit")
    with pytest.raises(WheelError, match="has no piw_craft-1.0.dist-info/RECORD"):
        check(path)


DEFAULT_MEMBERS = {
    "piw_craft.py": b"ANSWER = 42\n",
    "piw_craft-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: piw-craft\nVersion: 1.0\n",
    "piw_craft-1.0.dist-info/WHEEL": (
        b"Wheel-Version: 1.0\nGenerator: piwheels-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"),
}


def _record(replace: Optional[dict[str, str]] = None) -> str:
    """A correct RECORD for the default crafted wheel, with some lines replaced ("": dropped)."""
    lines = {
        member: f"{member},{record_hash(data)},{len(data)}"
        for member, data in DEFAULT_MEMBERS.items()
    }
    lines["piw_craft-1.0.dist-info/RECORD"] = "piw_craft-1.0.dist-info/RECORD,,"
    lines.update(replace or {})
    return "".join(f"{line}\n" for line in lines.values() if line)


GOOD_HASH = record_hash(DEFAULT_MEMBERS["piw_craft.py"])


@pytest.mark.parametrize("record, reason", [
    (_record({"piw_craft.py": f"piw_craft.py,{record_hash(b'ANSWER = 43')},12"}),
     "piw_craft.py in .* does not match its RECORD hash"),
    (_record({"piw_craft.py": f"piw_craft.py,{GOOD_HASH},99"}),
     "piw_craft.py in .* is 12 bytes, but its RECORD says 99"),
    (_record({"piw_craft.py": ""}), "holds piw_craft.py, which its RECORD does not list"),
    (_record() + "piw_craft/missing.py,sha256=abc,3\n",
     "lists piw_craft/missing.py, which the wheel lacks"),
    (_record({"piw_craft.py": "piw_craft.py,,12"}), "has no hash for piw_craft.py"),
    (_record({"piw_craft.py": "piw_craft.py,md5=abcdef,12"}), "hashes piw_craft.py with 'md5'"),
    (_record({"piw_craft.py": "piw_craft.py,sha256=abc"}), "a line of 2 fields, not 3"),
    (_record() + _record(), "lists piw_craft.py twice"),
])
def test_record_must_match_every_member(tmp_path: Path, record: str, reason: str) -> None:
    path = craft_wheel(tmp_path, record=record)
    with pytest.raises(WheelError, match=reason):
        check(path)


def test_the_default_record_is_right(tmp_path: Path) -> None:
    assert check(craft_wheel(tmp_path, record=_record())).size > 0


@pytest.mark.parametrize("package, version, reason", [
    ("piw-other", "1.0", "is for project 'piw-craft' .* but the build was of 'piw-other'"),
    ("piw-craft", "1.1", "is version 1.0 .* but the build was of version 1.1"),
    ("piw-craft", "not a version", "the build's version 'not a version' is not a valid version"),
])
def test_the_wheel_must_be_of_the_job(tmp_path: Path, package: str, version: str,
                                      reason: str) -> None:
    path = craft_wheel(tmp_path)
    with pytest.raises(WheelError, match=reason):
        check(path, package=package, version=version)


def test_names_and_versions_are_compared_in_normal_form(tmp_path: Path) -> None:
    path = craft_wheel(tmp_path, name="Piw.Craft", version="1.0.0")
    assert check(path, package="PIW_craft", version="1.0").package_tag == "piw_craft"


def test_metadata_must_agree_with_the_file_name(tmp_path: Path) -> None:
    # the file name says 1.0 like the job, METADATA says 2.0
    path = craft_wheel(tmp_path, dist_info="piw_craft-1.0.dist-info",
                       metadata=b"Metadata-Version: 2.1\nName: piw-craft\nVersion: 2.0\n")
    with pytest.raises(WheelError, match="is version 2.0 \\(file name: 1.0\\)"):
        check(path)
    path = craft_wheel(tmp_path, dist_info="piw_craft-1.0.dist-info",
                       metadata=b"Metadata-Version: 2.1\nName: piw-other\nVersion: 1.0\n")
    with pytest.raises(WheelError, match="is for project 'piw-other' \\(file name: 'piw_craft'\\)"):
        check(path)
    with pytest.raises(WheelError, match="is for project 'piw-other'"):
        check_identity(inspect_wheel(path), package="piw-craft", version="1.0")


@pytest.mark.parametrize("metadata, reason", [
    (b"Metadata-Version: 2.1\nName: piw-craft\n", "has no Name or no Version"),
    (b"Metadata-Version: 2.1\nName: piw-craft\nVersion: one\n", "has an invalid Version 'one'"),
    (b"Metadata-Version: 2.1\nName: piw-\xff\nVersion: 1.0\n", "is not UTF-8"),
])
def test_bad_metadata_is_rejected(tmp_path: Path, metadata: bytes, reason: str) -> None:
    path = craft_wheel(tmp_path, metadata=metadata)
    with pytest.raises(WheelError, match=reason):
        check(path)


def test_a_wheel_needs_one_dist_info_with_metadata(tmp_path: Path) -> None:
    path = craft_wheel(tmp_path, files={"piw_craft.py": b"X = 1\n",
                                        "piw_craft-2.0.dist-info/METADATA": b"Name: x\n"})
    with pytest.raises(WheelError, match="has 2 .dist-info directories"):
        check(path)
    path = tmp_path / "piw_craft-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("piw_craft.py", b"X = 1\n")
    with pytest.raises(WheelError, match="has no .dist-info directories"):
        inspect_wheel(path)
    path = craft_wheel(tmp_path, files={"piw_craft-1.0.dist-info/WHEEL": b""},
                       metadata=b"", record="omit")
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("piw_craft-1.0.dist-info/WHEEL", b"")
    with pytest.raises(WheelError, match="holds no piw_craft-1.0.dist-info/METADATA"):
        inspect_wheel(path)


@pytest.mark.parametrize("tags, bad_tag", [
    (f"{OTHER_PY_TAG}-{OTHER_PY_TAG}-{PLATFORM}", f"{OTHER_PY_TAG}-{OTHER_PY_TAG}-{PLATFORM}"),
    (f"{PY_TAG}-{PY_TAG}-{OTHER_PLATFORM}", f"{PY_TAG}-{PY_TAG}-{OTHER_PLATFORM}"),
    (f"py3-none-{OTHER_PLATFORM}", f"py3-none-{OTHER_PLATFORM}"),
    (f"{PY_TAG}-abi3-win_amd64", f"{PY_TAG}-abi3-win_amd64"),
    (f"py3-none-any.{PLATFORM}.{OTHER_PLATFORM}", f"py3-none-{OTHER_PLATFORM}"),
])
def test_tags_the_builder_cannot_make_are_rejected(tmp_path: Path, tags: str,
                                                   bad_tag: str) -> None:
    path = craft_wheel(tmp_path, f"piw_craft-1.0-{tags}.whl")
    with pytest.raises(WheelError, match=f"has tag {bad_tag}, which a builder for ABI {PY_TAG}"):
        check(path)


def test_more_requirements_than_a_message_carries_are_refused(tmp_path: Path) -> None:
    lines = "".join(f"Requires-Dist: dep{i}\n" for i in range(MAX_FACT_ITEMS + 1))
    metadata = f"Metadata-Version: 2.1\nName: piw-craft\nVersion: 1.0\n{lines}".encode()
    path = craft_wheel(tmp_path, metadata=metadata)
    with pytest.raises(WheelError, match=f"{MAX_FACT_ITEMS + 1} Requires-Dist lines, over "
                                         f"the limit of {MAX_FACT_ITEMS}"):
        inspect_wheel(path, find_apt_deps=False)
