"""Hostile and malformed input: quarantined with a reason, never crashing, never resolved.

The listeners issue widens this corpus per stream; these are the cases the
format sniffer and the bounded JSON decoder must hold by themselves.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import pytest

import alerts_schema
from broker.archive.store import Archive
from broker.runtime.ingest import Ingestor
from listeners.envelope import RawMessage

# Unpickling this creates the file below: proof, if it exists, that a pickle ran.
PWNED = Path(tempfile.gettempdir()) / f"mmbroker-pwned-{os.getpid()}"


TRACK = json.loads(next(p for p in alerts_schema.example_paths("trigger")
                         if p.name == "trigger-track-single.example.json").read_bytes())


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (PWNED,))


CORPUS = {
    "pickle-protocol-4": (pickle.dumps({"detector_name": "Super-K"}, protocol=4), "pickle"),
    "pickle-protocol-2": (pickle.dumps(_Evil(), protocol=2), "pickle"),
    "pickle-protocol-0": (pickle.dumps(_Evil(), protocol=0), "pickle"),
    "json-deep-nesting": (b"[" * 100_000 + b"]" * 100_000, "nested"),
    "json-deep-objects": (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested"),
    "json-invalid-utf8": (b'{"event_id": "\xff\xfe"}', "UTF-8"),
    "json-nan-elsewhere": (b'{"far": NaN, "x": Infinity}', "matches no known stream"),
    "json-truncated": (b'{"event_id": "S1', "invalid JSON"),
    # Issue 14 item 7: archived on SQLite, refused by PostgreSQL; now refused on both.
    "trigger-nul-in-a-field": (json.dumps({**TRACK, "pipeline": "a\u0000b"}).encode(),
                               "$.pipeline: control character U+0000"),
    "trigger-lone-surrogate": (json.dumps({**TRACK, "reco_method": "\ud800"}).encode(),
                               "$.reco_method: control character U+D800"),
    "empty": (b"", "empty"),
    "whitespace": (b" \n\t ", "empty"),
    "xml-billion-laughs": (b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0">&lol2;</voe:VOEvent>""", "xml"),
    "xml-external-entity": (b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>""", "xml"),
    "avro-truncated": (b"Obj\x01\x04\x14avro.codec", "avro-ocf"),
    "avro-wrong-magic": (b"\x00\x00\x00\x00\x07garbage", "avro-confluent"),
    "binary-noise": (bytes(range(256)) * 4, "no normalizer"),
    "json-unknown-schema": (b'{"hello": "world"}', "matches no known stream"),
    "json-alert-breaking-contract": (
        b'{"schema_version": "1.0", "id": "ivo://x/y#z", "event_id": "z", "revision": -1}',
        "alert schema"),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_input_is_quarantined(name: str, ingestor: Ingestor, archive: Archive) -> None:
    data, expected = CORPUS[name]
    PWNED.unlink(missing_ok=True)
    (outcome,) = ingestor.ingest([RawMessage("file", data)])
    assert outcome.status == "quarantined"
    assert expected.lower() in outcome.reason.lower(), outcome.reason
    (entry,) = archive.list_quarantine()
    assert entry["reason"] == outcome.reason
    assert archive.raw_payload(entry["raw_sha256"]) == data
    assert archive.count_alerts() == 0
    assert not PWNED.exists(), "a pickle was unpickled"


def test_the_evil_pickle_would_run_if_loaded() -> None:
    """The control: the corpus pickles do what the check above looks for."""
    PWNED.unlink(missing_ok=True)
    try:
        pickle.loads(CORPUS["pickle-protocol-2"][0])
        assert PWNED.exists()
    finally:
        PWNED.unlink(missing_ok=True)


def test_oversize_message_keeps_its_head(archive: Archive) -> None:
    ingestor = Ingestor(archive, authority="test.mmbroker", max_message_bytes=1024)
    data = b'{"pad": "' + b"x" * 5000 + b'"}'
    raw = ingestor.receive("big", data)
    assert raw.truncated and len(raw.data) == 1024 and raw.full_size == len(data)
    (outcome,) = ingestor.ingest([raw])
    assert outcome.status == "quarantined"
    assert "exceeds the 1024-byte limit" in outcome.reason
    (entry,) = archive.list_quarantine()
    assert entry["truncated"] is True
    assert archive.raw_payload(entry["raw_sha256"]) == data[:1024]


def test_good_and_bad_in_one_batch(ingestor: Ingestor, archive: Archive) -> None:
    import json

    from alerts_schema.synthetic import alert_documents

    good = [RawMessage("file", json.dumps(d).encode()) for d in alert_documents(3, seed=9)]
    bad = [RawMessage("file", data) for data, _ in list(CORPUS.values())[:5]]
    outcomes = ingestor.ingest(good[:2] + bad + good[2:])
    assert sum(o.status == "archived" for o in outcomes) == 3
    assert sum(o.status == "quarantined" for o in outcomes) == 5


def test_nan_and_infinity_decode_as_missing() -> None:
    from listeners import json_limits

    assert json_limits.loads(b'{"p": NaN, "q": -Infinity, "r": [Infinity]}') == {
        "p": None, "q": None, "r": [None]}


def test_overflowing_and_huge_numbers() -> None:
    from alerts_schema.errors import MalformedInput
    from listeners import json_limits

    assert json_limits.loads(b'{"far_hz": 1e999, "x": -1e999}') == {"far_hz": None, "x": None}
    with pytest.raises(MalformedInput, match="JSON number"):
        json_limits.loads(b'{"n": ' + b"9" * 5000 + b"}")


def test_model_refuses_non_finite_numbers() -> None:
    import json

    from pydantic import ValidationError

    from alerts_schema import Alert
    from alerts_schema.synthetic import alert_documents

    doc = alert_documents(1, seed=40)[0]
    with pytest.raises(ValidationError):
        Alert.model_validate({**doc, "far_hz": float("inf")})
    with pytest.raises(ValidationError):
        Alert.model_validate({**doc, "p_value": float("nan")})
    Alert.model_validate(json.loads(json.dumps(doc)))
