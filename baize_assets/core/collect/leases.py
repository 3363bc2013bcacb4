"""Exclusive leases on a piece of work, so two runs of the same partition never do it twice.

A lease is an exclusive ``flock`` on a lock file beside the work's output. The kernel
releases it when its holder's file descriptor closes, whichever way the holder ends (a
SIGKILL, a lost process), so a lease never outlives its holder and needs no expiry. The
holder writes who it is into the file; a process that finds the lease taken logs that
holder, waits, and logs again every ``log_every_s`` while it waits.

POSIX only (``fcntl``); across machines the output folder needs a file system whose
``flock`` is seen by every client (NFSv4 on Linux is). The lock file stays in place:
removing it would let a waiter that opened the old file and a newcomer that created a
new one both hold "the" lease.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


class LeaseTimeout(TimeoutError):
    """The lease was still held by another process when the wait ran out."""


def _holder_record(holder: str) -> bytes:
    record = {"holder": holder, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    return (json.dumps(record) + "\n").encode()


def read_holder(path: Path) -> str:
    """Who the lock file says holds (or last held) the lease, in words."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        held_for = time.time() - record["since"]
        return f"{record['holder']} (pid {record['pid']} on {record['host']}, for {held_for:.0f} s)"
    except (OSError, ValueError, KeyError, TypeError):
        # Between the holder's lock and its write, the file is empty.
        return "a process that has not yet said who it is"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def wait_for_lease(
    name: object,
    try_take: Callable[[], bool],
    holder_of: Callable[[], str],
    log: Callable[[str], None],
    timeout_s: float | None,
    poll_s: float,
    log_every_s: float,
) -> None:
    """Return once ``try_take()`` has taken the lease ``name``, saying who holds it while waiting.

    Shared by every lease store: ``holder_of()`` describes the current holder; :class:`LeaseTimeout`
    is raised once ``timeout_s`` (None: no limit) has passed.
    """
    if try_take():
        return
    started = last_log = time.monotonic()
    log(f"waiting for the lease {name}: held by {holder_of()}")
    while not try_take():
        waited = time.monotonic() - started
        if timeout_s is not None and waited >= timeout_s:
            raise LeaseTimeout(f"the lease {name} is still held by {holder_of()} after {waited:.0f} s of waiting")
        if time.monotonic() - last_log >= log_every_s:
            last_log = time.monotonic()
            log(f"still waiting for the lease {name} after {waited:.0f} s: held by {holder_of()}")
        time.sleep(poll_s)
    log(f"took the lease {name} after {time.monotonic() - started:.1f} s of waiting")


@contextmanager
def exclusive_lease(
    path: Path,
    holder: str,
    log: Callable[[str], None] = print,
    timeout_s: float | None = None,
    poll_s: float = 0.2,
    log_every_s: float = 30.0,
) -> Iterator[None]:
    """Hold the lease of ``path`` for the ``with`` block, waiting while another process holds it.

    ``holder`` says who takes it (e.g. a run id); it is written into the file for the
    processes that wait. ``timeout_s`` None waits as long as the holder lives; otherwise
    :class:`LeaseTimeout` is raised once it has passed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        wait_for_lease(path, lambda: _try_lock(fd), lambda: read_holder(path), log, timeout_s, poll_s, log_every_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_record(holder), 0)
        try:
            yield
        finally:
            # Nobody holds it once this block is left; a SIGKILLed holder leaves its record behind.
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
