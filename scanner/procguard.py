"""Process hardening for every process that may hold image bytes: no core dump, no ptrace by other users, no
worker outliving the scan, and a CPU budget for decoding one body.

The write guard (nostore.py) sees only writes Python makes; a core file is written by the kernel, with every
body in flight in it. So each scan process sets its core limit to 0 and, on Linux, marks itself non-dumpable
(which also keeps other users' debuggers out) before any body arrives.
"""

from __future__ import annotations

import ctypes
import math
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from scanner.errors import ScannerError

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no rlimits (nor core files)
    resource = None  # type: ignore[assignment]

# linux/prctl.h
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
# How often a worker without PR_SET_PDEATHSIG (not Linux) looks for its parent.
PARENT_POLL_SECONDS = 0.5
# The signal the kernel sends a process past its CPU-time limit (RLIMIT_CPU): a hashing worker that dies of it
# ran out of its decode budget; any other death is a crash.
CPU_BUDGET_SIGNAL = getattr(signal, "SIGXCPU", None)
# The signal a wall-clock budget (wall_budget) ends a process with: its default action kills, in C code too.
WALL_BUDGET_SIGNAL = getattr(signal, "SIGALRM", None)

_budgets_enforced = False


def harden() -> None:
    """No core file from this process or the processes it starts, and (Linux) not dumpable, not traceable by
    other users. Idempotent; call it before any body arrives."""
    if resource is not None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        _prctl(PR_SET_DUMPABLE, 0)


def die_with_parent(parent: int) -> None:
    """End this process as soon as `parent` (the process that started it) dies, even of SIGKILL or the OOM
    killer: an orphaned hashing worker would keep the body arena, with image bytes in it, alive forever."""
    if sys.platform.startswith("linux"):
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        watch_parent(parent)
    # The parent may have died before the line above (the kernel would then never send the signal).
    if os.getppid() != parent:
        os._exit(1)


def die_with_starter(owner: int) -> None:
    """die_with_parent for a process that `owner` started, spawned (its parent) or forked from a forkserver
    that `owner` started (runners/hashfork.py). A forkserver outlives `owner` while any process it forked
    lives, so such a process watches `owner` itself, through a pidfd (Linux 5.3): it ends the moment `owner`
    does, of SIGKILL too, and with its forkserver besides. Ends this process now when `owner` is already
    gone."""
    parent = os.getppid()
    if parent == owner:
        die_with_parent(owner)
        return
    try:
        handle = os.pidfd_open(owner)  # before the check: a pid reused meanwhile is not `owner`'s pidfd
    except (AttributeError, OSError):
        os._exit(1)
    if _parent_of(parent) != owner:
        os._exit(1)
    die_with_parent(parent)
    threading.Thread(target=_end_with, args=(handle,), name="scanner-owner-watch", daemon=True).start()


def _end_with(pidfd: int) -> None:
    select.select([pidfd], [], [])  # readable once the process has ended
    os._exit(1)


def can_watch_owner() -> bool:
    """Whether die_with_starter can watch a process that is not its parent (a pidfd and /proc)."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return _parent_of(os.getpid()) == os.getppid()


def _parent_of(pid: int) -> int | None:
    """The parent of `pid` as /proc says (Linux); None where it cannot."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after its last ')'.
            return int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def watch_parent(parent: int, interval: float = PARENT_POLL_SECONDS) -> threading.Thread:
    """A daemon thread that ends this process once its parent is no longer `parent` (it died, and the process
    was re-parented): the portable way, where the kernel cannot be asked to signal the parent's death."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    thread = threading.Thread(target=watch, name="scanner-parent-watch", daemon=True)
    thread.start()
    return thread


def enforce_cpu_budgets() -> None:
    """Make cpu_budget() binding in this process: hashing workers only, where a death costs one body (the pool
    replaces the worker and names the body), never a process whose death would stop the scan."""
    global _budgets_enforced
    _budgets_enforced = resource is not None and CPU_BUDGET_SIGNAL is not None


@contextmanager
def cpu_budget(seconds: float) -> Iterator[None]:
    """Let the block use at most `seconds` more CPU time (rounded up to the next whole second of the process's
    CPU clock), or the kernel kills the process with SIGXCPU.

    A limit the kernel enforces holds while a decoder loops in C code that never returns to Python (a timer
    or signal handler in Python would wait for it), and on a process that is not ours to wait for. A no-op
    unless enforce_cpu_budgets() was called in this process.
    """
    if not _budgets_enforced:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    limit = math.ceil(time.process_time() + seconds)
    for given in (soft, hard):  # a limit set outside the scanner (ulimit -t) still holds
        if given != resource.RLIM_INFINITY:
            limit = min(limit, given)
    resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


@contextmanager
def wall_budget(seconds: float) -> Iterator[None]:
    """Let the block run at most `seconds` of wall-clock time, or the kernel kills the process with SIGALRM
    (left at its default action, so a wait in C code is ended too): for code that may wait rather than
    compute (a plug-in that sleeps or blocks). A no-op where cpu_budget() is one."""
    if not _budgets_enforced or WALL_BUDGET_SIGNAL is None:
        yield
        return
    signal.signal(WALL_BUDGET_SIGNAL, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


@contextmanager
def children_ignore_ctrl_c() -> Iterator[None]:
    """Processes started inside start with Ctrl-C ignored, so one pressed while they import cannot end them
    with a KeyboardInterrupt traceback (the terminal sends it to the whole process group); the caller stops
    them. A blocked signal mask alone does not do it: the spawn start method execs a fresh interpreter
    with an empty mask, while an ignored disposition survives the exec. Ctrl-C stays blocked meanwhile, so
    one pressed here is pending, not lost, and reaches this process's own handler once restored."""
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


def _prctl(option: int, value: int) -> int:
    unused = ctypes.c_ulong(0)
    result = ctypes.CDLL(None, use_errno=True).prctl(option, ctypes.c_ulong(value), unused, unused, unused)
    if result < 0:
        raise ScannerError(
            f"prctl({option}) failed ({os.strerror(ctypes.get_errno())}): this process cannot be hardened"
            " against core dumps and orphaned workers, and a scan does not run without it"
        )
    return result
