"""Group ingest: single-message batches from many threads, ingested together.

The triggers route hands the sink one message per HTTP request.  Each batch
costs its write transactions (raw bytes, alerts, outbox, matched marks) and
its turn at the match lock whatever its size, and SQLite takes one writer at
a time: at a hundred requests a second the requests queue behind each other's
transactions.  :class:`GroupedSink` lets them share: the first caller to find
the sink idle ingests its own batch at once (so a lone trigger waits for
nothing), and whoever arrives while a batch is being ingested is taken, with
everyone else waiting by then, into the next batch, the database's group
commit done in the broker.  Each caller gets back only its own messages'
outcomes, or the exception its batch raised.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from listeners.envelope import Outcome, RawMessage, Sink

MAX_GROUP = 64
"""Most messages ingested in one group: a bound on the wait of the first in it."""


class _Ticket:
    __slots__ = ("done", "error", "messages", "outcomes")

    def __init__(self, messages: Sequence[RawMessage]) -> None:
        self.messages = list(messages)
        self.done = False
        self.outcomes: list[Outcome] = []
        self.error: BaseException | None = None


class GroupedSink:
    """A :class:`~listeners.envelope.Sink` that ingests concurrent callers' batches as one.

    Parameters
    ----------
    sink
        The sink that does the work (the pipeline of ``serve``).
    max_group
        Most messages in one grouped batch (a caller's batch is never split).
    """

    def __init__(self, sink: Sink, max_group: int = MAX_GROUP) -> None:
        self.sink = sink
        self.max_group = max_group
        self._cond = threading.Condition()
        self._queue: list[_Ticket] = []
        self._busy = False
        self.groups = 0  # batches ingested (a test and debugging figure)

    def receive(self, source: str, data: bytes, *, received_at: datetime | None = None,
                transport: dict[str, Any] | None = None) -> RawMessage:
        return self.sink.receive(source, data, received_at=received_at, transport=transport)

    def set_stream_connected(self, streams: Sequence[str], connected: bool) -> None:
        self.sink.set_stream_connected(streams, connected)

    def ingest(self, messages: Sequence[RawMessage]) -> list[Outcome]:
        """Ingest ``messages`` with whatever other callers are waiting; this caller's
        outcomes, in the order the sink returned them."""
        if not messages:
            return []
        ticket = _Ticket(messages)
        with self._cond:
            self._queue.append(ticket)
        while True:  # (a full group may leave this caller's batch for the next one)
            with self._cond:
                while not ticket.done and self._busy:
                    self._cond.wait()
                if ticket.done:
                    return _result(ticket)
                self._busy = True
                group = self._take()
            try:
                self._run(group)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _take(self) -> list[_Ticket]:
        """The queued tickets of the next group, oldest first (called holding the lock).

        A message whose bytes are already in the group waits for the next one: the
        sink tells two copies apart only by arriving in two batches (the second is a
        duplicate), and outcomes go back to callers by the bytes' hash.
        """
        group: list[_Ticket] = []
        shas: set[str] = set()
        size = 0
        for ticket in list(self._queue):
            mine = {m.sha256 for m in ticket.messages}
            if group and (size + len(ticket.messages) > self.max_group or mine & shas
                          or len(mine) < len(ticket.messages)):
                continue
            group.append(ticket)
            self._queue.remove(ticket)
            shas |= mine
            size += len(ticket.messages)
        return group

    def _run(self, group: list[_Ticket]) -> None:
        try:
            outcomes = self.sink.ingest([m for t in group for m in t.messages])
        except BaseException as exc:  # every caller of the group hears of it
            for ticket in group:
                ticket.error = exc
        else:
            for ticket in group:
                mine = {m.sha256 for m in ticket.messages}
                ticket.outcomes = [o for o in outcomes if o.raw_sha256 in mine]
        finally:
            self.groups += 1
            for ticket in group:
                ticket.done = True


def _result(ticket: _Ticket) -> list[Outcome]:
    if ticket.error is not None:
        raise ticket.error
    return ticket.outcomes
