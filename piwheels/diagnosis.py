"""Why a build failed, read from its log: a cause code, one line of detail, what was missing.

Pure: no I/O.  :data:`CAUSES` is the one declaration of the cause codes the
farm stores, shows and skips by; :func:`diagnose` maps a failed build's log and
the slave's one-line reason onto one of them, and :func:`import_failure` does
the same for the traceback of a built wheel that does not import.  What was
missing (a header, a library, a ``pkg-config`` module, a program, a shared
object) comes back as a :class:`Wanted`, which :mod:`piwheels.debian_lookup`
turns into the Debian package that provides it.

Logs come from build code and may be huge or hostile: only the tail of the log
is read (:data:`TAIL_CHARS`, :data:`TAIL_LINES`), lines are clipped (:data:`LINE_CHARS`), every
pattern is tried only on lines holding its literal keyword, and no pattern has
nested repetition, so the work is linear in the bytes read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

from .limits import CAUSE_DETAIL

#: How much of the end of a build log is read (errors are at its end) ...
TAIL_CHARS = 256 * 1024
#: ... and at most how many of its last lines.
TAIL_LINES = 4000
#: The longest line looked at; longer lines are cut to this many characters.
LINE_CHARS = 4096


@dataclass(frozen=True)
class Cause:
    """One kind of build failure, as pages show it and the skip rules weigh it."""

    code: str
    #: what a page shows, e.g. "missing header"
    label: str
    #: the same sdist on the same builder image fails the same way again
    deterministic: bool
    #: installing something on the builder can fix it
    fixable_by_image: bool


#: The one declaration of cause codes: code -> :class:`Cause`.
CAUSES: dict[str, Cause] = {cause.code: cause for cause in (
    Cause("missing-header", "missing header", True, True),
    Cause("missing-library", "missing library", True, True),
    Cause("missing-pkg-config", "missing pkg-config module", True, True),
    Cause("missing-program", "missing program", True, True),
    Cause("out-of-memory", "out of memory", False, False),
    Cause("timeout", "timed out", False, False),
    Cause("needs-rust", "needs a Rust toolchain", True, True),
    Cause("needs-newer-compiler", "needs a newer compiler", True, True),
    Cause("needs-newer-python", "needs a newer Python", True, False),
    Cause("broken-sdist", "broken sdist", True, False),
    Cause("no-sdist", "no sdist", True, False),
    Cause("upstream-unreachable", "upstream unreachable", False, False),
    Cause("smoke-import", "wheel does not import", True, True),
    Cause("unknown", "unknown", False, False),
)}

#: The slave's reason for a build it stopped at its time limit ("timed out after 900 s").
TIMEOUT_REASON = "timed out after {timeout_s:g} s"
#: The words of the slave's reason for a build that ran out of its memory limit.
OUT_OF_MEMORY_REASON = "out of memory (the limit is {limit_mib} MiB)"

WANTED_KINDS = ("header", "library", "pkg-config", "program", "soname")

#: Directories shared libraries live in on Debian (multiarch and not).
_LIB_DIRS = r"/(usr/)?lib(32|64|x32)?/([^/]+/)?"


@dataclass(frozen=True)
class Wanted:
    """Something a build or an import looked for on the builder and did not find."""

    #: one of :data:`WANTED_KINDS`
    kind: str
    #: e.g. ``lber.h``, ``libxml/xmlversion.h``, ``ldap`` (for ``-lldap``),
    #: ``mysqlclient``, ``curl-config``, ``libldap-2.5.so.0``
    name: str

    def patterns(self) -> tuple[str, ...]:
        """Regular expressions (Perl's and Python's alike) for the paths that provide it,
        as ``apt-file search -x`` and :meth:`matches` use them."""
        name = re.escape(self.name)
        if self.kind == "header":
            # where the compiler looks (multiarch too), or one directory down, as a
            # -I of pkg-config's gives it: <libxml/xmlversion.h> is in
            # /usr/include/libxml2/libxml/xmlversion.h, Python.h in /usr/include/python3.11/
            return (rf"^/usr/include/([^/]+-linux-[^/]+/)?([^/]+/)?{name}$",)
        if self.kind == "library":
            return (rf"^{_LIB_DIRS}lib{name}\.(so|a)$",)
        if self.kind == "pkg-config":
            return (rf"^/usr/(lib|share)/([^/]+/)?pkgconfig/{name}\.pc$",)
        if self.kind == "program":
            return (rf"^/(usr/)?s?bin/{name}$",)
        if self.kind == "soname":
            return (rf"^{_LIB_DIRS}{name}$",)
        return ()

    def glob(self) -> str:
        """A ``dpkg -S`` pattern that finds (at least) the paths of :meth:`patterns`."""
        if self.kind == "library":
            return f"*/lib{self.name}.*"
        if self.kind == "pkg-config":
            return f"*/pkgconfig/{self.name}.pc"
        return f"*/{self.name}"

    def matches(self, path: str) -> bool:
        """Whether the file *path* provides this."""
        return any(re.search(pattern, path) for pattern in self.patterns())

    def __str__(self) -> str:
        return f"-l{self.name}" if self.kind == "library" else self.name


@dataclass(frozen=True)
class Diagnosis:
    """Why one attempt failed: a key of :data:`CAUSES`, one line, what was missing."""

    cause: str
    detail: str
    wanted: Optional[Wanted] = None

    @property
    def label(self) -> str:
        return CAUSES[self.cause].label

    def to_dict(self) -> dict[str, Optional[str]]:
        """Flat, for a message or a row: ``cause``, ``detail``, ``wanted_kind``, ``wanted_name``."""
        return {"cause": self.cause, "detail": self.detail,
                "wanted_kind": self.wanted.kind if self.wanted else None,
                "wanted_name": self.wanted.name if self.wanted else None}

    @classmethod
    def from_dict(cls, data: dict) -> "Diagnosis":
        """The inverse of :meth:`to_dict`; ValueError for an unknown cause or kind."""
        cause, detail = data.get("cause"), data.get("detail") or ""
        if cause not in CAUSES:
            raise ValueError(f"unknown cause {cause!r}; the causes are {', '.join(CAUSES)}")
        kind, name = data.get("wanted_kind"), data.get("wanted_name")
        if (kind is None) != (name is None) or (kind is not None and kind not in WANTED_KINDS):
            raise ValueError(f"bad want {kind!r} {name!r}; the kinds are {', '.join(WANTED_KINDS)}")
        if not isinstance(detail, str) or len(detail) > CAUSE_DETAIL:
            raise ValueError(f"the detail must be text of at most {CAUSE_DETAIL} characters")
        return cls(cause, detail, Wanted(kind, str(name)) if kind is not None else None)


def detail_line(text: str) -> str:
    """*text* as one line of at most :data:`~piwheels.limits.CAUSE_DETAIL` characters."""
    line = " ".join(text.split())
    return line if len(line) <= CAUSE_DETAIL else line[: CAUSE_DETAIL - 3] + "..."


# --- the rules ---------------------------------------------------------------
#
# A rule is (keywords, regex, maker): tried on a line only if one of its keywords
# is in it; the maker turns the match into a Diagnosis (or None: not this).

Maker = Callable[["re.Match[str]", str], Optional[Diagnosis]]
_NAME = r"[\w.+-]{1,200}"
_PATH = r"[\w.+/-]{1,400}"


def _want(cause: str, kind: str, group: int = 1) -> Maker:
    def make(match: "re.Match[str]", line: str) -> Optional[Diagnosis]:
        name = match.group(group)
        if kind == "library" and name.startswith("lib") and name.endswith(".so"):
            return Diagnosis(cause, detail_line(line), Wanted("soname", name))
        return Diagnosis(cause, detail_line(line), Wanted(kind, name))
    return make


def _plain(cause: str) -> Maker:
    def make(match: "re.Match[str]", line: str) -> Optional[Diagnosis]:
        return Diagnosis(cause, detail_line(line))
    return make


def _missing_file(match: "re.Match[str]", line: str) -> Optional[Diagnosis]:
    """``[Errno 2] No such file or directory: 'x'``: a program if *x* is a bare
    name, else a file the sdist lacks."""
    name = match.group(1)
    # README, VERSION, LICENSE: files; programs are lower case
    if "/" not in name and "." not in name and name.lower() == name:
        return Diagnosis("missing-program", detail_line(line), Wanted("program", name))
    return Diagnosis("broken-sdist", detail_line(line))


def _program(match: "re.Match[str]", line: str) -> Optional[Diagnosis]:
    name = match.group(1).rsplit("/", 1)[-1]
    if name in ("cargo", "rustc"):
        return Diagnosis("needs-rust", detail_line(line), Wanted("program", name))
    return Diagnosis("missing-program", detail_line(line), Wanted("program", name))


#: C++ standard library headers of C++17 and later, which an older compiler lacks.
CXX_STD_HEADERS = frozenset((
    "any", "barrier", "bit", "charconv", "compare", "concepts", "contracts", "coroutine",
    "debugging", "execution", "expected", "filesystem", "flat_map", "flat_set", "format",
    "generator", "hazard_pointer", "inplace_vector", "latch", "linalg", "mdspan",
    "memory_resource", "numbers", "optional", "print", "ranges", "rcu", "semaphore", "simd",
    "source_location", "span", "spanstream", "stacktrace", "stdfloat", "stop_token",
    "string_view", "syncstream", "text_encoding", "variant", "version",
))


def _std_header(match: "re.Match[str]", line: str) -> Optional[Diagnosis]:
    if match.group(1) in CXX_STD_HEADERS:
        return Diagnosis("needs-newer-compiler", detail_line(line))
    return None


def _rust(match: "re.Match[str]", line: str) -> Optional[Diagnosis]:
    return Diagnosis("needs-rust", detail_line(line), Wanted("program", "cargo"))


_Rule = tuple[tuple[str, ...], "re.Pattern[str]", Maker]


def _rule(keywords: tuple[str, ...], pattern: str, maker: Maker) -> _Rule:
    return keywords, re.compile(pattern), maker


#: Strong signs, each naming its cause outright: the first line (from the top of
#: the tail) holding one decides.
_RULES: tuple[_Rule, ...] = (
    # gcc: "fatal error: lber.h: No such file or directory"; clang: "'lber.h' file not found"
    _rule(("fatal error",), rf"fatal error: ({_PATH}\.(h|hh|hpp|hxx|H|inc)): No such file",
          _want("missing-header", "header")),
    _rule(("file not found",), rf"fatal error: '({_PATH}\.(h|hh|hpp|hxx|H|inc))' file not found",
          _want("missing-header", "header")),
    # GNU ld: "cannot find -lfoo" (binutils >= 2.40 adds ": No such file or directory")
    _rule(("cannot find -l",), rf"cannot find -l({_NAME})", _want("missing-library", "library")),
    # a shared object missing at build time (a tool or a build-time import)
    _rule(("cannot open shared object file",),
          rf"(lib{_NAME}\.so[\w.]{{0,40}}): cannot open shared object file",
          _want("missing-library", "soname")),
    # pkg-config itself, setuptools-based builds and meson
    _rule(("was not found in the pkg-config search path",),
          rf"Package '?({_NAME})'?,? was not found in the pkg-config search path",
          _want("missing-pkg-config", "pkg-config")),
    _rule(("required by",), rf"Package '({_NAME})', required by '.{{0,200}}', not found",
          _want("missing-pkg-config", "pkg-config")),
    _rule(("No package '",), rf"No package '({_NAME})' found",
          _want("missing-pkg-config", "pkg-config")),
    _rule(("pkg-config --exists",), rf"pkg-config --exists ({_NAME})'? returned non-zero",
          _want("missing-pkg-config", "pkg-config")),
    _rule(("Dependency",), rf"Dependency \"?({_NAME})\"? not found",
          _want("missing-pkg-config", "pkg-config")),
    # Rust: setuptools-rust, maturin (and maturin asking for puccinialin, its
    # installer of Rust, when there is no cargo: offline that cannot be had)
    _rule(("Rust compiler", "Cargo", "cargo", "rustc", "puccinialin"),
          r"can't find Rust compiler|Cargo, the Rust package manager, is not installed"
          r"|Do you have cargo in your PATH|Unable to find cargo|cargo: (command )?not found"
          r"|rustc: (command )?not found|puccinialin",
          _rust),
    # a compiler too old for the language standard the build asks for
    _rule(("unrecognized command", "unrecognised command", "invalid value"),
          r"(unrecogni[sz]ed command[- ]line option|invalid value) [‘'\"]?-std=",
          _plain("needs-newer-compiler")),
    _rule(("are supported by the", "does not support"),
          r"None of values \[.{0,80}\] are supported by the|"
          r"compiler does not support -std=|does not support C\+\+\d\d",
          _plain("needs-newer-compiler")),
    # a C++ standard library header this compiler's library does not have yet
    _rule(("fatal error",), r"fatal error: ([a-z_]{2,30}): No such file", _std_header),
    # pip: Requires-Python
    _rule(("requires a different Python", "require a different python"),
          r"requires a different Python|require a different python version",
          _plain("needs-newer-python")),
    # programs: "Could not run curl-config", "/bin/sh: 1: xml2-config: not found",
    # "OSError: mysql_config not found", "error: command 'gcc' failed: No such file"
    _rule(("Could not run",), rf"Could not run ({_NAME})", _program),
    _rule((": not found",), rf"sh: \d+: ({_PATH}): not found", _program),
    _rule(("command not found",), rf"({_NAME}): command not found", _program),
    _rule(("Error: ",), rf"(?:OS|Environment)Error: ({_NAME}) not found", _program),
    _rule(("failed: No such file",), rf"command '({_PATH})' failed: No such file", _program),
    # a file the sdist lacks, or a program started by name
    _rule(("No such file or directory: '",), rf"No such file or directory: '({_PATH})'",
          _missing_file),
    _rule(("does not exist",), r"package directory '.{1,400}' does not exist",
          _plain("broken-sdist")),
    _rule(("doesn't exist or not a regular file",), r"doesn't exist or not a regular file",
          _plain("broken-sdist")),
    _rule(("has inconsistent",), r"has inconsistent (version|name)", _plain("broken-sdist")),
    # a compiler given a source file the sdist lacks: "gcc: error: src/x.c: No such file"
    _rule(("error: ",), rf"error: ({_PATH}\.(c|cc|cpp|cxx|pyx|f|f90)): No such file",
          _plain("broken-sdist")),
)

#: Signs of memory exhaustion: checked over the whole tail before the rules,
#: since a killed compiler leaves other errors after it.
_MEMORY_SIGNS = (
    "Killed signal terminated program", "internal compiler error: Killed",
    "virtual memory exhausted", "Cannot allocate memory", ": out of memory allocating",
    "fatal error: out of memory",
)
#: ... and the last line of a traceback that ran out of it.
_MEMORY_ERROR = "MemoryError"
#: Characters either side of a rule's keyword that its pattern is tried on.
WINDOW_CHARS = 600


def _apply(line: str, keywords: tuple[str, ...], pattern: "re.Pattern[str]",
           maker: Maker) -> Optional[Diagnosis]:
    """*pattern* tried around the first place of each of *keywords* in *line*: the
    work is bounded by :data:`WINDOW_CHARS`, however long the line."""
    for word in keywords:
        at = line.find(word)
        if at < 0:
            continue
        window = line[max(0, at - WINDOW_CHARS): at + len(word) + WINDOW_CHARS]
        match = pattern.search(window)
        if match is not None:
            made = maker(match, line)
            if made is not None:
                return made
    return None


def _lines(log: str) -> list[str]:
    tail = log[-TAIL_CHARS:].splitlines()[-TAIL_LINES:]
    return [line[:LINE_CHARS].strip() for line in tail]


def _from_reason(reason: str) -> Optional[Diagnosis]:
    """The slave's own reasons that say the cause outright."""
    if not reason:
        return None
    prefix = TIMEOUT_REASON.split("{", 1)[0]
    if reason.startswith(prefix) or f": {prefix}" in reason:
        return Diagnosis("timeout", detail_line(reason))
    if OUT_OF_MEMORY_REASON.split("(", 1)[0] in reason:
        return Diagnosis("out-of-memory", detail_line(reason))
    if "the index has no sdist of" in reason or "the index has no project" in reason:
        return Diagnosis("no-sdist", detail_line(reason))
    if reason.startswith("fetch phase:"):
        if re.search(r"is not a readable archive|pyproject\.toml|does not match the index's"
                     r"|bad build requirement|build-backend", reason):
            return Diagnosis("broken-sdist", detail_line(reason))
        if re.search(r"cannot read the index page|answered HTTP|downloading .{1,300} failed"
                     r"|Connection|timed out|Temporary failure|Network is unreachable", reason):
            return Diagnosis("upstream-unreachable", detail_line(reason))
    if "has inconsistent" in reason:
        return Diagnosis("broken-sdist", detail_line(reason))
    return None


