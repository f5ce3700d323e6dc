"""The ``mmbroker`` command line.

``main(argv=None)`` is the console-script entry point.

Function-local imports: each command imports its machinery (the archive and
SQLAlchemy, the settings, the runtime, the web app and uvicorn, the cross-match
engine, Kafka configuration, rich's tables) when it runs, deferred so that
``mmbroker --help`` and the commands that need little start fast.  What is
already loaded to parse the command line (the standard library, typer, the
``broker`` package with the exception tree) is imported at the top.
"""

from __future__ import annotations

import csv
import gc
import json
import math
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer

import broker
from alerts_schema import Alert
from alerts_schema.errors import ConfigurationError, MMBrokerError
from broker import logs

if TYPE_CHECKING:
    from rich.console import Console

    from broker.archive.store import Archive
    from broker.config import Settings

app = typer.Typer(
    name="mmbroker",
    help="A real-time multimessenger alert broker: ingest alert streams, find coincidences, "
         "publish VOEvents with provenance, archive everything.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Subcommands inherit this through click's context: `-h` works everywhere.
    context_settings={"help_option_names": ["-h", "--help"]},
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
                 "MMBROKER_DATABASE_URL, else mmbroker.sqlite3 in the data directory. Only "
                 "`db upgrade` and `serve` create it. Goes before the command.")]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
LimitOption = Annotated[int, typer.Option("--limit", "-n", min=1, max=100_000,
                                          help="Most rows to show.")]
WideOption = Annotated[bool, typer.Option(
    "--wide", "-w", help="Every column, however wide (the default fits the terminal, "
                         "dropping the less important columns first).")]

GLOBAL_OPTIONS = ("--db", "--version")
"""Options of `mmbroker` itself: they go before the command."""


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mmbroker {broker.__version__}")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context, db: DbOption = None,
          version: Annotated[bool, typer.Option(  # acted on by its callback
              "--version", callback=_print_version, is_eager=True,
              help="Print the mmbroker version and exit.")] = False) -> None:
    ctx.obj = {"db": db}


def _settings(ctx: typer.Context, **overrides: Any) -> Settings:
    from broker.config import database_url_from_option, get_settings

    db = (ctx.find_root().obj or {}).get("db")
    try:
        if db:
            overrides["database_url"] = database_url_from_option(db)
        return get_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigurationError as exc:
        _fail(str(exc))


KNOWN_BACKENDS = ("sqlite", "postgresql")
PG_CONNECT_TIMEOUT_S = 10
"""How long (s) a command waits for PostgreSQL to answer before saying it cannot reach it."""


def _db_words(ctx: typer.Context) -> str:
    """How the user named the archive, to repeat in a suggested command."""
    db = (ctx.find_root().obj or {}).get("db")
    return f"--db {shlex.quote(db)} " if db else ""


