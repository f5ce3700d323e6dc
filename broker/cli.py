"""The ``mmbroker`` command line.

Every command imports what it needs inside its body, so ``mmbroker --help``
stays fast.  ``main(argv=None)`` is the console-script entry point.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from broker import logs

if TYPE_CHECKING:
    from broker.archive import Archive
    from broker.config import Settings

app = typer.Typer(
    name="mmbroker",
    help="A real-time multimessenger alert broker: ingest alert streams, find coincidences, "
         "publish VOEvents with provenance, archive everything.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the archive database schema.", no_args_is_help=True)
alerts_app = typer.Typer(help="Query archived alerts.", no_args_is_help=True)
coinc_app = typer.Typer(help="Query coincidences found by the cross-match engine.",
                        no_args_is_help=True)
quarantine_app = typer.Typer(help="Inspect input that could not be normalized.",
                             no_args_is_help=True)
token_app = typer.Typer(help="Manage API bearer tokens.", no_args_is_help=True)
voevents_app = typer.Typer(help="VOEvents this broker published, and their delivery.",
                           no_args_is_help=True)
crossmatch_app = typer.Typer(help="Cross-match configuration and calibration.",
                             no_args_is_help=True)
listen_app = typer.Typer(help="Run one input listener in the foreground (Ctrl-C stops it "
                              "after the current batch).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(alerts_app, name="alerts")
app.add_typer(coinc_app, name="coincidences")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(token_app, name="token")
app.add_typer(voevents_app, name="voevents")
app.add_typer(listen_app, name="listen")
app.add_typer(crossmatch_app, name="crossmatch")
stage_app = typer.Typer(
    help="Run one stage of the broker as its own process, joined to the others by Kafka "
         "(MMBROKER_KAFKA_BOOTSTRAP) and sharing the archive (PostgreSQL). Run any number of "
         "each; `mmbroker serve` runs them all in one process.", no_args_is_help=True)
app.add_typer(stage_app, name="stage")


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


DbOption = Annotated[str | None, typer.Option(
    "--db", help="Archive: a SQLAlchemy URL or a SQLite file path. Default: "
                 "MMBROKER_DATABASE_URL, else mmbroker.sqlite3 in the data directory.")]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
LimitOption = Annotated[int, typer.Option("--limit", "-n", min=1, max=100_000,
                                          help="Most rows to show.")]


@app.callback()
def _root(ctx: typer.Context, db: DbOption = None) -> None:
    ctx.obj = {"db": db}


def _settings(ctx: typer.Context, **overrides: Any) -> Settings:
    from broker.config import database_url_from_option, get_settings
    from broker.errors import ConfigurationError

    db = (ctx.find_root().obj or {}).get("db")
    if db:
        overrides["database_url"] = database_url_from_option(db)
    try:
        return get_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigurationError as exc:
        _fail(str(exc))


def _archive(ctx: typer.Context, *, upgrade: bool = True) -> Archive:
    from broker.archive import Archive

    return Archive.open(_settings(ctx).effective_database_url, upgrade=upgrade)


def _fail(message: str, code: int = 2) -> Any:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _emit(rows: list[dict[str, Any]], columns: list[str], fmt: OutputFormat,
          *, documents: list[Any] | None = None, title: str = "") -> None:
    """Print rows as a rich table, JSON (the full documents when given) or CSV."""
    if fmt is OutputFormat.json:
        json.dump(documents if documents is not None else rows, sys.stdout, indent=2,
                  default=str)
        sys.stdout.write("\n")
    elif fmt is OutputFormat.csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title or None)
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
        Console().print(table)


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    from datetime import UTC

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"not an ISO 8601 time: {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- version, serve, ingest ---------------------------------------------------

@app.command()
def version() -> None:
    """Print the mmbroker version."""
    import broker

    typer.echo(f"mmbroker {broker.__version__}")


@app.command()
def serve(
    ctx: typer.Context,
    demo: Annotated[bool, typer.Option(help="Replay the demo scenario once the broker is up "
                                            "(alerts are marked role=test).")] = False,
    host: Annotated[str | None, typer.Option(help="Bind address [MMBROKER_HTTP_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port, 0 for any free port "
                                                  "[MMBROKER_HTTP_PORT].")] = None,
) -> None:
    """Run the broker in one process: archive, API (/health, /metrics) and, with --demo, a
    scenario to watch.  With MMBROKER_OPS_PORT, /health, /ready and /metrics (no token)
    are also served on the ops listener."""
    import threading

    import uvicorn
    from rich.console import Console

    from broker.app import create_app, start_ops, stop_ops

    settings = _settings(ctx, http_host=host, http_port=port)
    if demo:
        # The demo's alerts are role=test and public: let its coincidence raise the
        # alarm, and anyone watching see the streams' health.
        roles = list(dict.fromkeys([*settings.alarm_roles, "test"]))
        settings = settings.model_copy(update={"alarm_roles": roles, "health_scope": ""})
    logs.configure(settings.log_level, settings.log_format)
    console = Console()
    hooks: list[Any] = [lambda app: _start_listeners(app, settings),
                        lambda app: start_ops(app, settings)]
    if demo:
        hooks.append(lambda app: threading.Thread(
            target=_run_demo, args=(app, settings, console), name="demo", daemon=True).start())
    console.print(f"[bold]mmbroker[/] archive: {_redact(settings.effective_database_url)}")
    if settings.http_port:
        console.print(f"[bold]mmbroker[/] dashboard: http://{settings.http_host}:"
                      f"{settings.http_port}/  (to acknowledge alarms, sign in with a token "
                      "from `mmbroker token create --name YOUR-NAME --scope ack`)")
    server = uvicorn.Server(uvicorn.Config(create_app(settings, on_startup=hooks,
                                                      on_shutdown=[_stop_listeners, stop_ops]),
                                           host=settings.http_host, port=settings.http_port,
                                           log_level=settings.log_level.lower(),
                                           log_config=None,  # logs.configure's handlers
                                           # Open dashboards hold event streams: end them
                                           # (browsers reconnect) rather than wait forever.
                                           timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
    server.run()


SHUTDOWN_GRACE_S = 10
"""How long (s) `serve` lets open requests finish after SIGTERM or Ctrl-C."""


def _start_listeners(app: Any, settings: Settings) -> None:
    from broker import listening

    comet = None
    if settings.comet:
        from broker.comet_child import CometChild

        # Comet first: a listener subscribed to it (or a peer relaying it) must
        # find it up, since VTP replays nothing sent before a subscriber connects.
        # Never fatal: its supervisor retries with back-off and the outbox waits.
        comet = app.state.comet = CometChild(settings)
        comet.run()
        if comet.check() != "ok":  # why: logged by the supervisor, once
            typer.echo("warning: Comet is not up; retrying in the background (/ready says "
                       "why)", err=True)
    app.state.listeners = listening.start(settings, app.state.archive,
                                          sink=app.state.ingestor)
    listening.start_delivery(settings, app.state.archive, app.state.ingestor,
                             app.state.listeners, vtp_gate=comet)


def _stop_listeners(app: Any) -> None:
    running = getattr(app.state, "listeners", None)
    if running is not None:
        running.shutdown()
    comet = getattr(app.state, "comet", None)
    if comet is not None:
        comet.stop()  # after the delivery loops: they send until the end


def _run_demo(app: Any, settings: Settings, console: Any) -> None:
    from broker import demo

    console.print("[bold cyan]demo[/]: replaying a neutrino trigger, a Fermi GBM burst and an "
                  "LVK alert with its sky map (all role=test)")

    def report(label: str, outcome: Any) -> None:
        alert = outcome.alert
        what = (f"{alert.facility:>8} {alert.messenger:<18} {format_time(alert)}"
                if alert else label)
        console.print(f"[bold cyan]demo[/]: {what} -> {outcome.status} "
                      f"{outcome.ivorn or outcome.reason}")

    demo.run(app.state.ingestor, report=report)
    console.print("[bold cyan]demo[/]: done; list them with "
                  "`mmbroker alerts list --role test`")


def format_time(alert: Any) -> str:
    return alert.trigger_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def ingest(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, readable=True,
                                                help="Message files (JSON, VOEvent XML, Avro).")],
    source: Annotated[str, typer.Option(help="Stream name to record the files under, e.g. the "
                                             "Kafka topic they came from.")] = "file",
    batch_size: Annotated[int | None, typer.Option(min=1, max=10_000,
                                                   help="Files per archive transaction.")] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Ingest message files: detect each format, normalize, archive or quarantine."""
    from rich.progress import Progress

    from broker.ingest import IngestReport
    from broker.listening import configure_normalizers, make_pipeline

    settings = _settings(ctx)
    configure_normalizers(settings)
    archive = _archive(ctx)
    # Files hold past alerts: the engine runs on their event times, not the clock,
    # and what they give rise to is archived, not sent to subscribers.
    ingestor = make_pipeline(settings, archive, replay=True, warm=False, targets=[])
    size = batch_size or settings.ingest_batch_size
    report = IngestReport()
    path_of: dict[str, str] = {}
    with Progress(transient=True, disable=fmt is not OutputFormat.table) as progress:
        task = progress.add_task("ingesting", total=len(files))
        for start in range(0, len(files), size):
            chunk = files[start:start + size]
            raws = [ingestor.receive(source, p.read_bytes(), transport={"file": str(p)})
                    for p in chunk]
            path_of.update((r.sha256, str(p)) for r, p in zip(raws, chunk, strict=True))
            report.add(ingestor.ingest(raws))
            progress.advance(task, len(chunk))
    archive.close()
    rows = [{"source": s, **counts} for s, counts in report.by_source().items()]
    quarantined = [{"file": path_of.get(o.raw_sha256, "?"), "reason": o.reason}
                   for o in report.outcomes if o.status == "quarantined"]
    _emit(rows, ["source", "archived", "duplicate", "quarantined", "heartbeat"], fmt,
          documents=[{"summary": rows, "quarantined": quarantined}], title="ingest summary")
    if fmt is OutputFormat.table:
        for q in quarantined:
            typer.echo(f"quarantined {q['file']}: {q['reason']}", err=True)


