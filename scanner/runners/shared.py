"""Large read-only objects (the matcher's indexes) built once and mapped by every unit worker, not copied.

The object is pickled with protocol 5: its numpy and Arrow buffers leave the pickle out of band and are
written once into a memfd (anonymous memory with no name in any file system, like runners/arena.py),
which is then sealed against writes. Each worker maps it read-only and unpickles over the mapping: every
array is a read-only view of the same pages, so an added worker costs its own Python objects, not another
copy of the lists. Hash lists are sensitive: the memory is never a file, and goes with the last process.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import pickle
from dataclasses import dataclass
from typing import Any

ALIGNMENT = 64  # each buffer starts on a cache line, as the index kernels expect of their keys


def supported() -> bool:
    """memfd and sealing are Linux only; elsewhere each worker gets its own copy through its pipe."""
    return hasattr(os, "memfd_create") and hasattr(fcntl, "F_ADD_SEALS")


class SharedObject:
    """An object's pickle, its buffers in a sealed memfd: built in the coordinator, handed to workers."""

    def __init__(self, value: Any) -> None:
        buffers: list[pickle.PickleBuffer] = []
        self._pickle = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        self._extents: list[tuple[int, int]] = []
        self._fd = os.memfd_create("scanner-lists", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            self.size = self._write(buffers)
            seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
            fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, seals)
        except BaseException:
            os.close(self._fd)
            raise

    def _write(self, buffers: list[pickle.PickleBuffer]) -> int:
        """Each buffer at the next aligned offset, written through the descriptor (a writable mapping
        would keep the seal from being set)."""
        offset = 0
        for buffer in buffers:
            raw = buffer.raw()
            offset += -offset % ALIGNMENT
            self._extents.append((offset, raw.nbytes))
            written = 0
            while written < raw.nbytes:
                written += os.pwrite(self._fd, raw[written:], offset + written)
            offset += raw.nbytes
        os.ftruncate(self._fd, max(offset, 1))
        return max(offset, 1)

    def handle(self) -> SharedHandle:
        """What a worker needs to map the memory and rebuild the object."""
        return SharedHandle(self._fd, self.size, self._pickle, tuple(self._extents))

    def load(self) -> Any:
        """The object as a worker gets it, here: read-only views of the sealed memory, mapped by this
        process too (so that it can let its own copy go)."""
        handle = self.handle()
        return attach(SharedHandle(os.dup(handle.fd), handle.size, handle.data, handle.extents)).load()

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True)
class SharedHandle:
    """The memfd (sent to a worker with send_handle, never by path), its size, the pickle and where each of
    its buffers lies in the memory."""

    fd: int
    size: int
    data: bytes
    extents: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Attached:
    """A worker's end: the read-only mapping and the pickle to load over it."""

    mapping: mmap.mmap
    data: bytes
    extents: tuple[tuple[int, int], ...]

    def load(self) -> Any:
        """The object, its arrays read-only views of the shared pages."""
        view = memoryview(self.mapping)
        return pickle.loads(self.data, buffers=[view[o : o + n] for o, n in self.extents])


def attach(handle: SharedHandle) -> Attached:
    """Map a received handle read-only; its descriptor is closed (the mapping keeps the memory)."""
    try:
        return Attached(
            mmap.mmap(handle.fd, handle.size, access=mmap.ACCESS_READ), handle.data, handle.extents
        )
    finally:
        os.close(handle.fd)
