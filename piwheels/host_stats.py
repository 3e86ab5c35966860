"""Load, memory, disk and temperature of this machine, where the platform has them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
MEMINFO = Path("/proc/meminfo")


def load_1m() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def memory_available() -> Optional[int]:
    """Bytes of memory available to new work (MemAvailable), if the kernel says."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def disk_free(path: Path) -> Optional[int]:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def temperature_c() -> Optional[float]:
    """The SoC temperature (a Raspberry Pi has one; many servers do not)."""
    try:
        return round(int(THERMAL_ZONE.read_text().strip()) / 1000, 1)
    except (OSError, ValueError):
        return None


def host_stats(path: Path) -> dict:
    return {
        "load_1m": load_1m(),
        "memory_free": memory_available(),
        "disk_free": disk_free(path),
        "temperature_c": temperature_c(),
    }
