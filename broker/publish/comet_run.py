"""Run Comet's ``twistd`` with this project's event database, ending with its parent.

``python -m broker.publish.comet_run [--parent-fd=N] [--eventdb-backend=B] TWISTD-ARGS...``

The Comet child's entry point (and the tests' way to run Comet).

``--eventdb-backend``: ``sqlite`` (the default) gives Comet the event database
of :mod:`broker.publish.comet_eventdb` before Twisted builds its services;
``dbm`` leaves Comet's own (``dbm.dumb`` on a Python without gdbm/ndbm, whose
cost per event grows with the events seen).  Setting ``comet_eventdb``.

``--subscribers-file``: after every subscriber that connects or leaves, the number
connected is written to this file (replaced whole, so a reader never sees half of it);
the parent holds delivery after a restart until the subscribers the dead Comet had are
back (:meth:`broker.publish.comet_child.CometChild.hold_s`).

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
from typing import Any, cast

from comet.protocol.broadcaster import VOEventBroadcaster
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
         "[--eventdb-backend=sqlite|dbm] [--subscribers-file=PATH] TWISTD-ARGS...")


def count_subscribers(path: str) -> None:
    """Have Comet's broadcaster write how many subscribers are connected to ``path`` at
    every connection and disconnection (and 0 now), until Twisted starts shutting down:
    the count a stopped or killed Comet leaves is the subscribers it had, not the 0 its
    own closing of their connections would write."""
    # Deferred to here: importing twisted.internet.reactor installs Twisted's default
    # reactor, the one twistd then runs (it installs none of its own without --reactor);
    # only a launcher asked to count subscribers does so before twistd.
    from twisted.internet import reactor

    stopping = threading.Event()
    # (typed through zope's IReactorCore, whose methods are declared without self)
    cast(Any, reactor).addSystemEventTrigger("before", "shutdown", stopping.set)

    def write(n: int) -> None:
        if stopping.is_set():
            return
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{n}\n")
        os.replace(tmp, path)

    made, lost = VOEventBroadcaster.connectionMade, VOEventBroadcaster.connectionLost

    def connection_made(self: VOEventBroadcaster) -> None:
        made(self)
        write(len(self.factory.broadcasters))

    def connection_lost(self: VOEventBroadcaster, *args: object) -> object:
        try:
            return lost(self, *args)
        finally:
            write(len(self.factory.broadcasters))

    VOEventBroadcaster.connectionMade = connection_made
    VOEventBroadcaster.connectionLost = connection_lost
    write(0)


def main(argv: list[str]) -> None:
    """Take this launcher's options off the front of ``argv``; run ``twistd`` with the rest."""
    options: dict[str, str | None] = {"--parent-fd": None, "--eventdb-backend": "sqlite",
                                      "--subscribers-file": None}
    while argv and argv[0].split("=", 1)[0] in options:
        name, _, value = argv.pop(0).partition("=")
        options[name] = value
    if not argv:
        sys.exit(USAGE)
    backend = options["--eventdb-backend"] or ""
    if backend not in BACKENDS:
        sys.exit(f"--eventdb-backend={backend}: one of {', '.join(BACKENDS)}\n{USAGE}")
    install(backend)
    if options["--subscribers-file"]:
        count_subscribers(options["--subscribers-file"])
    if options["--parent-fd"] is not None:
        fd = int(options["--parent-fd"])
        threading.Thread(target=_watch, args=(fd,), name="parent-watch", daemon=True).start()
    sys.argv = ["twistd", *argv]
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