def _engine(ctx: typer.Context, *, create: bool = False, need_archive: bool = True) -> Any:
    """An engine on the archive, after checking it is one.

    Only ``create`` (`db upgrade`, `serve` and the stages) may make a new SQLite file, and
    never a missing folder but the default data directory; otherwise a missing file, an
    empty database (``need_archive``), an unknown URL scheme or an unreachable server end
    the command with one line saying what to do.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from broker.archive import migrate
    from broker.archive.db import make_engine

    settings = _settings(ctx)
    url = settings.effective_database_url
    try:
        parsed = make_url(url)
    except ArgumentError:
        _fail(f"not a database URL: {url!r} (use a file path, sqlite:///PATH or "
              "postgresql+psycopg://USER@HOST:5432/DB)")
    shown = _redact(url)
    backend = parsed.get_backend_name()
    if backend not in KNOWN_BACKENDS:
        _fail(f"unknown database URL scheme {parsed.drivername!r} in {shown} (use a file "
              "path, sqlite:///PATH or postgresql+psycopg://USER@HOST:5432/DB)")
    upgrade_cmd = f"`mmbroker {_db_words(ctx)}db upgrade`"
    kwargs: dict[str, Any] = {}
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(str(parsed.database)).expanduser()
        if not path.exists():
            if not create:
                _fail(f"no archive at {path}; create one with {upgrade_cmd} "
                      "(or check the path)", code=1)
            default = settings.database_url is None  # the data directory is ours to make
            if not path.parent.is_dir() and not default:
                _fail(f"folder {path.parent} does not exist: make it first, or fix the path")
    elif backend == "postgresql" and "connect_timeout" not in parsed.query:
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    engine = make_engine(url, **kwargs)
    try:
        revision = migrate.current_revision(engine)
    except (SQLAlchemyError, MMBrokerError, OSError) as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
        _fail(f"cannot open the archive at {shown}: {reason[0]}", code=1)
    if need_archive and revision is None:
        engine.dispose()
        _fail(f"{shown} holds no mmbroker archive; create one with {upgrade_cmd}", code=1)
    return engine


def _archive(ctx: typer.Context, *, create: bool = False) -> Archive:
    """The archive, its schema brought up to date (it must exist unless ``create``)."""
    from broker.archive import migrate
    from broker.archive.store import Archive

    engine = _engine(ctx, create=create, need_archive=not create)
    if not migrate.is_current(engine):
        migrate.upgrade(engine)
    return Archive(engine)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@dataclass(frozen=True)
class Column:
    """One column of a table: its key in the row, header, cell format and how it gives way
    in a narrow terminal."""

    key: str
    header: str = ""
    fmt: Callable[[Any], str] | None = None
    drop: int = 0
    """0: never dropped; otherwise dropped in increasing order when the table is too wide."""
    wrap: bool = False
    """Free text that may wrap; everything else (IVORNs, times, numbers) is never cut."""
    wide_only: bool = False
    justify: Literal["left", "right"] = "left"
    label: bool = True
    """In the stacked layout, whether the value needs its header beside it."""


def fmt_time(value: Any) -> str:
    """UTC, ISO 8601 to the millisecond."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def fmt_deg(value: Any) -> str:
    """An angle to 4 decimals (0.36 arcsec), enough for any alert's localization."""
    return "" if value is None else f"{float(value):.4f}"


def fmt_sig(value: Any, digits: int = 3) -> str:
    """A rate or ratio to ``digits`` significant figures."""
    return "" if value is None else f"{float(value):.{digits}g}"