# -- db -----------------------------------------------------------------------

@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context,
               revision: Annotated[str, typer.Argument(help="Target revision.")] = "head"
               ) -> None:
    """Create or migrate the archive schema to REVISION (default: newest)."""
    from broker import migrate
    from broker.db import make_engine

    engine = make_engine(_settings(ctx).effective_database_url)
    migrate.upgrade(engine, revision)
    typer.echo(f"archive at revision {migrate.current_revision(engine)}")
    engine.dispose()


@db_app.command("downgrade")
def db_downgrade(ctx: typer.Context,
                 revision: Annotated[str, typer.Argument(help="Target revision; 'base' "
                                                              "drops every table.")]) -> None:
    """Migrate the archive schema back to REVISION."""
    from broker import migrate
    from broker.db import make_engine

    engine = make_engine(_settings(ctx).effective_database_url)
    migrate.downgrade(engine, revision)
    typer.echo(f"archive at revision {migrate.current_revision(engine)}")
    engine.dispose()


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the archive's schema revision and the newest one this version knows."""
    from broker import migrate
    from broker.db import make_engine

    engine = make_engine(_settings(ctx).effective_database_url)
    typer.echo(f"current: {migrate.current_revision(engine)}  head: {migrate.head_revision()}")
    engine.dispose()


