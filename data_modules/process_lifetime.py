"""Who acts on a stop signal, and child processes that never outlive their parent.

Schedulers (``timeout``, ``scancel``, Kubernetes) and a terminal's Ctrl-C signal the whole
process group, helper processes included. Only the main process may act on it: it stops
at a safe point, cleans up and then ends its helpers. The helpers (DataLoader workers,
prepare_sft's tokenizer pool) therefore

* ignore SIGINT, and SIGTERM from anyone but their parent (:func:`ignore_stop_signals`);
  the parent's own ``terminate()`` still ends them;
* die with their parent (:func:`die_with_parent`), so a SIGKILLed parent leaves no orphan
  holding gigabytes.

Command-line tools turn SIGTERM into an exception (:func:`stop_signals_raise`), so their
``finally`` blocks remove temporary files exactly as on Ctrl-C.

Only the standard library is imported here: data tools use it without loading torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from typing import Iterator

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # 143: what schedulers expect of a terminated job
SIGINT_EXIT_CODE = 128 + signal.SIGINT  # 130: what shells expect after Ctrl-C

_PR_SET_PDEATHSIG = 1


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt for SIGINT (a BaseException,
    so ``except Exception`` blocks do not swallow it and ``finally`` blocks run)."""


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``).

    ``parent_pid`` is the process that owns this one. It may already be gone when this
    runs (it died between fork and here; the kernel then never sends the signal): this
    process exits at once. (Under the forkserver start method the parent is the fork
    server, not the owner; the owner is alive then, and nothing happens.) Elsewhere than
    Linux: only that check."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid and not _running(parent_pid):
        os._exit(1)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ignore_stop_signals(parent_pid: int) -> None:
    """In a helper process: ignore SIGINT, and SIGTERM unless it comes from the parent.

    A group SIGTERM must not kill the helper (its parent would crash with "worker killed
    by signal" before it can save), but the parent's ``Process.terminate()`` must still
    work. Python handlers cannot see the sender, so SIGTERM is blocked and a thread takes
    it with ``sigwaitinfo``, which can. (Standard signals do not queue: a parent's SIGTERM
    sent while a group SIGTERM is still pending merges into it and is lost. A parent that
    ends its helpers right after a group signal kills them instead: prepare_sft's pool.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # pragma: no cover - not POSIX
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # new threads inherit the mask

    def wait_for_parent_sigterm() -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == parent_pid:
                os._exit(SIGTERM_EXIT_CODE)

    threading.Thread(target=wait_for_parent_sigterm, name="sigterm-from-parent", daemon=True).start()


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` and SIGINT KeyboardInterrupt in
    this process, once: further stop signals while cleaning up are ignored, so the cleanup
    finishes. A process forked meanwhile that has not set up its own handlers yet simply
    exits on them. Outside the main thread: does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner, raised = os.getpid(), []

    def on_stop(signum, frame) -> None:
        if os.getpid() != owner:  # a child forked inside the block, before its own setup
            os._exit(128 + signum)
        if not raised:
            raised.append(signum)
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {s: signal.signal(s, on_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