def fmt_value(value: Any) -> str:
    """Any cell: times to the ms, floats without their binary noise."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return fmt_time(value)
    if isinstance(value, float):
        return f"{value:.6g}" if value == 0 or 1e-3 <= abs(value) < 1e7 else f"{value:.3g}"
    return str(value)


KEY_COLUMNS = ("id", "ivorn")
"""Generic columns that identify a row: shown whole, never dropped."""


def _columns(spec: list[Column] | list[str], rows: list[dict[str, Any]]) -> list[Column]:
    if spec and isinstance(spec[0], Column):
        return [c for c in spec if isinstance(c, Column)]
    out = []
    for i, key in enumerate(spec):
        assert isinstance(key, str)
        values = [r.get(key) for r in rows if r.get(key) is not None]
        plain = all(isinstance(v, int | float | datetime) for v in values)
        out.append(Column(key, key, drop=0 if key in KEY_COLUMNS else len(spec) - i,
                          wrap=key not in KEY_COLUMNS and not plain,
                          justify="right" if plain and values and not all(
                              isinstance(v, datetime) for v in values) else "left"))
    return out


COLUMN_GAP = 3
"""Characters between two columns (padding either side of a blank rule)."""


def _table(columns: list[Column], rows: list[dict[str, Any]], title: str
           ) -> tuple[Any, int, int]:
    """The rich table, the narrowest it can be without cutting an identifier, a number or a
    word, and its natural width (characters)."""
    from rich import box
    from rich.table import Table

    table = Table(title=title or None, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                  title_justify="left", title_style="bold")
    cells = [[(col.fmt or fmt_value)(row.get(col.key)) for col in columns] for row in rows]
    narrowest = natural = COLUMN_GAP * (len(columns) - 1)
    for i, col in enumerate(columns):
        header = col.header or col.key
        texts = [header, *(r[i] for r in cells)]
        full = max(len(t) for t in texts)
        natural += full
        narrowest += max(len(w) for t in texts for w in t.split() or [""]) if col.wrap else full
        table.add_column(header, no_wrap=not col.wrap, justify=col.justify,
                         overflow="fold" if col.wrap else "ignore")
    for row in cells:
        table.add_row(*row)
    return table, narrowest, natural


def _stacked(console: Any, key: Column, others: list[Column], rows: list[dict[str, Any]],
             title: str, hidden: list[str], how: str) -> None:
    """Rows for a terminal too narrow for the identifier and one more column: the whole
    identifier on a line, the other values wrapped below it."""
    from rich.text import Text

    if title:
        console.print(Text(title, style="bold"))
    for row in rows:
        console.print(Text((key.fmt or fmt_value)(row.get(key.key)), style="bold"),
                      no_wrap=True, crop=False, soft_wrap=True)
        parts = []
        for col in others:
            value = (col.fmt or fmt_value)(row.get(col.key))
            if value:
                parts.append(f"{col.header} {value}" if col.label else value)
        lines = [""]
        for part in parts:  # wrapped between values, never inside one
            if lines[-1] and len(lines[-1]) + 3 + len(part) > console.width - 2:
                lines.append("")
            lines[-1] += ("   " if lines[-1] else "") + part
        for text in lines:
            console.print(Text("  " + text), no_wrap=True, crop=False, soft_wrap=True)
    if hidden and rows:
        console.print(f"not shown: {', '.join(hidden)} ({how})")


def _emit(rows: list[dict[str, Any]], columns: list[Column] | list[str], fmt: OutputFormat,
          *, documents: list[Any] | None = None, title: str = "",
          wide: bool | None = None) -> None:
    """Print rows as a table, JSON (the full documents when given) or CSV.

    The table fits the terminal (``COLUMNS``, else 80 when not a terminal) with every
    identifier whole: the columns least needed are left out until it does, unless ``wide``
    (then every column, however wide the lines get); None: the command has no --wide.
    """
    if fmt is OutputFormat.json:
        json.dump(documents if documents is not None else rows, sys.stdout, indent=2,
                  default=str)
        sys.stdout.write("\n")
        return
    cols = _columns(columns, rows)
    if fmt is OutputFormat.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=[c.key for c in cols],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return
    from rich.console import Console

    console = Console()
    shown = [c for c in cols if wide or not c.wide_only]
    hidden: list[str] = []
    table, narrowest, natural = _table(shown, rows, title)
    keys = [c for c in shown if not c.drop]
    if not wide and narrowest > console.width and len(keys) == 1 and rows and \
            _table([keys[0], min((c for c in shown if c.drop), key=lambda c: -c.drop)],
                   rows, title)[1] > console.width:
        _stacked(console, keys[0], [c for c in shown if c.drop], rows, title,
                 [c.header or c.key for c in cols if c.wide_only],
                 "--wide or --format json" if wide is not None else "--format json")
        return
    if wide:
        console = Console(width=max(console.width, natural))
    else:
        while narrowest > console.width:
            droppable = [c for c in shown if c.drop]
            if not droppable:
                console = Console(width=narrowest)  # an identifier wider than the terminal
                break
            gone = min(droppable, key=lambda c: c.drop)
            shown.remove(gone)
            hidden.append(gone.header or gone.key)
            table, narrowest, natural = _table(shown, rows, title)
    hidden += [c.header or c.key for c in cols if c.wide_only and not wide]
    if hidden and rows:
        how = "--wide or --format json" if wide is not None else "--format json"
        table.caption = f"not shown: {', '.join(hidden)} ({how})"
        table.caption_justify = "left"
    console.print(table, crop=False)


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"not an ISO 8601 time: {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- version, serve, ingest ---------------------------------------------------

@app.command()
def version() -> None:
    """Print the mmbroker version."""
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
    import uvicorn
    from rich.console import Console

    from broker.web.app import create_app, stop_ops

    settings = _settings(ctx, http_host=host, http_port=port)
    if demo:
        # The demo's alerts are role=test and public: let its coincidence raise the
        # alarm, and anyone watching see the streams' health.
        roles = list(dict.fromkeys([*settings.alarm_roles, "test"]))
        settings = settings.model_copy(update={"alarm_roles": roles, "health_scope": ""})
    _engine(ctx, create=True, need_archive=False).dispose()  # a bad --db: one line, now
    logs.configure(settings.log_level, settings.log_format)
    console = Console()
    hooks = _startup_hooks(settings, console, demo=demo)
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
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    server.run()


SWITCH_INTERVAL_S = 0.0005
"""The interpreter's thread switch interval in `serve`, s (Python's default: 0.005).

