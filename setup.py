"""Packaging for piwheels: the build farm that publishes wheels for pip."""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "piwheels" / "__init__.py").read_text(), re.M
).group(1)

setup(
    name="piwheels",
    version=VERSION,
    description="A build farm that turns source releases into wheels and publishes a package index",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.9",
    # sql/ and templates/ live at the top of the repository but ship inside
    # the package, so an installed (non-editable) piwheels can find them.
    packages=[
        "piwheels",
        "piwheels.master",
        "piwheels.slave",
        "piwheels.monitor",
        "piwheels.initdb",
        "piwheels.admin",
        "piwheels.sql",
        "piwheels.templates",
        "piwheels.serving",
    ],
    package_dir={
        "piwheels": "piwheels",
        "piwheels.sql": "sql",
        "piwheels.templates": "templates",
        "piwheels.serving": "docs/serving",
    },
    package_data={
        "piwheels.sql": ["*.sql"],
        "piwheels.templates": ["*.pt", "*.css"],
        "piwheels.serving": ["*.conf", "*.js"],
    },
    include_package_data=False,
    install_requires=[
        "configargparse>=1.5",
        "packaging>=22",
        "voluptuous>=0.13",
        "pyzmq>=25",
        "msgpack>=1.0",
        "requests>=2.28",
        "sqlalchemy>=2.0",
        "psycopg2-binary>=2.9",
        "chameleon>=4.0",
        "urwid>=2.1",
        # the slave reads an sdist's pyproject.toml (tomllib from Python 3.11)
        "tomli>=1.1; python_version < '3.11'",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            # the suite runs on two workers (pyproject's addopts)
            "pytest-xdist>=3.2",
            "ruff>=0.5",
            "sphinx>=7",
            "wheel",
            "setuptools",
            "uv",
            "pypi-simple>=1.0",
            # pip fetches only .metadata on a --dry-run from 25.3 (the PEP 658 test)
            "pip>=25.3",
        ],
        "doc": [
            "sphinx>=7",
        ],
    },
    entry_points={
        "console_scripts": [
            "piw-initdb = piwheels.initdb:main",
            "piw-master = piwheels.master:main",
            "piw-slave = piwheels.slave:main",
            "piw-add = piwheels.admin:add_main",
            "piw-remove = piwheels.admin:remove_main",
            "piw-rebuild = piwheels.admin:rebuild_main",
            "piw-import = piwheels.admin:import_main",
            "piw-control = piwheels.admin:control_main",
            "piw-monitor = piwheels.monitor:main",
            "piw-quickstart = piwheels.quickstart:main",
            "piw-keys = piwheels.keytool:main",
        ],
    },
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Environment :: Console",
        "Intended Audience :: System Administrators",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Topic :: Software Development :: Build Tools",
        "Topic :: System :: Software Distribution",
    ],
)
