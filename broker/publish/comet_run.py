"""Run ``twistd`` in a process that ends when its parent does: the Comet child's entry point.

``python -m broker.publish.comet_run --parent-fd=N TWISTD-ARGS...``: file descriptor
``N`` is the read end of a pipe whose only write end is held by the parent
(``mmbroker serve``).  However the parent ends (exit, crash, SIGKILL), the
kernel closes that write end and a read here sees end-of-file; this process
then stops itself (SIGTERM to Twisted, then a hard exit after
:data:`HARD_EXIT_S`).

Why a pipe rather than Linux's ``PR_SET_PDEATHSIG``: the death signal is sent
when the *thread* that forked the child ends, not the process, so a
supervisor thread that restarts Comet would take Comet down with it, and it is
Linux only; end-of-file on a pipe means "no process holds the write end any
more", on every POSIX system, the moment it happens.

Kept free of the rest of :mod:`broker` (nothing but the standard library and
Twisted), so a restart costs Twisted's start-up only.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

HARD_EXIT_S = 5.0
"""How long (s) Twisted gets to stop after the parent is gone, before ``os._exit``."""


def _watch(fd: int) -> None:
    try:
        while os.read(fd, 64):
            pass
    except OSError:
        pass
    # The parent is gone: nobody will ever send through this Comet again.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(HARD_EXIT_S)
    os._exit(70)


def main(argv: list[str]) -> None:
    if not argv or not argv[0].startswith("--parent-fd="):
        sys.exit("usage: python -m broker.publish.comet_run --parent-fd=N TWISTD-ARGS...")
    fd = int(argv[0].split("=", 1)[1])
    threading.Thread(target=_watch, args=(fd,), name="parent-watch", daemon=True).start()
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *argv[1:]]
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
