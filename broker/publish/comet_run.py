"""Run Comet's ``twistd`` with this project's event database, ending with its parent.

``python -m broker.publish.comet_run [--parent-fd=N] [--eventdb-backend=B] TWISTD-ARGS...``

The Comet child's entry point (and the tests' way to run Comet).

``--eventdb-backend``: ``sqlite`` (the default) gives Comet the event database
of :mod:`broker.publish.comet_eventdb` before Twisted builds its services;
``dbm`` leaves Comet's own (``dbm.dumb`` on a Python without gdbm/ndbm, whose
cost per event grows with the events seen).  Setting ``comet_eventdb``.

``--parent-fd``: file descriptor ``N`` is the read end of a pipe whose only
write end is held by the parent (``mmbroker serve``).  However the parent ends
(exit, crash, SIGKILL), the kernel closes that write end and a read here sees
end-of-file; this process then stops itself (SIGTERM to Twisted, then a hard
exit after :data:`HARD_EXIT_S`).  Without it, the process lives on its own.

Why a pipe rather than Linux's ``PR_SET_PDEATHSIG``: the death signal is sent
when the *thread* that forked the child ends, not the process, so a
supervisor thread that restarts Comet would take Comet down with it, and it is
Linux only; end-of-file on a pipe means "no process holds the write end any
more", on every POSIX system, the moment it happens.

Kept free of the rest of :mod:`broker` (nothing but the standard library, Twisted
and Comet), so a restart costs Twisted's start-up only.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from twisted.scripts.twistd import run

from broker.publish.comet_eventdb import BACKENDS, install

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


USAGE = ("usage: python -m broker.publish.comet_run [--parent-fd=N] "
         "[--eventdb-backend=sqlite|dbm] TWISTD-ARGS...")


def main(argv: list[str]) -> None:
    """Take this launcher's options off the front of ``argv``; run ``twistd`` with the rest."""
    options: dict[str, str | None] = {"--parent-fd": None, "--eventdb-backend": "sqlite"}
    while argv and argv[0].split("=", 1)[0] in options:
        name, _, value = argv.pop(0).partition("=")
        options[name] = value
    if not argv:
        sys.exit(USAGE)
    backend = options["--eventdb-backend"] or ""
    if backend not in BACKENDS:
        sys.exit(f"--eventdb-backend={backend}: one of {', '.join(BACKENDS)}\n{USAGE}")
    install(backend)
    if options["--parent-fd"] is not None:
        fd = int(options["--parent-fd"])
        threading.Thread(target=_watch, args=(fd,), name="parent-watch", daemon=True).start()
    sys.argv = ["twistd", *argv]
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