def diagnose(log: str, reason: str = "") -> Diagnosis:
    """The cause of a failed build from its *log* and the slave's one-line *reason*.

    Never raises: anything it cannot place is ``unknown``, with the reason (or the
    last error line) as its detail.
    """
    try:
        return _diagnose(str(log or ""), str(reason or ""))
    except Exception as exc:  # a classifier bug must not lose the build's record
        return Diagnosis("unknown", detail_line(f"{reason} (diagnosis failed: {exc!r})"))


def _diagnose(log: str, reason: str) -> Diagnosis:
    found = _from_reason(reason)
    if found is not None:
        return found
    lines = _lines(log)
    for line in lines:
        if line.startswith(_MEMORY_ERROR) or any(sign in line for sign in _MEMORY_SIGNS):
            return Diagnosis("out-of-memory", detail_line(line))
    for line in lines:
        for keywords, pattern, maker in _RULES:
            made = _apply(line, keywords, pattern, maker)
            if made is not None:
                return made
    errors = [line for line in lines if line.startswith("ERROR:") or " error: " in line]
    return Diagnosis("unknown", detail_line(
        reason or (errors[0] if errors else "no error the diagnosis knows in the log")))


_SONAME = re.compile(rf"({_NAME}\.so[\w.]{{0,40}}): cannot open shared object file")
_want_soname = _want("smoke-import", "soname")


def import_failure(text: str) -> Diagnosis:
    """The cause of a built wheel that does not import, from the import's traceback.

    A shared object the loader cannot find is named (``Wanted('soname', ...)``).
    """
    try:
        lines = _lines(str(text or ""))
        for line in lines:
            made = _apply(line, ("cannot open shared object file",), _SONAME, _want_soname)
            if made is not None:
                return made
        errors = [line for line in lines if re.match(r"\w{0,60}(Error|Exception)\b", line)]
        return Diagnosis("smoke-import", detail_line(errors[-1] if errors else
                                                     (lines[-1] if lines else "import failed")))
    except Exception as exc:
        return Diagnosis("smoke-import", detail_line(f"import failed (diagnosis failed: {exc!r})"))