# -- alerts -------------------------------------------------------------------

ALERT_COLUMNS = ["id", "trigger_time", "messenger", "facility", "alert_type", "role",
                 "ra_deg", "dec_deg", "far_hz"]


@alerts_app.command("list")
def alerts_list(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="Event time from (ISO 8601, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Event time to (ISO 8601, UTC).")] = None,
    messenger: Annotated[str | None, typer.Option(help="e.g. neutrino, gamma_ray.")] = None,
    source: Annotated[str | None, typer.Option(help="Input stream name.")] = None,
    facility: Annotated[str | None, typer.Option(help="e.g. IceCube, Fermi, LVK.")] = None,
    role: Annotated[str | None, typer.Option(help="observation, test, drill, ...")] = None,
    far_max: Annotated[float | None, typer.Option(help="Largest FAR, in Hz.")] = None,
    pipeline: Annotated[str | None, typer.Option(help="Provenance: the facility's "
                                                      "pipeline.")] = None,
    pipeline_version: Annotated[str | None, typer.Option(help="Provenance: its "
                                                              "version.")] = None,
    reco_method: Annotated[str | None, typer.Option(help="Provenance: reconstruction "
                                                         "method.")] = None,
    cone: Annotated[str | None, typer.Option(help="RA,DEC,RADIUS in ICRS degrees.")] = None,
    limit: LimitOption = 50,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List archived alerts, newest event first."""
    from broker.archive import AlertQuery

    cone_t = None
    if cone:
        try:
            ra, dec, radius = (float(x) for x in cone.split(","))
        except ValueError:
            _fail(f"--cone wants RA,DEC,RADIUS in degrees, got {cone!r}")
        if not (0 <= ra < 360 and -90 <= dec <= 90 and 0 < radius <= 180):
            _fail("--cone out of range: 0 <= RA < 360, -90 <= DEC <= 90, 0 < RADIUS <= 180")
        cone_t = (ra, dec, radius)
    query = AlertQuery(since=_parse_time(since), until=_parse_time(until), messenger=messenger,
                       source=source, facility=facility, role=role, far_max_hz=far_max,
                       pipeline=pipeline, pipeline_version=pipeline_version,
                       reco_method=reco_method, cone=cone_t, limit=limit)
    archive = _archive(ctx)
    docs = archive.list_alerts(query)
    archive.close()
    rows = [{**d, "ra_deg": d["localization"].get("ra_deg"),
             "dec_deg": d["localization"].get("dec_deg")} for d in docs]
    _emit(rows, ALERT_COLUMNS, fmt, documents=docs, title="alerts")


@alerts_app.command("show")
def alerts_show(ctx: typer.Context,
                ivorn: Annotated[str, typer.Argument(help="The alert's IVORN.")],
                raw: Annotated[bool, typer.Option(help="Print the raw bytes as received.")]
                = False) -> None:
    """Print one alert's document (or its raw payload)."""
    archive = _archive(ctx)
    doc = archive.get_alert(ivorn)
    if doc is None:
        _fail(f"no alert {ivorn}", code=1)
    if raw:
        sys.stdout.buffer.write(archive.raw_payload(doc["raw_sha256"]) or b"")
    else:
        typer.echo(json.dumps(doc, indent=2))
    archive.close()