A thread woken by I/O (the VTP sender reading Comet's ack, the HTTP event loop)
waits up to this long for the GIL while another thread computes: since a trigger's
VOEvent is handed to the sender before the engine runs, the engine's work would
otherwise sit in front of the send.  ``python -m bench publish``, three alternated
pairs on 2026-12-07: trigger POST -> subscriber p50 12.3, 12.8, 11.6 ms against
13.2, 13.5, 13.5 ms with the default; burst p99 32-65 against 42-79 ms."""

SHUTDOWN_GRACE_S = 10
"""How long (s) `serve` lets open requests finish after SIGTERM or Ctrl-C."""


def _startup_hooks(settings: Settings, console: Console, *, demo: bool
                   ) -> list[Callable[[Any], None]]:
    """What `serve` runs once the app is up, in order: listeners (Comet first), the
    operations server, the demo's scenario if asked for, and last the heap's freeze."""
    from broker.web.app import start_ops

    hooks: list[Callable[[Any], None]] = [lambda app: _start_listeners(app, settings),
                                          lambda app: start_ops(app, settings)]
    if demo:
        hooks.append(lambda app: threading.Thread(
            target=_run_demo, args=(app, settings, console), name="demo", daemon=True).start())
    hooks.append(_freeze_startup_heap)
    return hooks


def _freeze_startup_heap(app: Any) -> None:
    """Exempt what `serve` built at startup from the cyclic garbage collector.

    The modules, the app, the engine's live window: objects that live as long as the
    process, which every full collection scanned again.  Such a collection stops
    whichever request allocated last: in one traced ``python -m bench publish`` run
    (2026-12-08, 1,400 triggers) the server's one full collection took 159 ms, and
    48 ms with the startup heap frozen.  Objects made later are collected as before;
    these are still freed by reference counting when dropped, and only cycles among
    them would stay.
    """
    gc.collect()
    gc.freeze()


def _start_listeners(app: Any, settings: Settings) -> None:
    from broker.runtime import assembly

    # Comet first: a listener subscribed to it must find it up (assembly.start_comet).
    comet = assembly.start_comet(settings)
    if comet is not None:
        app.state.comet = comet
        if comet.check() != "ok":  # why: logged by the supervisor, once
            typer.echo("warning: Comet is not up; retrying in the background (/ready says "
                       "why)", err=True)
    app.state.listeners = assembly.start_listeners(settings, app.state.archive,
                                                   sink=app.state.ingestor)
    assembly.start_delivery(settings, app.state.archive, app.state.ingestor,
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
    from broker.runtime.assembly import make_pipeline
    from broker.runtime.ingest import IngestReport, configure_normalizers

    settings = _settings(ctx)
    configure_normalizers(settings)
    archive = _archive(ctx)
    # Files hold past alerts: the engine runs on their event times, not the clock,
    # against what the archive holds (earlier runs' alerts and coincidences: a replay
    # engine reads its windows from the archive and recalls each event's coincidences),
    # and what they give rise to is archived, not sent to subscribers.
    ingestor = make_pipeline(settings, archive, replay=True, targets=[])
    size = batch_size or settings.ingest_batch_size
    report = IngestReport()
    path_of: dict[str, str] = {}
    with _progress() as progress:
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
    from broker.archive import migrate

    engine = _engine(ctx, create=True, need_archive=False)
    migrate.upgrade(engine, revision)
    typer.echo(f"archive at revision {migrate.current_revision(engine)}")
    engine.dispose()


@db_app.command("downgrade")
def db_downgrade(ctx: typer.Context,
                 revision: Annotated[str, typer.Argument(help="Target revision; 'base' "
                                                              "drops every table.")]) -> None:
    """Migrate the archive schema back to REVISION."""
    from broker.archive import migrate

    engine = _engine(ctx)
    migrate.downgrade(engine, revision)
    typer.echo(f"archive at revision {migrate.current_revision(engine)}")
    engine.dispose()


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the archive's schema revision and the newest one this version knows."""
    from broker.archive import migrate

    engine = _engine(ctx, need_archive=False)
    typer.echo(f"current: {migrate.current_revision(engine)}  head: {migrate.head_revision()}")
    engine.dispose()


# -- alerts -------------------------------------------------------------------

ALERT_COLUMNS = ["id", "trigger_time", "messenger", "facility", "alert_type", "role",
                 "ra_deg", "dec_deg", "far_hz"]
"""The CSV columns of `alerts list` (and the table's, in this order)."""

MESSENGER_SHORT = {"gravitational_wave": "GW", "gamma_ray": "gamma", "neutrino": "nu",
                   "x_ray": "X-ray", "optical": "optical", "radio": "radio"}


def _alert_table(wide: bool) -> list[Column]:
    short = (lambda m: m or "") if wide else (lambda m: MESSENGER_SHORT.get(m, m or ""))
    return [Column("id", "IVORN"),
            Column("trigger_time", "time (UTC)", fmt_time, drop=9, label=False),
            Column("messenger", "msgr" if not wide else "messenger", short, drop=8,
                   label=False),
            Column("facility", "facility", drop=5, label=False),
            Column("alert_type", "type", drop=2, label=False),
            Column("role", "role", drop=1, label=False),
            Column("ra_deg", "RA", fmt_deg, drop=4, justify="right"),
            Column("dec_deg", "Dec", fmt_deg, drop=3, justify="right"),
            Column("far_hz", "FAR", lambda v: f"{fmt_sig(v)} Hz" if v is not None else "", drop=7,
                   justify="right")]


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
    wide: WideOption = False,
) -> None:
    """List archived alerts, newest event first."""
    from broker.archive.store import AlertQuery

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
    _emit(rows, ALERT_COLUMNS if fmt is OutputFormat.csv else _alert_table(wide), fmt,
          documents=docs, title="alerts", wide=wide)


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

