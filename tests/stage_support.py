"""Helpers for running the broker's stages as separate processes in tests and benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.dashboard_support import scenario

TRIGGERS, GRBS = "km3net.triggers", "gcn.notices.fermi.gbm"
SPACING_S = 150.0
"""Event time between consecutive inputs: more than a third of the hen-grb window, with
positions 47 deg or more apart, so only the planted pairs coincide."""


def inputs(pairs: int, singles: int) -> tuple[list[bytes], list[bytes]]:
    """Trigger and GBM messages: ``pairs`` planted coincidences (a trigger and a burst 2 s
    and 0.7 deg apart) and ``singles`` alerts of each stream alone; the newest event an
    hour ago."""
    steps = pairs + 2 * singles
    start = datetime.now(UTC) - timedelta(hours=1, seconds=SPACING_S * steps)
    triggers, grbs = [], []
    for k in range(steps):
        trigger, grb = scenario(start + timedelta(seconds=SPACING_S * k),
                                ra_deg=(47.0 * k) % 360, dec_deg=float((29 * k) % 120 - 60))
        if k < pairs or k % 2 == 0:
            triggers.append(json.dumps(trigger).encode())
        if k < pairs or k % 2 == 1:
            grbs.append(grb)
    return triggers, grbs


def live_window_s(pairs: int, singles: int) -> float:
    """A cross-match live window holding every input event (s)."""
    return SPACING_S * (pairs + 2 * singles) + 2 * 86400.0


def start_stage(name: str, db: str, env: dict[str, str], log: Path
                ) -> subprocess.Popen[bytes]:
    """``mmbroker --db DB stage NAME`` with ``env`` added, its output appended to ``log``."""
    exe = str(Path(sys.executable).with_name("mmbroker"))
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen([exe, "--db", db, "stage", name], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **env})


def stage_env(bootstrap: str, group: str, pairs: int, singles: int, **extra: str
              ) -> dict[str, str]:
    """The environment of stage processes reading :func:`inputs` from ``bootstrap``."""
    return {"MMBROKER_KAFKA_BOOTSTRAP": bootstrap, "MMBROKER_KAFKA_TOPICS": f"{TRIGGERS},{GRBS}",
            "KAFKA_AUTO_OFFSET_RESET": "earliest", "MMBROKER_KAFKA_GROUP_ID": group,
            "MMBROKER_COMET": "false", "MMBROKER_LOG_LEVEL": "INFO",
            "MMBROKER_KAFKA_ALERTS_PARTITIONS": "4",
            "MMBROKER_CROSSMATCH_LIVE_WINDOW_S": str(live_window_s(pairs, singles)), **extra}


def numbered(archive: object) -> int:
    """How many alerts the match stage has numbered (-1 while the archive is unreachable)."""
    from sqlalchemy import func, select

    from broker.archive.models import AlertRow

    try:
        with archive.engine.connect() as conn:  # type: ignore[attr-defined]
            return conn.execute(select(func.count()).select_from(AlertRow)
                                .where(AlertRow.match_seq.is_not(None))).scalar_one()
    except Exception:  # the server may be restarting
        return -1
