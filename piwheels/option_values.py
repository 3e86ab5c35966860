"""The argparse value types of the options in :mod:`piwheels.config`: each refuses
a value outside its range with a message that says what the range is."""

from __future__ import annotations

import argparse
from typing import Callable


def positive_int(text: str) -> int:
    """An argparse type for counts and sizes that must be above zero."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type for durations that must be above zero."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def nonnegative_int(text: str) -> int:
    """An argparse type for amounts where zero means none."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def nonnegative_float(text: str) -> float:
    """An argparse type for durations where zero means never."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def port_number(text: str) -> int:
    """An argparse type for a TCP port."""
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, not {text}")
    return value


def positive_int_up_to(maximum: int) -> Callable[[str], int]:
    """An argparse type for a size above zero that a protocol limit caps."""
    def parse(text: str) -> int:
        value = int(text)
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be from 1 to {maximum}, not {text}")
        return value
    return parse