COINCIDENCE_STATES = ("new", "updated", "retracted")


def _smallest_far_hz(doc: dict[str, Any]) -> float | None:
    rates = [s["value"] for s in doc.get("significance", ()) if s.get("unit") == "Hz"]
    return min(rates) if rates else None


@coinc_app.command("list")
def coincidences_list(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(
        help="Reference (event) time from (ISO 8601, UTC).")] = None,
    until: Annotated[str | None, typer.Option(
        help="Reference (event) time to (ISO 8601, UTC).")] = None,
    pairing: Annotated[list[str] | None, typer.Option(
        help="Pairing name, e.g. gw_cbc-grb; repeat for several.")] = None,
    state: Annotated[list[str] | None, typer.Option(
        help="new, updated or retracted; repeat for several.")] = None,
    far_max: Annotated[float | None, typer.Option(
        min=0, help="Largest FAR, in Hz (the smallest of each coincidence's FARs).")] = None,
    limit: LimitOption = 50,
    fmt: FormatOption = OutputFormat.table,
    wide: WideOption = False,
) -> None:
    """List coincidences, newest first, with their members, overlap and significance."""
    for given in state or ():
        if given not in COINCIDENCE_STATES:
            _fail(f"--state {given!r}: one of {', '.join(COINCIDENCE_STATES)}")
    archive = _archive(ctx)
    docs = archive.list_coincidences(limit, since=_parse_time(since), until=_parse_time(until),
                                     pairing=pairing or (), state=state or (),
                                     far_max_hz=far_max)
    archive.close()
    rows = [{"id": d["id"], "reference_time": d.get("reference_time"),
             "pairing": d["pairing"], "state": d["state"], "far_hz": _smallest_far_hz(d),
             "members": " ".join(m["alert_id"] for m in d["members"]),
             "overlap": (d.get("spatial_overlap") or {}).get("integral"),
             "significance": "; ".join(f"{s['name']}={s['value']:.3g} {s['unit']}"
                                       for s in d["significance"])} for d in docs]
    columns = [Column("id", "IVORN"),
               Column("reference_time", "time (UTC)", fmt_time, drop=5, label=False),
               Column("pairing", "pairing", drop=4, label=False),
               Column("state", "state", drop=2, label=False),
               Column("far_hz", "FAR", lambda v: f"{fmt_sig(v)} Hz" if v is not None else "",
                      drop=3, justify="right"),
               Column("overlap", "overlap", fmt_sig, drop=1, justify="right"),
               Column("members", "members", wrap=True, wide_only=True),
               Column("significance", "significance", wrap=True, wide_only=True)]
    if fmt is OutputFormat.csv:
        columns = [Column(k) for k in ("id", "reference_time", "pairing", "state", "far_hz",
                                       "overlap", "members", "significance")]
    _emit(rows, columns, fmt, documents=docs, title="coincidences", wide=wide)


