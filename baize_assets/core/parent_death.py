"""A child process that dies with its parent instead of living on as an orphan.

A parent killed with SIGKILL (out of memory, ``kill -9``) runs no cleanup, and its
children keep running: a training child would go on writing checkpoints that nobody
waits for, beside the rerun that replaces it. On Linux the kernel sends the child
SIGKILL when its parent dies (``PR_SET_PDEATHSIG``); elsewhere a watchdog thread polls
the parent's id. Either way the child first checks that the process that started it
is still its parent, since that one may have died before the child got this far.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _ancestors() -> Iterator[int]:
    """This process's parent, its parent, and so on (Linux: from ``/proc``; elsewhere the parent only)."""
    pid = os.getppid()
    while pid > 0:
        yield pid
        if not sys.platform.startswith("linux"):
            return
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # it has just exited
            return
        # The fields after the command name, which is in parentheses and may hold spaces.
        pid = int(stat.rsplit(")", 1)[1].split()[1])


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _watch_parent(parent_pid: int, poll_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    _die()


def die_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Make this process die (SIGKILL) as soon as its parent has died.

    ``parent_pid`` is the process that started this one, as that process saw itself
    (passed down by it): this process dies at once if ``parent_pid`` is no longer its
    parent or an ancestor, as happens when the parent died before this call. An
    ancestor is accepted because a fork server may stand between the two; its death
    follows the ancestor's and then takes this process with it.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    else:
        threading.Thread(target=_watch_parent, args=(os.getppid(), poll_s), daemon=True, name="parent-watch").start()
    # A parent that died earlier is no ancestor any more: its children went to another process.
    if parent_pid not in _ancestors():
        _die()
