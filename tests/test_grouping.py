"""Group ingest: concurrent trigger requests ingested as one batch, each caller answered
with its own outcomes (broker/runtime/grouping.py)."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

import alerts_schema
from alerts_schema.errors import RetryableError
from broker.archive.store import Archive
from broker.config import get_settings
from broker.runtime.assembly import make_pipeline
from broker.runtime.grouping import GroupedSink
from broker.web.app import create_app
from broker.web.tokens import create_token
from listeners.envelope import Outcome, RawMessage, Sink
from tests.servers import live_app, wait_for

pytestmark = pytest.mark.timeout(120)

TRACK = json.loads(next(p for p in alerts_schema.example_paths("trigger")
                        if "track-single" in p.name).read_text())


def _trigger(event_id: str, **fields: Any) -> bytes:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({**TRACK, "event_id": event_id, "time": now, **fields}).encode()


class _Gate:
    """The real pipeline, its first batch held until the test lets it go (so that the
    callers arriving meanwhile queue, deterministically), or a batch made to fail."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.inside = threading.Event()
        self.release = threading.Event()
        self.fail_next = False
        self.batches: list[int] = []

    def receive(self, source: str, data: bytes, **kw: Any) -> RawMessage:
        return self.sink.receive(source, data, **kw)

    def set_stream_connected(self, streams: Sequence[str], connected: bool) -> None:
        self.sink.set_stream_connected(streams, connected)

    def ingest(self, messages: Sequence[RawMessage]) -> list[Outcome]:
        self.batches.append(len(messages))
        if not self.inside.is_set():
            self.inside.set()
            assert self.release.wait(30)
        if self.fail_next:
            self.fail_next = False
            raise RetryableError("the archive went away (test)")
        return self.sink.ingest(messages)


@pytest.fixture
def gated(db_url: str) -> Any:
    archive = Archive.open(db_url)
    try:
        pipeline = make_pipeline(get_settings(database_url=db_url, comet=False), archive,
                                 targets=[])
        yield _Gate(pipeline), archive
    finally:
        archive.engine.dispose()


def _queued(grouped: GroupedSink, n: int) -> None:
    wait_for(lambda: len(grouped._queue) == n, 20)


def test_callers_arriving_together_are_one_batch_each_answered_its_own(gated: Any) -> None:
    gate, archive = gated
    grouped = GroupedSink(gate)
    copy = _trigger("COPY-1")
    with ThreadPoolExecutor(32) as pool:
        first = pool.submit(lambda: grouped.ingest([grouped.receive("detector",
                                                                      _trigger("FIRST"))]))
        assert gate.inside.wait(20)
        bodies = {f"G-{i}": _trigger(f"G-{i}") for i in range(20)}
        bodies["bad"] = b'{"detector": "KM3NeT", "not": "a trigger"}'
        futures = {name: pool.submit(grouped.ingest, [grouped.receive("detector", body)])
                   for name, body in bodies.items()}
        # The same bytes twice: the second copy must wait for a batch of its own.
        copies = [pool.submit(grouped.ingest, [grouped.receive("detector", copy)])
                  for _ in range(2)]
        _queued(grouped, len(futures) + 2)
        gate.release.set()
        answers = {name: f.result(30) for name, f in futures.items()}
        first_answer = first.result(30)
        copy_answers = [f.result(30) for f in copies]
    assert gate.batches == [1, 22, 1], "the waiting callers were ingested together"
    assert grouped.groups == 3
    assert [o.status for o in first_answer] == ["archived"]
    for i in range(20):
        (outcome,) = answers[f"G-{i}"]
        assert outcome.status == "archived" and outcome.ivorn is not None
        assert outcome.ivorn.endswith(f"#KM3NeT:G-{i}-0"), "each caller gets its own outcome"
    (bad,) = answers["bad"]
    assert bad.status == "quarantined" and bad.reason
    assert sorted(o.status for a in copy_answers for o in a) == ["archived", "duplicate"]
    assert archive.count_alerts() == 22


def test_a_failed_batch_fails_each_of_its_callers_and_the_next_one_runs(gated: Any) -> None:
    gate, archive = gated
    grouped = GroupedSink(gate)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(grouped.ingest, [grouped.receive("detector", _trigger("A"))])
        assert gate.inside.wait(20)
        waiting = [pool.submit(grouped.ingest, [grouped.receive("detector", _trigger(f"W{i}"))])
                   for i in range(5)]
        _queued(grouped, 5)
        gate.fail_next = True  # (the first batch, held at the gate, is the one to fail)
        gate.release.set()
        with pytest.raises(RetryableError):
            first.result(30)
        assert [o.status for f in waiting for o in f.result(30)] == ["archived"] * 5
    # The caller told to retry does, and nothing was lost or doubled.
    assert [o.status for o in grouped.ingest([grouped.receive("detector", _trigger("A"))])] \
        == ["archived"]
    assert archive.count_alerts() == 6


def test_concurrent_posts_through_the_server_are_each_archived_once(db_url: str) -> None:
    """The real route, uvicorn's worker threads and the real pipeline: 24 simultaneous
    POSTs, each answered with its own trigger's IVORN, all archived once."""
    archive = Archive.open(db_url)
    settings = get_settings(database_url=db_url, comet=False, write_rate_limit_per_s=1000.0,
                            write_rate_limit_burst=1000)
    token, _ = create_token(archive, "grouping", ["write:triggers"], detectors=["KM3NeT"])
    app = create_app(settings, archive=archive)
    start = threading.Barrier(24)

    def post(i: int) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{base}/api/v1/triggers", data=_trigger(f"HTTP-{i}"), method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        start.wait(20)
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())

    try:
        with live_app(app) as base, ThreadPoolExecutor(24) as pool:
            replies = list(pool.map(post, range(24)))
        archived = archive.count_alerts()
    finally:
        archive.engine.dispose()
    for i, (code, body) in enumerate(replies):
        assert code == 201 and body["status"] == "archived", body
        assert body["id"].endswith(f"#KM3NeT:HTTP-{i}-0")
        # A reply names nothing of the requests it was batched with (their triggers may
        # be embargoed, and another token's).
        assert [item["id"] for item in body["items"]] == [body["id"]]
    assert archived == 24