# -- coincidences, quarantine -------------------------------------------------

@coinc_app.command("list")
def coincidences_list(ctx: typer.Context, limit: LimitOption = 50,
                      fmt: FormatOption = OutputFormat.table) -> None:
    """List coincidences with their members, offsets, overlap and significance."""
    archive = _archive(ctx)
    docs = archive.list_coincidences(limit)
    archive.close()
    rows = [{"id": d["id"], "pairing": d["pairing"], "state": d["state"],
             "members": " ".join(m["alert_id"] for m in d["members"]),
             "overlap": (d.get("spatial_overlap") or {}).get("integral"),
             "significance": "; ".join(f"{s['name']}={s['value']:.3g} {s['unit']}"
                                       for s in d["significance"])} for d in docs]
    _emit(rows, ["id", "pairing", "state", "members", "overlap", "significance"], fmt,
          documents=docs, title="coincidences")


@quarantine_app.command("list")
def quarantine_list(ctx: typer.Context, source: Annotated[str | None, typer.Option()] = None,
                    limit: LimitOption = 50, fmt: FormatOption = OutputFormat.table) -> None:
    """List quarantined input, newest first, with the reason it was refused."""
    archive = _archive(ctx)
    rows = archive.list_quarantine(limit, source)
    archive.close()
    _emit(rows, ["id", "received_at", "source", "error_class", "reason"], fmt,
          title="quarantine")