@coinc_app.command("show")
def coincidences_show(
    ctx: typer.Context,
    ivorn: Annotated[str, typer.Argument(help="The coincidence's IVORN (as `coincidences "
                                              "list` prints it).")],
    fmt: Annotated[OutputFormat, typer.Option(
        "--format", "-f", help="table: a summary for people; json: the whole document.")]
    = OutputFormat.table,
) -> None:
    """Show one coincidence revision: its members with their offsets, the sky overlap and
    each significance figure with its definition."""
    archive = _archive(ctx)
    doc = archive.get_coincidence(ivorn)
    archive.close()
    if doc is None:
        _fail(f"no coincidence {ivorn} (list them with `mmbroker coincidences list`)", code=1)
    if fmt is not OutputFormat.table:
        if fmt is OutputFormat.csv:
            _fail("coincidences show prints a table or JSON")
        typer.echo(json.dumps(doc, indent=2))
        return
    from rich.console import Console

    console = Console()
    loc = doc.get("localization") or {}
    overlap = doc.get("spatial_overlap") or {}
    console.print(f"[bold]{doc['id']}[/]", soft_wrap=True)
    facts = [("pairing", doc["pairing"]), ("state", f"{doc['state']} (revision "
                                                     f"{doc['revision']})"),
             ("time (UTC)", fmt_time(doc.get("reference_time"))),
             ("supersedes", doc.get("supersedes") or ""),
             ("position", f"RA {fmt_deg(loc['ra_deg'])}  Dec {fmt_deg(loc['dec_deg'])}"
                          + (f"  r90 {fmt_deg(loc['error_radius_deg'])} deg"
                             if loc.get("error_radius_deg") is not None else "")
              if loc.get("ra_deg") is not None else ""),
             ("overlap I", f"{fmt_sig(overlap['integral'])} ({overlap.get('method', '')})"
              if overlap.get("integral") is not None else ""),
             ("engine", f"{doc.get('engine_version', '')}, config "
                        f"{str(doc.get('config_hash', ''))[:12]}")]
    for label, value in facts:
        if value:
            console.print(f"  {label:<11} {value}", soft_wrap=True, highlight=False)
    _emit([{"alert_id": m["alert_id"], "offset": m.get("time_offset_s"),
            "messenger": m.get("messenger"), "facility": m.get("facility")}
           for m in doc["members"]],
          [Column("alert_id", "member IVORN"),
           Column("offset", "offset (s)", lambda v: "" if v is None else f"{v:+.3f}",
                  drop=3, justify="right"),
           Column("messenger", "msgr", lambda m: MESSENGER_SHORT.get(m, m or ""), drop=2),
           Column("facility", "facility", drop=1)], OutputFormat.table, title="members")
    for sig in doc.get("significance", ()):
        bound = " (upper bound)" if sig.get("is_bound") else ""
        console.print(f"[bold]{sig['name']}[/] = {fmt_sig(sig['value'])} {sig['unit']}{bound}",
                      soft_wrap=True, highlight=False)
        console.print(f"  {sig.get('definition', '')}", highlight=False)


@quarantine_app.command("list")
def quarantine_list(ctx: typer.Context, source: Annotated[str | None, typer.Option()] = None,
                    limit: LimitOption = 50, fmt: FormatOption = OutputFormat.table,
                    wide: WideOption = False) -> None:
    """List quarantined input, newest first, with the reason it was refused."""
    archive = _archive(ctx)
    rows = archive.list_quarantine(limit, source)
    archive.close()
    _emit(rows, ["id", "received_at", "source", "error_class", "reason"], fmt,
          title="quarantine", wide=wide)


# -- published VOEvents ---------------------------------------------------------

