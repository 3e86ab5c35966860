"""The slave driver's idle slaves that wait for a job, unanswered ("parked").

An IDLE that finds nothing to build is not answered with SLEEP: the slave
waits for its reply, and the driver answers it with BUILD the moment a job
for its ABI arrives.  So that neither side takes the silence for a dead peer,
a slave is parked for at most one heartbeat (the slave gives the master
several before it reconnects) and then told to ask again at once (``SLEEP``
of 0 s).  Slaves of a target are offered work longest-parked first.
"""

from __future__ import annotations

from typing import Iterator

from ..tags import Target


class Parking:
    """Parked slaves' addresses per target, in the order they were parked, each
    with the monotonic time by which it must be answered."""

    def __init__(self, park_s: float) -> None:
        self.park_s = park_s
        # dicts keep insertion order, and every slave is parked for park_s:
        # per target the first entry is both the longest parked and the first due
        self._by_target: dict[Target, dict[bytes, float]] = {}
        self._target_of: dict[bytes, Target] = {}

    def __len__(self) -> int:
        return len(self._target_of)

    def __contains__(self, address: bytes) -> bool:
        return address in self._target_of

    def park(self, address: bytes, target: Target, now_s: float) -> None:
        self.unpark(address)
        self._by_target.setdefault(target, {})[address] = now_s + self.park_s
        self._target_of[address] = target

    def unpark(self, address: bytes) -> bool:
        """Forget *address* (answered, or gone); whether it was parked."""
        target = self._target_of.pop(address, None)
        if target is None:
            return False
        del self._by_target[target][address]
        return True

    def waiting(self, target: Target) -> list[bytes]:
        """The slaves of *target* parked now, the longest parked first."""
        return list(self._by_target.get(target, ()))

    def targets(self) -> list[Target]:
        """The targets with a slave parked."""
        return [target for target, parked in self._by_target.items() if parked]

    def due(self, now_s: float) -> Iterator[bytes]:
        """The slaves whose park time is over (taken off), oldest first per target."""
        for parked in self._by_target.values():
            while parked:
                address, until = next(iter(parked.items()))
                if until > now_s:
                    break
                self.unpark(address)
                yield address