# -- published VOEvents ---------------------------------------------------------

@voevents_app.command("list")
def voevents_list(ctx: typer.Context, limit: LimitOption = 50,
                  fmt: FormatOption = OutputFormat.table) -> None:
    """Published VOEvents, newest first, with each delivery target's state.

    "sent" means the target acknowledged it: for vtp, our own Comet broker (it
    broadcasts to the subscribers connected then); never a receipt from a
    subscriber. For kafka-*, the Kafka cluster (acks=all).
    """
    from broker import outbox

    archive = _archive(ctx)
    entries = outbox.status(archive, limit=limit)
    pending = outbox.pending_count(archive)
    archive.close()
    rows = [{"ivorn": e["ivorn"], "created_at": e["created_at"].isoformat(),
             **{f"{t}": (f"{d['state']} ({d['attempts']} attempts)" + _held(d)
                         + (f": {d['last_error'][:60]}" if d["last_error"] else ""))
                for t, d in e["targets"].items()}} for e in entries]
    targets = sorted({t for e in entries for t in e["targets"]})
    if fmt is OutputFormat.table:
        typer.echo(f"{pending} deliveries pending; {SENT_MEANS}", err=True)
    _emit(rows, ["ivorn", "created_at", *targets], fmt, documents=[
        {**e, "created_at": e["created_at"].isoformat()} for e in entries],
        title="published VOEvents")


def _held(delivery: dict) -> str:
    """How a held delivery waits or was released (embargoed and proprietary VOEvents)."""
    if delivery["state"] == "held":
        until = delivery["held_until"]
        return f" until {until.isoformat()}" if until else " (proprietary: never public)"
    if delivery["released_at"] is not None:
        return f" released {delivery['released_at'].isoformat()}"
    return ""


SENT_MEANS = ("sent = acknowledged by the target: for vtp by our own Comet broker, not "
              "received by any subscriber (VTP tells an author nothing of those)")


# -- cross-match ----------------------------------------------------------------

@crossmatch_app.command("calibrate")
def crossmatch_calibrate(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="Use alerts from (ISO 8601, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Use alerts until (ISO 8601, UTC).")] = None,
    pairing: Annotated[list[str] | None, typer.Option(
        help="Pairing to calibrate; repeat for several (default: all).")] = None,
    scrambles: Annotated[int, typer.Option(min=1, max=100_000,
                                           help="Time scrambles per pairing.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed (reproducible runs).")] = 0,
    spatial: Annotated[bool, typer.Option(help="Apply each spatial pairing's sky gate to "
                                               "scrambled pairs (slower).")] = True,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Time-scramble archived alerts and compare, per pairing, the observed false-coincidence
    rate with the rate the configured backgrounds predict."""
    from alerts_schema import Alert
    from broker.archive import AlertQuery
    from crossmatch.calibration import calibrate_alerts
    from crossmatch.config import load_config

    settings = _settings(ctx)
    config = load_config(settings.crossmatch_config)
    archive = _archive(ctx)
    docs = archive.list_alerts(AlertQuery(since=_parse_time(since), until=_parse_time(until),
                                          role="observation", limit=10_000_000))
    alerts = [Alert.model_validate(d) for d in docs]
    gate = _spatial_gate(archive, config) if spatial else None
    try:
        results = calibrate_alerts(config, alerts, n_scrambles=scrambles, seed=seed,
                                   pairings=pairing or None, spatial_gate=gate)
    except KeyError as exc:
        _fail(str(exc.args[0]))
    archive.close()
    rows = [r.to_dict() for r in results]
    typer.echo(f"{len(alerts)} observation alerts; config {config.config_hash[:12]}", err=True)
    _emit(rows, ["pairing", "observed_count", "observed_rate_hz", "predicted_rate_hz",
                 "ratio", "relative_error", "spatial_gate", "notes"], fmt,
          title="cross-match calibration (ratio = observed / predicted)")


def _spatial_gate(archive: Any, config: Any) -> Any:
    """The engine's own sky test (sky maps from the archive), for scrambled pairs."""
    from crossmatch.engine import Engine

    engine = Engine(config, authority="calibration.mmbroker", skymap_loader=archive.skymap)
    return lambda pairing, a, b: engine.sky_test(pairing, a, b)[0]


