"""The soak, shortened for CI: ``python -m bench soak`` for 90 s at 50 alerts/s on real
tansu and PostgreSQL, one listen and one match worker, the survey held for a 20 s slack.

Speed and memory are figures the benchmark prints, not asserted here (shared machines);
what must hold is that the stages take a sustained survey-rate feed with its drills to
the end: the match stage numbers alerts in every sample, through the time the slack's
worth of memory is full and beyond.  ``bench/RESULTS.md`` has the 30-minute run.
"""

from __future__ import annotations

import pytest

from bench._common import Figure


@pytest.mark.timeout(400)
def test_a_shortened_soak_matches_throughout(pg_available: None,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from bench.stages_bench import bench_soak

    figures: list[Figure] = bench_soak(minutes=1.5, rate_per_s=50.0, slack_s=20.0)
    with capsys.disabled():
        for f in figures:
            print(f"\n  soak (CI): {f.metric}: {f.value:,.1f} {f.unit}  {f.note}", end="")
        print()
    by = {f.metric: f for f in figures}
    # A sample is taken only when alerts were matched since the last one: every 10 s.
    assert by["samples"].value >= 7
    assert "match RSS, slack full -> last" in by  # samples after the slack filled
    # Not stalled: never half a minute of input archived and waiting (a liveness bound,
    # far from the ~1 s the benchmark sees here).
    assert by["archived, not yet matched (largest)"].value < 50.0 * 30