@voevents_app.command("list")
def voevents_list(ctx: typer.Context, limit: LimitOption = 50,
                  fmt: FormatOption = OutputFormat.table) -> None:
    """Published VOEvents, newest first, with each delivery target's state.

    "sent" means the target acknowledged it: for vtp, our own Comet broker (it
    broadcasts to the subscribers connected then); never a receipt from a
    subscriber. For kafka-*, the Kafka cluster (acks=all).
    """
    from broker.publish import outbox

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
    wide: WideOption = False,
) -> None:
    """Time-scramble archived alerts and compare, per pairing, the observed false-coincidence
    rate with the rate the configured backgrounds predict."""
    from broker.archive.store import AlertQuery
    from crossmatch.calibration import calibrate_alerts
    from crossmatch.config import load_config

    settings = _settings(ctx)
    config = load_config(settings.crossmatch_config)
    archive = _archive(ctx)
    selected = [p.name for p in config.pairings if not pairing or p.name in pairing]
    with _progress() as progress:
        reading = progress.add_task("reading the archive", total=None)
        docs = archive.list_alerts(AlertQuery(since=_parse_time(since),
                                              until=_parse_time(until), role="observation",
                                              limit=10_000_000))
        progress.update(reading, total=len(docs), description="parsing alerts")
        alerts = []
        for i, d in enumerate(docs, 1):
            alerts.append(Alert.model_validate(d))
            if i % 10_000 == 0:
                progress.update(reading, completed=i)
        progress.update(reading, completed=len(docs))
        gate = _spatial_gate(archive, config) if spatial else None
        task = progress.add_task("calibrating", total=len(selected))

        def step(name: str) -> None:
            done = selected.index(name) if name in selected else 0
            progress.update(task, completed=done, description=f"calibrating {name}")

        try:
            results = calibrate_alerts(config, alerts, n_scrambles=scrambles, seed=seed,
                                       pairings=pairing or None, spatial_gate=gate,
                                       progress=step)
        except KeyError as exc:
            _fail(str(exc.args[0]))
        except ValueError as exc:  # e.g. no observation alerts in the range
            _fail(str(exc), code=1)
        progress.update(task, completed=len(selected))
    archive.close()
    rows = [r.to_dict() for r in results]
    typer.echo(f"{len(alerts)} observation alerts; config {config.config_hash[:12]}", err=True)
    columns = [Column("pairing", "pairing"),
               Column("observed_count", "count", justify="right", drop=6),
               Column("observed_rate_hz", "observed (Hz)", fmt_sig, justify="right"),
               Column("predicted_rate_hz", "predicted (Hz)", fmt_sig, justify="right",
                      drop=7),
               Column("ratio", "ratio", fmt_sig, justify="right", drop=8),
               Column("relative_error", "rel. error", lambda v: fmt_sig(v, 2),
                      justify="right", drop=5),
               Column("spatial_gate", "sky gate", fmt_value, drop=4),
               Column("notes", "notes", lambda n: "; ".join(n) if isinstance(n, list | tuple)
                      else fmt_value(n), wrap=True, wide_only=True)]
    if fmt is OutputFormat.csv:
        columns = [Column(c.key) for c in columns]
    _emit(rows, columns, fmt, title="cross-match calibration (ratio = observed / predicted)",
          wide=wide)


def _progress() -> Any:
    """A progress display on stderr, only when stderr is a terminal (never in pipes or logs,
    never mixed into the output)."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(console=console, transient=True, disable=not sys.stderr.isatty())


def _spatial_gate(archive: Any, config: Any) -> Any:
    """The engine's own sky test (sky maps from the archive), for scrambled pairs."""
    from crossmatch.engine import Engine

    engine = Engine(config, authority="calibration.mmbroker", skymap_loader=archive.skymap)
    return lambda pairing, a, b: engine.sky_test(pairing, a, b)[0]


# -- listeners, stream health -------------------------------------------------

def _listen_until_signalled(running: Any) -> None:
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

    from broker.runtime import assembly
    from listeners.kafka import config_from_env

    settings = _settings(ctx, kafka_group_id=group_id)
    logs.configure(settings.log_level, settings.log_format)
    config = config_from_env()
    if bootstrap:
        config["bootstrap.servers"] = bootstrap
    if from_beginning:
        config.setdefault("auto.offset.reset", "earliest")
    archive = _archive(ctx)
    running = assembly.start_listeners(settings, archive, kafka_topics=topic,
                                       kafka_config=config, vtp_peers=[],
                                       since=_parse_time(since))
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

    from broker.runtime import assembly

    settings = _settings(ctx, vtp_peers=remote)
    logs.configure(settings.log_level, settings.log_format)
    archive = _archive(ctx)
    running = assembly.start_listeners(settings, archive, kafka_topics=[], vtp_peers=remote,
                                       filters=tuple(filter_ or ()))
    _listen_until_signalled(running)
    archive.close()


# -- stages ----------------------------------------------------------------------


def _stage_ops(settings: Settings, archive: Any, running: Any) -> None:
    if settings.ops_port:
        from broker.web.opsserver import ready_checks, serve_ops

        serve_ops(settings.ops_host, settings.ops_port,
                  lambda: ready_checks(archive, running), archive)


def _stage_settings(ctx: typer.Context) -> Settings:
    settings = _settings(ctx)
    logs.configure(settings.log_level, settings.log_format)
    if not settings.kafka_bootstrap:
        _fail("the stages are joined by Kafka: set MMBROKER_KAFKA_BOOTSTRAP")
    from broker.runtime.announce import bus_client_kwargs, ensure_topic

    bus = bus_client_kwargs()  # a bad property or secret file is no "cluster still starting"
    try:
        ensure_topic(settings.kafka_bootstrap, settings.kafka_alerts_topic,
                     settings.kafka_alerts_partitions, settings.kafka_replication_factor, bus)
    except Exception as exc:  # the cluster may still be starting: the stage retries
        typer.echo(f"warning: could not create {settings.kafka_alerts_topic}: {exc}",
                   err=True)
    return settings