# -- listeners, stream health -------------------------------------------------

def _listen_until_signalled(running: Any) -> None:
    import signal
    import threading

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.5):
        if not any(t.is_alive() for t in running.threads):
            break
    running.shutdown()


@listen_app.command("kafka")
def listen_kafka(
    ctx: typer.Context,
    topic: Annotated[list[str], typer.Option(help="Topic to consume; repeat for several.")],
    bootstrap: Annotated[str | None, typer.Option(
        help="host:port[,host:port]; default KAFKA_BOOTSTRAP_SERVERS, then "
             "MMBROKER_KAFKA_BOOTSTRAP.")] = None,
    group_id: Annotated[str | None, typer.Option(
        help="Stable consumer group [MMBROKER_KAFKA_GROUP_ID].")] = None,
    since: Annotated[str | None, typer.Option(
        help="Replay from this time (ISO 8601, UTC) instead of the committed offsets.")] = None,
    from_beginning: Annotated[bool, typer.Option(
        help="A new group starts at the oldest retained message, not the newest.")] = False,
) -> None:
    """Consume Kafka topics into the archive. Credentials come from KAFKA_* variables named
    as gcn-kafka names them (e.g. KAFKA_CLIENT___ID, KAFKA_CLIENT___SECRET, KAFKA_DOMAIN)."""

    from broker import listening
    from listeners.kafka import config_from_env

    settings = _settings(ctx, kafka_group_id=group_id)
    logs.configure(settings.log_level, settings.log_format)
    config = config_from_env()
    if bootstrap:
        config["bootstrap.servers"] = bootstrap
    if from_beginning:
        config.setdefault("auto.offset.reset", "earliest")
    archive = _archive(ctx)
    running = listening.start(settings, archive, kafka_topics=topic, kafka_config=config,
                              vtp_peers=[], since=_parse_time(since))
    _listen_until_signalled(running)
    archive.close()


@listen_app.command("vtp")
def listen_vtp(
    ctx: typer.Context,
    remote: Annotated[list[str], typer.Option(help="VTP broker host:port; repeat for "
                                                   "several.")],
    filter_: Annotated[list[str] | None, typer.Option(
        "--filter", help="XPath filter sent to the peer (VTP authenticate).")] = None,
) -> None:
    """Subscribe to VTP brokers (Comet or any VTP peer) and archive what they send."""

    from broker import listening

    settings = _settings(ctx, vtp_peers=remote)
    logs.configure(settings.log_level, settings.log_format)
    archive = _archive(ctx)
    running = listening.start(settings, archive, kafka_topics=[], vtp_peers=remote,
                              filters=tuple(filter_ or ()))
    _listen_until_signalled(running)
    archive.close()


# -- stages ----------------------------------------------------------------------


def _stage_ops(settings: Settings, archive: Any, running: Any) -> None:
    if settings.ops_port:
        from broker.opsserver import ready_checks, serve_ops

        serve_ops(settings.ops_host, settings.ops_port,
                  lambda: ready_checks(archive, running), archive)


