"""The slave driver's idle slaves that wait for a job, unanswered ("parked").

An IDLE that finds nothing to build is not answered with SLEEP: the slave
waits for its reply, and the driver answers it with BUILD the moment a job
for its ABI arrives.  So that neither side takes the silence for a dead peer,
a slave is parked for at most one heartbeat (the slave gives the master
several before it reconnects) and then told to ask again at once (``SLEEP``
of 0 s).  Slaves of an ABI are offered work longest-parked first.
"""

from __future__ import annotations

from typing import Iterator


class Parking:
    """Parked slaves' addresses per ABI, in the order they were parked, each
    with the monotonic time by which it must be answered."""

    def __init__(self, park_s: float) -> None:
        self.park_s = park_s
        # dicts keep insertion order, and every slave is parked for park_s:
        # per ABI the first entry is both the longest parked and the first due
        self._by_abi: dict[str, dict[bytes, float]] = {}
        self._abi_of: dict[bytes, str] = {}

    def __len__(self) -> int:
        return len(self._abi_of)

    def __contains__(self, address: bytes) -> bool:
        return address in self._abi_of

    def park(self, address: bytes, abi_tag: str, now_s: float) -> None:
        self.unpark(address)
        self._by_abi.setdefault(abi_tag, {})[address] = now_s + self.park_s
        self._abi_of[address] = abi_tag

    def unpark(self, address: bytes) -> bool:
        """Forget *address* (answered, or gone); whether it was parked."""
        abi_tag = self._abi_of.pop(address, None)
        if abi_tag is None:
            return False
        del self._by_abi[abi_tag][address]
        return True

    def waiting(self, abi_tag: str) -> list[bytes]:
        """The slaves of *abi_tag* parked now, the longest parked first."""
        return list(self._by_abi.get(abi_tag, ()))

    def abis(self) -> list[str]:
        """The ABIs with a slave parked."""
        return [abi for abi, parked in self._by_abi.items() if parked]

    def due(self, now_s: float) -> Iterator[bytes]:
        """The slaves whose park time is over (taken off), oldest first per ABI."""
        for parked in self._by_abi.values():
            while parked:
                address, until = next(iter(parked.items()))
                if until > now_s:
                    break
                self.unpark(address)
                yield address