@stage_app.command("listen")
def stage_listen(ctx: typer.Context) -> None:
    """Archive what the input streams send (MMBROKER_KAFKA_TOPICS, MMBROKER_VTP_PEERS) and
    announce each alert to the match stage."""
    from broker.runtime import assembly

    settings = _stage_settings(ctx)
    archive = _archive(ctx, create=True)
    sink = assembly.announcer(settings, archive)
    running = assembly.start_listeners(settings, archive, sink=sink)
    _stage_ops(settings, archive, running)
    _listen_until_signalled(running)
    sink.close()
    archive.close()


@stage_app.command("match")
def stage_match(ctx: typer.Context) -> None:
    """Cross-match announced alerts, store coincidences and queue their VOEvents."""
    from broker.runtime import assembly

    settings = _stage_settings(ctx)
    archive = _archive(ctx, create=True)
    running = assembly.start_match(settings, archive)
    _stage_ops(settings, archive, running)
    _listen_until_signalled(running)
    archive.close()


@stage_app.command("publish")
def stage_publish(ctx: typer.Context) -> None:
    """Deliver queued VOEvents to Comet (VTP) and the Kafka output topics."""
    from broker.runtime import assembly

    settings = _stage_settings(ctx)
    archive = _archive(ctx, create=True)
    running = assembly.Listeners()
    assembly.start_delivery(settings, archive, None, running)
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

    from broker.web.app import create_app, start_ops, stop_ops

    settings = _stage_settings(ctx)
    _engine(ctx, create=True, need_archive=False).dispose()
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
def streams(ctx: typer.Context, fmt: FormatOption = OutputFormat.table,
            wide: WideOption = False) -> None:
    """Health of every input stream: last message, counts, heartbeats (ages in seconds)."""
    from broker.archive.store import utcnow

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
                 "heartbeat_age_s", "status"], fmt, title="streams", wide=wide)


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
    from broker.web.tokens import create_token

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
def token_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table,
               wide: WideOption = False) -> None:
    """List tokens (never their secrets)."""
    from broker.web.tokens import list_tokens

    archive = _archive(ctx)
    rows = [{"id": t.id, "name": t.name, "scopes": " ".join(sorted(t.scopes)),
             "detectors": ", ".join(sorted(t.detectors)) if t.detectors is not None else None,
             "created_at": t.created_at.isoformat(),
             "expires_at": t.expires_at.isoformat() if t.expires_at else None,
             "revoked": t.revoked_at is not None} for t in list_tokens(archive)]
    archive.close()
    _emit(rows, ["id", "name", "scopes", "detectors", "created_at", "expires_at", "revoked"],
          fmt, title="tokens", wide=wide)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: Annotated[int, typer.Argument()]) -> None:
    """Revoke token TOKEN_ID."""
    from broker.web.tokens import revoke_token

    archive = _archive(ctx)
    ok = revoke_token(archive, token_id)
    archive.close()
    if not ok:
        _fail(f"no live token {token_id}", code=1)
    typer.echo(f"token {token_id} revoked")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="mmbroker")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
            if code == 2 and _misplaced_globals(args):  # "No such option: --db"
                typer.echo(f"hint: {', '.join(_misplaced_globals(args))} belongs to mmbroker "
                           f"itself, so it goes before the command: {_global_first(args)}",
                           err=True)
            return code
        typer.echo(str(exc.code), err=True)
        return 1
    return 0


def _split_globals(args: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(global options given before the command, those given after it, the rest)."""
    before: list[str] = []
    after: list[str] = []
    rest: list[str] = []
    i, seen_command = 0, False
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name, eq, _ = arg.partition("=")
        if name in GLOBAL_OPTIONS:
            width = 2 if name == "--db" and not eq else 1
            (after if seen_command else before).extend(args[i:i + width])
            i += width
            continue
        seen_command = seen_command or not arg.startswith("-")
        rest.append(arg)
        i += 1
    return before, after, rest


def _misplaced_globals(args: list[str]) -> list[str]:
    return [a.partition("=")[0] for a in _split_globals(args)[1]
            if a.partition("=")[0] in GLOBAL_OPTIONS]


def _global_first(args: list[str]) -> str:
    """``args`` with the global options (and their values) moved before the command."""
    before, after, rest = _split_globals(args)
    return shlex.join(["mmbroker", *before, *after, *rest])


if __name__ == "__main__":
    sys.exit(main())