def _stage_settings(ctx: typer.Context) -> Settings:
    settings = _settings(ctx)
    logs.configure(settings.log_level, settings.log_format)
    if not settings.kafka_bootstrap:
        _fail("the stages are joined by Kafka: set MMBROKER_KAFKA_BOOTSTRAP")
    from broker.notify import bus_client_kwargs, ensure_topic

    bus = bus_client_kwargs()  # a bad property or secret file is no "cluster still starting"
    try:
        ensure_topic(settings.kafka_bootstrap, settings.kafka_alerts_topic,  # type: ignore
                     settings.kafka_alerts_partitions, settings.kafka_replication_factor, bus)
    except Exception as exc:  # the cluster may still be starting: the stage retries
        typer.echo(f"warning: could not create {settings.kafka_alerts_topic}: {exc}",
                   err=True)
    return settings


@stage_app.command("listen")
def stage_listen(ctx: typer.Context) -> None:
    """Archive what the input streams send (MMBROKER_KAFKA_TOPICS, MMBROKER_VTP_PEERS) and
    announce each alert to the match stage."""
    from broker import listening
    from broker.notify import announcer

    settings = _stage_settings(ctx)
    archive = _archive(ctx)
    sink = announcer(settings, archive)
    running = listening.start(settings, archive, sink=sink)
    _stage_ops(settings, archive, running)
    _listen_until_signalled(running)
    sink.close()
    archive.close()


@stage_app.command("match")
def stage_match(ctx: typer.Context) -> None:
    """Cross-match announced alerts, store coincidences and queue their VOEvents."""
    from broker import listening
    from broker.matching import MatchSink, MatchWorker, run_sweeper
    from broker.notify import bus_consumer_properties
    from listeners.kafka import KafkaListener, KafkaSource

    settings = _stage_settings(ctx)
    archive = _archive(ctx)
    listening.configure_normalizers(settings)
    worker = MatchWorker(settings, archive)
    worker.warm()
    config = bus_consumer_properties(settings, f"{settings.effective_kafka_group_id}.match")
    running = listening.Listeners()
    listening._spawn(running, KafkaListener(KafkaSource([settings.kafka_alerts_topic], config),
                                            MatchSink(worker),  # type: ignore[arg-type]
                                            batch_size=settings.ingest_batch_size), "match")
    import threading

    sweeper = threading.Thread(target=run_sweeper, args=(worker, running.stop),
                               name="match-sweep", daemon=True)
    sweeper.start()
    running.threads.append(sweeper)
    _stage_ops(settings, archive, running)
    _listen_until_signalled(running)
    archive.close()


@stage_app.command("publish")
def stage_publish(ctx: typer.Context) -> None:
    """Deliver queued VOEvents to Comet (VTP) and the Kafka output topics."""
    from broker import listening

    settings = _stage_settings(ctx)
    archive = _archive(ctx)
    running = listening.Listeners()
    listening.start_delivery(settings, archive, None, running)
    _stage_ops(settings, archive, running)
    _listen_until_signalled(running)
    archive.close()


