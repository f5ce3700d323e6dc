"""Run the benchmarks and print a table of figures: ``python -m bench [--help]``."""

from __future__ import annotations

import argparse
import sys

BENCHMARKS = ("insert", "query", "tap", "listeners", "index", "overlap", "flatmaps",
              "crossmatch", "survey-memory", "sqlite-writers", "publish", "trigger-cpu",
              "drain", "dashboard", "scaling", "survey-burst", "soak")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                   help=f"Which to run: {', '.join(BENCHMARKS)} (default: all but soak).")
    p.add_argument("--backend", action="append", choices=["sqlite", "postgresql"],
                   help="Archive backend(s) (default: both; PostgreSQL skipped if absent).")
    p.add_argument("--rows", type=int, default=1_000_000,
                   help="Alerts in the archive of the query and tap benchmarks.")
    p.add_argument("--queries", type=int, default=200,
                   help="Queries per query shape (query, tap).")
    p.add_argument("--insert-batch", type=int, default=5000,
                   help="Alerts ingested in batches for the insert benchmark.")
    p.add_argument("--insert-single", type=int, default=500,
                   help="Alerts ingested one per transaction.")
    p.add_argument("--batch", type=int, default=500, help="Batch size.")
    p.add_argument("--live", type=int, default=1_000_000,
                   help="Live alerts in the index and cross-match benchmarks.")
    p.add_argument("--listener-messages", type=int, default=5000,
                   help="Messages per stream for the listener benchmark.")
    p.add_argument("--drain-events", type=int, default=2000,
                   help="VOEvents the drain benchmark sends outbox -> Comet -> subscriber "
                        "(Comet on its SQLite event database).")
    p.add_argument("--drain-dbm-events", type=int, default=None,
                   help="The same through Comet's own dbm event database (default: "
                        "--drain-events; 0 skips it).")
    p.add_argument("--dashboard-rate", type=float, default=20.0,
                   help="Alerts/s posted while the dashboard benchmark's page is open.")
    p.add_argument("--dashboard-seconds", type=float, default=30.0,
                   help="How long the dashboard benchmark posts alerts.")
    p.add_argument("--scaling-alerts", type=int, default=8000,
                   help="Alerts the scaling benchmark pushes through 1 and 2 workers.")
    p.add_argument("--scaling-late", action="store_true",
                   help="Run the scaling benchmark with the shipped 1 h late-arrival slack: "
                        "its inputs (hours to days old) are then all late alerts, matched "
                        "against the archive, as after an outage (default: a slack that "
                        "holds them all, so they are matched as on time).")
    p.add_argument("--survey-alerts", type=int, default=10_000,
                   help="ZTF/Rubin alerts (planted partners included) of the survey-burst "
                        "benchmark, through 1 and then 2 match workers.")
    p.add_argument("--survey-listen", type=int, default=1,
                   help="Listen stages of the survey-burst benchmark.")
    p.add_argument("--soak-minutes", type=float, default=30.0, help="Length of the soak.")
    p.add_argument("--soak-rate", type=float, default=100.0, help="Alerts/s fed to the soak.")
    p.add_argument("--soak-slack-s", type=float, default=0.0,
                   help="The match engine's late-arrival slack in the soak, s (default 0: "
                        "the setting's own): how long the survey feed is held in "
                        "memory; memory and latency are also compared after it filled.")
    p.add_argument("--rebuild", action="store_true",
                   help="Reload the query and tap benchmarks' archive even if it has --rows "
                        "rows.")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if unknown := set(args.benchmarks) - set(BENCHMARKS):
        p.error(f"unknown benchmark(s) {sorted(unknown)}; known: {', '.join(BENCHMARKS)}")
    # The soak runs only when named: it lasts --soak-minutes (30 by default).
    args.benchmarks = args.benchmarks or [b for b in BENCHMARKS if b != "soak"]
    from rich.console import Console
    from rich.table import Table

    from bench import archive_bench, listeners_bench
    from bench._common import machine, pg_reachable

    console = Console(width=max(Console().width, 150))
    backends = args.backend or ["sqlite", "postgresql"]
    if "postgresql" in backends and (reason := pg_reachable()):
        console.print(f"[yellow]PostgreSQL skipped:[/] {reason}")
        backends = [b for b in backends if b != "postgresql"]
    if "tap" in args.benchmarks and not args.rebuild:
        from bench.tap_bench import preflight

        for backend in backends:  # a stale archive stops the run now, not after the others
            preflight(backend, args.rows)
    figures = []
    if "index" in args.benchmarks:
        from bench.index_bench import bench_index

        figures += bench_index(n_live=args.live)
    if "overlap" in args.benchmarks:
        from bench.overlap_bench import bench_overlap

        figures += bench_overlap()
    if "flatmaps" in args.benchmarks:
        from bench.flatmap_bench import bench_flatmaps

        figures += bench_flatmaps()
    if "crossmatch" in args.benchmarks:
        from bench.crossmatch_bench import bench_crossmatch, bench_skymap_vs_optical

        figures += bench_crossmatch(n_live=args.live)
        figures += bench_skymap_vs_optical()
    if "survey-memory" in args.benchmarks:
        from bench.crossmatch_bench import bench_survey_memory

        figures += bench_survey_memory()
    if "sqlite-writers" in args.benchmarks:
        from bench.sqlite_writers_bench import bench_sqlite_writers

        figures += bench_sqlite_writers()
    if "publish" in args.benchmarks:
        from bench.publish_bench import bench_publish

        figures += bench_publish()
    if "trigger-cpu" in args.benchmarks:
        from bench.publish_bench import bench_trigger_cpu

        figures += bench_trigger_cpu()
    if "drain" in args.benchmarks:
        from bench.drain_bench import bench_drain

        figures += bench_drain(args.drain_events, args.drain_dbm_events)
    if "dashboard" in args.benchmarks:
        from bench.dashboard_bench import bench_dashboard

        figures += bench_dashboard(rate_per_s=args.dashboard_rate,
                                   seconds=args.dashboard_seconds)
    if "scaling" in args.benchmarks:
        from bench.stages_bench import bench_scaling

        figures += bench_scaling(args.scaling_alerts, late=args.scaling_late)
    if "survey-burst" in args.benchmarks:
        from bench.survey_bench import bench_survey_burst

        figures += bench_survey_burst(args.survey_alerts, args.survey_listen)
    if "soak" in args.benchmarks:
        from bench.stages_bench import bench_soak

        figures += bench_soak(args.soak_minutes, args.soak_rate, args.soak_slack_s or None)
    if "listeners" in args.benchmarks:
        figures += listeners_bench.bench_listeners(args.listener_messages, args.batch, backends)
    for backend in backends:
        if "insert" in args.benchmarks:
            figures += archive_bench.bench_insert(backend, args.insert_batch,
                                                  args.insert_single, args.batch)
        if "query" in args.benchmarks:
            figures += archive_bench.bench_query(backend, args.rows, args.queries,
                                                 args.rebuild)
        if "tap" in args.benchmarks:
            from bench.tap_bench import bench_tap

            figures += bench_tap(backend, args.rows, args.queries,
                                 args.rebuild and "query" not in args.benchmarks)
    import os

    table = Table(title="mmbroker benchmarks",
                  caption=machine() + (f"; PostgreSQL {os.environ['MMBROKER_BENCH_PG_VERSION']}"
                                       if "MMBROKER_BENCH_PG_VERSION" in os.environ else ""))
    for col in ("benchmark", "backend", "metric", "value", "unit", "note"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for f in figures:
        table.add_row(f.benchmark, f.backend, f.metric, f"{f.value:,.1f}", f.unit, f.note)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
