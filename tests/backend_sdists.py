"""Sdists of the kinds real projects publish, one per build backend or build style.

A contained build has no network, so everything a backend needs must come
through the fetch phase: these sdists cover the common backends (setuptools
with and without ``pyproject.toml``, flit-core, hatchling, setuptools-scm,
poetry-core), compiled code (a C extension, an ``abi3`` one, a Cython module
with Cython as a build requirement) and a backend that asks for more build
requirements from ``get_requires_for_build_wheel`` (:data:`DYNAMIC`, not in
:data:`KINDS`).  Each module holds
``ANSWER = 42`` (compiled ones: ``answer()`` returns 42), so a test can import
the wheel and see the build really made working code.  Their backend wheels
must be in the index the test builds from (see :mod:`fake_index`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sdist_factory import ABI3_MINIMUM, make_sdist, module_name, write_sdist

PURE_MODULE = '"""Made by the piwheels tests."""\n\nANSWER = 42\n'
PKG_INFO = "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"


@dataclass(frozen=True)
class Kind:
    """One kind of sdist and what its wheel must look like."""

    kind: str
    #: the project name (each kind its own project)
    name: str
    #: the wheel's (python, abi, platform) tags; "{python}" and "{platform}" are
    #: the build interpreter's
    tags: tuple[str, str, str]
    #: True: ``module.answer()``; False: ``module.ANSWER``
    compiled: bool

    @property
    def module(self) -> str:
        return module_name(self.name)

    def wheel_name(self, version: str, python_tag: str, platform_tag: str) -> str:
        python, abi, platform = (tag.format(python=python_tag, platform=platform_tag)
                                 for tag in self.tags)
        return f"{self.module}-{version}-{python}-{abi}-{platform}.whl"


def _project_table(name: str, version: str, *, dynamic_version: bool = False) -> str:
    version_line = 'dynamic = ["version"]' if dynamic_version else f'version = "{version}"'
    return (f'[project]\nname = "{name}"\n{version_line}\n'
            f'description = "A package made by the piwheels tests"\n'
            f'requires-python = ">=3.9"\n')


def _files(kind: Kind, version: str) -> dict[str, str]:
    name, module = kind.name, kind.module
    pkg_info = PKG_INFO.format(name=name, version=version)
    if kind.kind == "setup-py-only":
        # no pyproject.toml: pip builds it with setuptools' legacy backend
        return {"setup.py": f"from setuptools import setup\n\nsetup(name={name!r}, "
                            f"version={version!r}, py_modules=[{module!r}])\n",
                f"{module}.py": PURE_MODULE, "PKG-INFO": pkg_info}
    if kind.kind == "flit-core":
        return {"pyproject.toml": ('[build-system]\nrequires = ["flit_core >=3.4"]\n'
                                   'build-backend = "flit_core.buildapi"\n\n'
                                   + _project_table(name, version)),
                f"{module}.py": PURE_MODULE, "PKG-INFO": pkg_info}
    if kind.kind == "hatchling":
        return {"pyproject.toml": ('[build-system]\nrequires = ["hatchling"]\n'
                                   'build-backend = "hatchling.build"\n\n'
                                   + _project_table(name, version)),
                f"{module}/__init__.py": PURE_MODULE, "PKG-INFO": pkg_info}
    if kind.kind == "setuptools-scm":
        # no git in an sdist: setuptools-scm reads the version from PKG-INFO
        return {"pyproject.toml": ('[build-system]\nrequires = ["setuptools>=64", '
                                   '"setuptools-scm>=8"]\n'
                                   'build-backend = "setuptools.build_meta"\n\n'
                                   + _project_table(name, version, dynamic_version=True)
                                   + f'\n[tool.setuptools]\npy-modules = ["{module}"]\n\n'
                                   '[tool.setuptools_scm]\n'),
                f"{module}.py": PURE_MODULE, "PKG-INFO": pkg_info}
    if kind.kind == "poetry-core":
        return {"pyproject.toml": ('[build-system]\nrequires = ["poetry-core>=1.0"]\n'
                                   'build-backend = "poetry.core.masonry.api"\n\n'
                                   + _project_table(name, version)
                                   + f'\n[tool.poetry]\npackages = [{{include = "{module}"}}]\n'),
                f"{module}/__init__.py": PURE_MODULE, "PKG-INFO": pkg_info}
    if kind.kind == "cython":
        return {"pyproject.toml": ('[build-system]\nrequires = ["setuptools", "Cython>=3"]\n'
                                   'build-backend = "setuptools.build_meta"\n'),
                "setup.py": ("from Cython.Build import cythonize\n"
                             "from setuptools import Extension, setup\n\n"
                             f"setup(name={name!r}, version={version!r}, ext_modules=cythonize("
                             f"[Extension({module!r}, [{module + '.pyx'!r}], "
                             # unoptimised: the test is of the build, not the compiler
                             "extra_compile_args=['-O0'])], "
                             "compiler_directives={'language_level': 3}))\n"),
                f"{module}.pyx": ("def answer():\n    cdef int six = 6\n"
                                  "    return six * 7\n"),
                "PKG-INFO": pkg_info}
    if kind.kind == "dynamic-requires":
        # an in-tree backend over setuptools that asks for one more build
        # requirement only when its hook runs, and needs it to build
        return {"pyproject.toml": ('[build-system]\nrequires = ["setuptools"]\n'
                                   'build-backend = "dynamic_backend"\n'
                                   'backend-path = ["_backend"]\n'),
                "_backend/dynamic_backend.py": (
                    "from setuptools import build_meta as _setuptools\n"
                    "from setuptools.build_meta import *  # noqa: F401,F403\n\n\n"
                    "def get_requires_for_build_wheel(config_settings=None):\n"
                    "    return [*_setuptools.get_requires_for_build_wheel(config_settings),\n"
                    "            'pathspec']\n\n\n"
                    "def build_wheel(wheel_directory, config_settings=None,\n"
                    "                metadata_directory=None):\n"
                    "    import pathspec  # noqa: F401  (there only if the hook's answer was met)\n"
                    "    return _setuptools.build_wheel(wheel_directory, config_settings,\n"
                    "                                   metadata_directory)\n"),
                "setup.py": (f"from setuptools import setup\n\nsetup(name={name!r}, "
                             f"version={version!r}, py_modules=[{module!r}])\n"),
                f"{module}.py": PURE_MODULE, "PKG-INFO": pkg_info}
    raise ValueError(f"no sdist files for kind {kind.kind!r}")


PURE = ("py3", "none", "any")
NATIVE = ("{python}", "{python}", "{platform}")
ABI3 = ("cp{}{}".format(*ABI3_MINIMUM), "abi3", "{platform}")

#: Every kind, in the order a test builds them.
KINDS: tuple[Kind, ...] = (
    Kind("setup-py-only", "piw-kind-setup-py", PURE, False),
    Kind("flit-core", "piw-kind-flit", PURE, False),
    Kind("hatchling", "piw-kind-hatchling", PURE, False),
    Kind("setuptools-scm", "piw-kind-scm", PURE, False),
    Kind("poetry-core", "piw-kind-poetry", PURE, False),
    Kind("c-extension", "piw-kind-c-ext", NATIVE, True),
    Kind("cython", "piw-kind-cython", NATIVE, True),
    Kind("abi3", "piw-kind-abi3", ABI3, True),
)
#: A backend whose hook asks for more build requirements: the slave's fetch
#: tests build it (tests/slave/test_fetch.py covers the same path for less).
DYNAMIC = Kind("dynamic-requires", "piw-kind-dynamic", PURE, False)
KIND_BY_NAME = {kind.kind: kind for kind in (*KINDS, DYNAMIC)}

_FACTORY_KINDS: dict[str, Callable[..., Path]] = {
    "c-extension": lambda dest, name, version: make_sdist(dest, name, version, kind="c_ext"),
    "abi3": lambda dest, name, version: make_sdist(dest, name, version, kind="abi3"),
}


def make_kind_sdist(dest_dir: Path, kind: Kind, version: str = "1.0") -> Path:
    """Write the sdist of *kind* (project ``kind.name``, *version*); returns its path."""
    factory = _FACTORY_KINDS.get(kind.kind)
    if factory is not None:
        return factory(dest_dir, kind.name, version)
    return write_sdist(dest_dir, f"{kind.module}-{version}", _files(kind, version))