@stage_app.command("api")
def stage_api(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address [MMBROKER_HTTP_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port [MMBROKER_HTTP_PORT].")] = None,
) -> None:
    """Serve the HTTP API and dashboard; posted triggers are archived and announced."""
    import uvicorn

    from broker.app import create_app, start_ops, stop_ops

    settings = _stage_settings(ctx)
    settings = settings.model_copy(update={k: v for k, v in
                                           (("http_host", host), ("http_port", port))
                                           if v is not None})
    server = uvicorn.Server(uvicorn.Config(create_app(settings, staged=True,
                                                      on_startup=[lambda app: start_ops(
                                                          app, settings)],
                                                      on_shutdown=[stop_ops]),
                                           host=settings.http_host, port=settings.http_port,
                                           log_level=settings.log_level.lower(),
                                           log_config=None,
                                           timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
    server.run()


@app.command()
def streams(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """Health of every input stream: last message, counts, heartbeats (ages in seconds)."""
    from broker.archive import utcnow

    archive = _archive(ctx)
    now = utcnow()
    rows = []
    for h in archive.stream_health():
        def age(t: Any) -> float | None:
            return round((now - t).total_seconds(), 1) if t else None

        rows.append({"stream": h["stream"], "detector": h["detector"] or "",
                     "last_message_age_s": age(h["last_message_at"]),
                     "messages": h["messages_total"], "quarantined": h["quarantined_total"],
                     "heartbeat_age_s": age(h["last_heartbeat_at"]),
                     "status": h["heartbeat_status"],
                     "last_message_at": h["last_message_at"],
                     "last_heartbeat_at": h["last_heartbeat_at"]})
    archive.close()
    _emit(rows, ["stream", "detector", "last_message_age_s", "messages", "quarantined",
                 "heartbeat_age_s", "status"], fmt, title="streams")


# -- tokens -------------------------------------------------------------------

@token_app.command("create")
def token_create(
    ctx: typer.Context,
    scope: Annotated[list[str], typer.Option(help="A scope: read:embargoed, read:proprietary, "
                                                  "write:triggers, ack, read:metrics or admin. "
                                                  "Repeat for several.")],
    name: Annotated[str, typer.Option(help="Who or what the token is for.")] = "unnamed",
    detector: Annotated[list[str] | None, typer.Option(
        help="A detector (the trigger's `detector`, e.g. KM3NeT) a write:triggers token may "
             "post, revise and retract triggers for. Repeat for several; required for "
             "write:triggers unless MMBROKER_ALLOW_UNBOUND_TRIGGER_TOKENS is set.")] = None,
    expires_days: Annotated[float | None, typer.Option(
        help="Lifetime in days (more than 0; omit for a token that never expires).")] = None,
) -> None:
    """Create an API token and print it once (only its hash is stored)."""
    import math
    from datetime import timedelta

    from broker.errors import ConfigurationError
    from broker.tokens import create_token

    if expires_days is not None and not (math.isfinite(expires_days) and expires_days > 0):
        _fail(f"--expires-days must be more than 0 (got {expires_days:g}); omit it for a "
              "token that never expires")
    archive = _archive(ctx)
    try:
        token, info = create_token(archive, name, scope,
                                   timedelta(days=expires_days) if expires_days else None,
                                   detectors=detector)
    except ConfigurationError as exc:
        _fail(str(exc))
    except OverflowError:
        _fail(f"--expires-days {expires_days:g} is beyond the calendar")
    archive.close()
    typer.echo(token)
    bound = (f"; detectors: {', '.join(sorted(info.detectors))}"
             if info.detectors is not None else "")
    typer.echo(f"token {info.id} ({name}) scopes: {' '.join(sorted(info.scopes))}{bound}; "
               "store it now, it is not shown again", err=True)
    if "write:triggers" in info.scopes and info.detectors is None \
            and not _settings(ctx).allow_unbound_trigger_tokens:
        typer.echo("warning: this write:triggers token is bound to no detector, so it can "
                   "post no trigger; create it with --detector NAME", err=True)


@token_app.command("list")
def token_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """List tokens (never their secrets)."""
    from broker.tokens import list_tokens

    archive = _archive(ctx)
    rows = [{"id": t.id, "name": t.name, "scopes": " ".join(sorted(t.scopes)),
             "detectors": ", ".join(sorted(t.detectors)) if t.detectors is not None else None,
             "created_at": t.created_at.isoformat(),
             "expires_at": t.expires_at.isoformat() if t.expires_at else None,
             "revoked": t.revoked_at is not None} for t in list_tokens(archive)]
    archive.close()
    _emit(rows, ["id", "name", "scopes", "detectors", "created_at", "expires_at", "revoked"],
          fmt, title="tokens")


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: Annotated[int, typer.Argument()]) -> None:
    """Revoke token TOKEN_ID."""
    from broker.tokens import revoke_token

    archive = _archive(ctx)
    ok = revoke_token(archive, token_id)
    archive.close()
    if not ok:
        _fail(f"no live token {token_id}", code=1)
    typer.echo(f"token {token_id} revoked")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    try:
        app(args=argv, prog_name="mmbroker")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        typer.echo(str(exc.code), err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
