"""Where hashing processes come from: on Linux, forked from one warm template process per fetch loop
(multiprocessing's forkserver, preloaded with this module); elsewhere spawned, each importing on its own.

Why: a spawned hashing process pays the interpreter, scanner's imports and numba's kernel cache (about one CPU
second) before its first image, one per core on every scan and again after every decoder crash. The
template pays it once; a process forked from it starts in about a tenth of that and shares the template's
pages (the compiled kernels, LLVM, numpy) until it writes to them.

The template holds no body, ever: it warms the hashers on pictures it draws itself, then only forks. The
kernel ends it when its owner ends (PR_SET_PDEATHSIG, set as it starts: the owner starts it, and starts it
again if it died, from a thread that lives as long as the owner, as the signal follows that thread's end),
and ends what it forked when it ends; each forked process also watches its owner through a pidfd
(procguard.die_with_starter). None outlives the fetch loop that feeds it bodies.
Its socket lives in a private temporary directory (0700, the socket 0600), which multiprocessing removes when
the owner exits normally (forget_template, before an owner ends with os._exit); an owner killed cannot, and a
unit worker's lies in its scan's scratch directory (runners/scratch.py), which goes with the scan. A Ray
actor, with one hashing process and ended by ray.kill, spawns it instead.
"""

from __future__ import annotations

import contextlib
import functools
import io
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from multiprocessing.context import BaseContext
from typing import Any

from scanner import procguard
from scanner.runners import scratch

# The module multiprocessing's forkserver imports before it forks anything: this one, which warms it.
_PRELOAD = [__name__]
# Why a pool forked from the template could not start when the template ended as it was asked for a process:
# the one thing that ends it then is a fork refused (multiprocessing's forkserver raises out of its loop).
ENDED = "the template they fork from ended"
_started = False  # start_template() started the template in this process
# Before 3.10.9 and 3.11.1 the forkserver listened on an abstract socket any local user could connect to and
# have it unpickle what they sent (CVE-2022-42919): no template there.
SAFE_FORKSERVER = (3, 11, 1) if sys.version_info >= (3, 11) else (3, 10, 9)


@functools.cache
def forking() -> bool:
    """Whether hashing processes are forked from a template here: Linux with a forkserver, and a kernel that
    lets a process watch one that is not its parent (procguard.die_with_starter)."""
    return (
        sys.platform.startswith("linux")
        and sys.version_info >= SAFE_FORKSERVER
        and "forkserver" in multiprocessing.get_all_start_methods()
        and procguard.can_watch_owner()
    )


def context() -> BaseContext:
    """The start method for hashing processes: the template, once start_template() has started it in this
    process, else spawn."""
    if _started:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def forked(chosen: BaseContext) -> bool:
    """Whether processes of this context (one context() gave) are forked from the template."""
    return chosen.get_start_method() == "forkserver"


def start_template() -> None:
    """Start the template where there can be one, without waiting for it to warm: the first hashing process
    then starts as soon as it is ready, not after it starts from nothing. Call it before the write guard
    (nostore.install): it makes its socket's directory. Where it cannot start, pools are spawned.

    Started here, from the owner's main thread while the owner is small, rather than with the first pool:
    measured side by side on 2 cores with 10M PDQ entries, the first request came no sooner that way (median
    2.52 s against 2.16 s), and the first batch waited for the whole warming."""
    global _started
    if _started or not forking():
        return
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(_PRELOAD)
    chosen, tempfile.tempdir = tempfile.tempdir, tempfile.tempdir or scratch.temporary_base()
    try:
        with procguard.children_ignore_ctrl_c():
            forkserver.ensure_running()
    except OSError:
        return
    finally:
        tempfile.tempdir = chosen
    _started = True


def ensure_template() -> None:
    """Start the template again if it died (multiprocessing would, from whichever thread first asks for a
    process, and one started from a pool's short-lived start thread would die with that thread): from this
    thread, which must live as long as the owner. One that cannot start is the pool's to report."""
    from multiprocessing import forkserver

    if _started:
        with procguard.children_ignore_ctrl_c(), contextlib.suppress(OSError):
            forkserver.ensure_running()


def stop_template() -> None:
    """End the template now, if this process started one: a pool still waiting for it to warm then fails at
    once instead of holding its owner's exit until the template has warmed and forked. For an owner about
    to close its pools; the processes forked from the template end with it."""
    from multiprocessing import forkserver

    if not _started:
        return
    server = forkserver._forkserver  # type: ignore[attr-defined]
    # Under the lock multiprocessing checks the template with (ensure_running): a pool asking for a process
    # meanwhile would reap it itself and start a fresh one to wait for. Reaped here, a later ask fails
    # (ChildProcessError) rather than start a template for an owner that is closing.
    with server._lock, contextlib.suppress(OSError):
        if server._forkserver_pid is not None:
            os.kill(server._forkserver_pid, signal.SIGKILL)
            os.waitpid(server._forkserver_pid, 0)


def forget_template() -> None:
    """End the template and remove its socket's directory now: for an owner about to end with os._exit,
    which skips the exit handler that would remove it (a socket, no content, left in $TMPDIR)."""
    if not _started:
        return
    stop_template()
    directory = multiprocessing.current_process()._config.get("tempdir")  # type: ignore[attr-defined]
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def warm() -> None:
    """Run every built-in hash type once on small pictures drawn here (JPEG, PNG and WebP; one side over
    512 px, so PDQ's resize runs too): imports, numba's cached kernels and the decoders load in the
    template, and processes forked from it need not."""
    import numpy as np
    from PIL import Image

    from scanner.hashing import HASHERS, hash_image

    built_in = frozenset(name for name, hasher in HASHERS.items() if not hasher.plugin)
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (520, 600, 3), dtype=np.uint8))
    for fmt in ("JPEG", "PNG", "WEBP"):
        encoded = io.BytesIO()
        try:
            picture.save(encoded, fmt)
            hash_image(encoded.getvalue(), built_in)
        except Exception:  # a failure costs only the warm-up: forked processes load what they need
            continue


def _preloaded() -> bool:
    """Whether this import is the forkserver's preload (multiprocessing.forkserver.main on the stack), the
    one place the template is made; an import anywhere else (a test walking the package) only imports."""
    from multiprocessing import forkserver

    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            return True
        frame = frame.f_back
    return False


def _end_quietly(kind: type[BaseException], value: BaseException, traceback: Any) -> None:
    """The template's last word: none. Its owner sees it end, and the scan says why in one line (ENDED). A
    process forked from it (which inherits the hook) fails as any process does."""
    if os.getpid() != _TEMPLATE:
        sys.__excepthook__(kind, value, traceback)


_TEMPLATE = os.getpid()  # in the template, the template's own id

if _preloaded():
    sys.excepthook = _end_quietly
    procguard.harden()  # no core file, not dumpable: what it forks inherits both
    # Killed with its owner by the kernel, and what it forked with it (their death signal names it): a
    # process busy in code that holds the GIL cannot run its own pidfd watch until that code returns.
    procguard.die_with_parent(os.getppid())
    warm()
