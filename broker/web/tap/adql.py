"""ADQL 2.0 to the archive's SQL, through a real SQL parser (sqlglot).

ADQL is SQL-92's SELECT with ``TOP`` and geometry functions.  sqlglot's T-SQL
grammar reads ``TOP``, double-quoted identifiers and ADQL's functions; the
syntax tree is then checked and rewritten, and sqlglot writes it out in the
backend's dialect (PostgreSQL or SQLite):

- only one SELECT (no other statement, no WITH, no SELECT INTO), made of
  node types on an allow list, calling only ADQL's functions;
- every table is one of the published tables (:mod:`broker.web.tap.schema`),
  replaced by its common table expression, which holds the caller's data
  rights; every column is one those tables publish (the hidden HEALPix
  column and the archive's own tables cannot be named);
- ``*`` becomes the published columns;
- ``CONTAINS(POINT(...), CIRCLE(...)) = 1`` (and ``POLYGON``, and ``= 0``)
  becomes the order-29 HEALPix index ranges covering the region (as the REST
  cone does, :func:`crossmatch.healpix.cone_ranges`) plus the exact test
  (haversine separation, or the sides of a convex spherical polygon);
  ``DISTANCE(POINT, POINT)`` the haversine separation in degrees;
- a bound on ``t_min`` from below or on ``t_max`` from above (``>=``, ``>``,
  ``=``, ``BETWEEN``, with a number, in the WHERE's top-level ANDs) is also
  written on the archive's time column, which is indexed with the HEALPix
  one, so a cone + time query reads only the index entries of the window
  (``t_min`` is never after the trigger time and ``t_max`` never before it,
  so the added bound only drops rows the query drops anyway).  On SQLite,
  where the planner would walk the time index however little sky a cone
  covers, the bound is written so that it is checked on the sky index
  instead when the sky ranges hold fewer rows than the window (estimated as
  the REST API does, :func:`broker.archive.query.alert_span`).

Anything else is refused with :class:`AdqlError` (an HTTP 400 for the caller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from alerts_schema.errors import RequestError
from broker.archive.query import coarsen
from broker.web.tap.schema import (
    BY_NAME,
    HPX_COLUMN,
    TIME_COLUMN,
    TIME_SCAN_COLUMN,
    TapColumn,
    TapTable,
)
from crossmatch.healpix import NPIX_29, cone_ranges


class AdqlError(RequestError):
    """An ADQL query this service will not run (syntax, unknown table or column, ...)."""


# Node types a query may contain: a SELECT's clauses, expressions and ADQL's functions.
_ALLOWED: tuple[type[exp.Expression], ...] = (
    exp.Select, exp.From, exp.Join, exp.Where, exp.Group, exp.Having, exp.Order, exp.Ordered,
    exp.Limit, exp.Offset, exp.Distinct, exp.Column, exp.Identifier, exp.Table,
    exp.TableAlias, exp.Alias, exp.Star, exp.Literal, exp.Null, exp.Boolean, exp.Neg,
    exp.Paren, exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE,
    exp.Is, exp.In, exp.Between, exp.Like, exp.ILike, exp.Add, exp.Sub, exp.Mul, exp.Div,
    exp.Mod, exp.DPipe, exp.Case, exp.If, exp.Cast, exp.DataType, exp.Subquery, exp.Exists,
    exp.Tuple, exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max, exp.Abs, exp.Sqrt, exp.Floor,
    exp.Ceil, exp.Round, exp.Ln, exp.Log, exp.Exp, exp.Pow, exp.Sin, exp.Cos, exp.Tan,
    exp.Asin, exp.Acos, exp.Atan, exp.Atan2, exp.Degrees, exp.Radians, exp.Pi, exp.Trunc,
    exp.Lower, exp.Upper, exp.Coalesce, exp.Contains, exp.Anonymous, exp.Cot,
)
# Functions sqlglot does not know, by name: ADQL's geometry (handled below).
_ANONYMOUS = {"POINT", "CIRCLE", "POLYGON", "DISTANCE"}
_NUMERIC_TYPES = {"DOUBLE", "FLOAT", "REAL", "INT", "BIGINT", "SMALLINT", "DECIMAL",
                  "VARCHAR", "CHAR", "TEXT", "NVARCHAR"}


@dataclass
class Translation:
    """An ADQL query made SQL for one backend.

    ``sql`` is one statement with the published tables it reads as common
    table expressions named ``tables[i].cte_name`` (the caller prepends them);
    ``columns`` gives each output column's published metadata where it is a
    plain column, else None; ``limit`` is the query's TOP, if any.
    """

    sql: str
    tables: list[TapTable]
    columns: list[tuple[str, TapColumn | None]]
    limit: int | None
    tree: exp.Select = field(repr=False)


def parse(adql: str) -> exp.Select:
    """The syntax tree of one ADQL SELECT; :class:`AdqlError` for anything else."""
    if not adql or not adql.strip():
        raise AdqlError("QUERY is empty")
    try:
        statements = [s for s in sqlglot.parse(adql, read="tsql") if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = (f" at line {first.get('line')}, column {first.get('col')}"
                 if first.get("line") else "")
        raise AdqlError(f"ADQL syntax error{where}: {first.get('description', exc)}") from None
    except sqlglot.errors.SqlglotError as exc:
        raise AdqlError(f"ADQL syntax error: {exc}") from None
    if len(statements) != 1:
        raise AdqlError("QUERY must be exactly one SELECT statement")
    tree = statements[0]
    if not isinstance(tree, exp.Select):
        raise AdqlError(f"only SELECT is supported, not {type(tree).__name__.upper()}")
    return tree


def _check_nodes(tree: exp.Expression) -> None:
    for node in tree.walk():
        if not isinstance(node, _ALLOWED):
            raise AdqlError(f"not supported in ADQL here: {node.sql(dialect='tsql')[:80]!r} "
                            f"({type(node).__name__})")
        if isinstance(node, exp.Anonymous) and node.name.upper() not in _ANONYMOUS:
            raise AdqlError(f"unknown function {node.name}")
        if isinstance(node, exp.Select) and node.args.get("into"):
            raise AdqlError("SELECT INTO is not supported")
        if isinstance(node, exp.Select) and (node.args.get("with_") or node.args.get("with")):
            raise AdqlError("WITH is not supported")
        if isinstance(node, exp.DataType) and node.this.name not in _NUMERIC_TYPES:
            raise AdqlError(f"CAST to {node.sql()} is not supported")
        if isinstance(node, exp.Table) and not isinstance(node.this, exp.Identifier):
            raise AdqlError("only tables may follow FROM (no table functions)")


def _table_of(node: exp.Table) -> TapTable:
    if node.catalog:
        raise AdqlError(f"unknown table {node.sql(dialect='tsql')}")
    name = f"{node.db}.{node.name}".lower() if node.db else node.name.lower()
    table = BY_NAME.get(name)
    if table is None and not node.db:
        matches = [t for t in BY_NAME.values() if t.name.lower() == name]
        table = matches[0] if len(matches) == 1 else None
    if table is None:
        raise AdqlError(f"unknown table {node.sql(dialect='tsql')}; see /tap/tables")
    return table


def _number(node: exp.Expression, what: str) -> float:
    """The value of a numeric literal (or its negation)."""
    sign = 1.0
    while isinstance(node, (exp.Neg, exp.Paren)):
        if isinstance(node, exp.Neg):
            sign = -sign
        node = node.this
    if isinstance(node, exp.Literal) and not node.is_string:
        value = sign * float(node.this)
        if math.isfinite(value):
            return value
    raise AdqlError(f"{what} must be a number")


def _frame(args: list[exp.Expression], what: str) -> list[exp.Expression]:
    """The arguments of a geometry after its optional coordinate system (ICRS only)."""
    if args and isinstance(args[0], exp.Literal) and args[0].is_string:
        system = args[0].this.strip().upper()
        if system and not system.startswith("ICRS"):
            raise AdqlError(f"{what}: only ICRS coordinates are supported, not {system!r}")
        return args[1:]
    return args


def _sql(node: exp.Expression) -> str:
    return f"({node.sql(dialect='tsql')})"


def _haversine_deg(ra1: str, dec1: str, ra2: str, dec2: str) -> str:
    """ADQL/T-SQL text of the great-circle separation in degrees (haversine, clamped)."""
    inner = (f"POWER(SIN(RADIANS({dec2} - {dec1}) / 2), 2) + COS(RADIANS({dec1})) * "
             f"COS(RADIANS({dec2})) * POWER(SIN(RADIANS({ra2} - {ra1}) / 2), 2)")
    return f"DEGREES(2 * ASIN(SQRT(CASE WHEN {inner} > 1 THEN 1 ELSE {inner} END)))"


def _point(node: exp.Expression) -> tuple[exp.Expression, exp.Expression]:
    if not (isinstance(node, exp.Anonymous) and node.name.upper() == "POINT"):
        raise AdqlError("the first argument of CONTAINS must be a POINT")
    args = _frame(list(node.expressions), "POINT")
    if len(args) != 2:
        raise AdqlError("POINT takes a coordinate system, a longitude and a latitude")
    return args[0], args[1]


def _unit_vector(ra_deg: float, dec_deg: float) -> np.ndarray:
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    return np.array([math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra),
                     math.sin(dec)])


@dataclass
class _Region:
    """A region of a CONTAINS: the exact test (ADQL text) and a covering cone, if any."""

    test: str
    cover: tuple[float, float, float] | None


def _circle(node: exp.Anonymous, ra: str, dec: str) -> _Region:
    args = _frame(list(node.expressions), "CIRCLE")
    if len(args) == 2 and isinstance(args[0], exp.Anonymous) \
            and args[0].name.upper() == "POINT":  # ADQL 2.1: CIRCLE(POINT, radius)
        centre = _point(args[0])
        args = [centre[0], centre[1], args[1]]
    if len(args) != 3:
        raise AdqlError("CIRCLE takes a coordinate system, a centre and a radius")
    test = f"{_haversine_deg(ra, dec, _sql(args[0]), _sql(args[1]))} <= {_sql(args[2])}"
    try:
        ra0, dec0, radius = (_number(a, "a CIRCLE's centre and radius") for a in args)
    except AdqlError:
        return _Region(test, None)  # a circle from columns (a join): no index cover
    if not -90 <= dec0 <= 90 or not 0 <= radius <= 180:
        raise AdqlError("CIRCLE: the centre's latitude must be in [-90, 90] deg and the "
                        "radius in [0, 180] deg")
    return _Region(test, (ra0 % 360.0, dec0, radius))


def _polygon(node: exp.Anonymous, ra: str, dec: str) -> _Region:
    args = _frame(list(node.expressions), "POLYGON")
    if len(args) < 6 or len(args) % 2:
        raise AdqlError("POLYGON takes a coordinate system and at least three vertices")
    values = [_number(a, "POLYGON vertices") for a in args]
    vertices = [_unit_vector(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    centre = np.sum(vertices, axis=0)
    if np.linalg.norm(centre) < 1e-12:
        raise AdqlError("POLYGON: degenerate polygon")
    centre /= np.linalg.norm(centre)
    normals = [np.cross(a, b) for a, b in zip(vertices, vertices[1:] + vertices[:1],
                                              strict=True)]
    # ADQL leaves the winding open: take the side that holds the vertices' mean.
    if sum(float(np.dot(n, centre)) for n in normals) < 0:
        normals = [-n for n in normals]
    for n in normals:
        if np.linalg.norm(n) < 1e-15:
            raise AdqlError("POLYGON: two consecutive vertices coincide")
        if any(float(np.dot(n, v)) < -1e-12 for v in vertices):
            raise AdqlError("POLYGON: only convex polygons are supported")
    x = f"(COS(RADIANS({dec})) * COS(RADIANS({ra})))"
    y = f"(COS(RADIANS({dec})) * SIN(RADIANS({ra})))"
    z = f"SIN(RADIANS({dec}))"
    test = " AND ".join(
        f"({float(n[0])!r} * {x} + {float(n[1])!r} * {y} + {float(n[2])!r} * {z} >= 0)"
        for n in normals)
    c_ra = math.degrees(math.atan2(centre[1], centre[0])) % 360.0
    c_dec = math.degrees(math.asin(max(-1.0, min(1.0, float(centre[2])))))
    radius = max(math.degrees(math.acos(max(-1.0, min(1.0, float(np.dot(centre, v))))))
                 for v in vertices)
    return _Region(test, (c_ra, c_dec, min(180.0, radius * 1.000001 + 1e-9)))


MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
_TIME_MARGIN = timedelta(milliseconds=1)  # far above the rounding of t_min's arithmetic


def _mjd_time(days: float) -> datetime | None:
    """The UTC time of an MJD (days of 86400 s), or None outside datetime's years."""
    try:
        return MJD_EPOCH + timedelta(days=days)
    except OverflowError:
        return None


def _time_literal(when: datetime) -> exp.Literal:
    """A whole-second time as the archive compares it ('YYYY-MM-DD HH:MM:SS', UTC, as
    SQLite stores it and PostgreSQL reads it): a stored time with a fraction sorts after
    its second either way."""
    return exp.Literal.string(when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"))


_FLIPPED: dict[type[exp.Expr], type[exp.Expr]] = {
    exp.GTE: exp.LTE, exp.GT: exp.LT, exp.LTE: exp.GTE, exp.LT: exp.GT, exp.EQ: exp.EQ}


class _Translator:
    def __init__(self, tree: exp.Select) -> None:
        self.tree = tree
        self.tables: list[TapTable] = []
        # alias (lower case) -> table, over the whole query (subqueries included).
        self.aliases: dict[str, TapTable] = {}
        # alias -> the smallest sky fraction a CONTAINS(...) = 1 on it reads from the index.
        self.covered: dict[str, float] = {}

    def tables_of(self, select: exp.Select) -> list[tuple[str, TapTable]]:
        found = []
        for source in [select.args.get("from_") or select.args.get("from"),
                       *(select.args.get("joins") or [])]:
            if source is None:
                continue
            table_node = source.this
            if isinstance(table_node, exp.Table):
                alias = table_node.alias_or_name.lower()
                found.append((alias, self.aliases[alias]))
        return found

    def rewrite_tables(self) -> None:
        for node in list(self.tree.find_all(exp.Table)):
            table = _table_of(node)
            alias = (node.alias or table.name).lower()
            if alias in self.aliases and self.aliases[alias] is not table:
                raise AdqlError(f"the name {alias} is given to two tables: use distinct "
                                "aliases")
            self.aliases[alias] = table
            if table not in self.tables:
                self.tables.append(table)
            node.replace(exp.Table(this=exp.to_identifier(table.cte_name),
                                   alias=exp.TableAlias(this=exp.to_identifier(alias))))

    def expand_stars(self) -> None:
        for select in list(self.tree.find_all(exp.Select)):
            expanded: list[exp.Expression] = []
            for item in select.expressions:
                qualifier = item.table.lower() if isinstance(item, exp.Column) else None
                if isinstance(item, exp.Star) or (isinstance(item, exp.Column)
                                                  and isinstance(item.this, exp.Star)):
                    sources = self.tables_of(select)
                    if qualifier:
                        sources = [(a, t) for a, t in sources if a == qualifier]
                        if not sources:
                            raise AdqlError(f"unknown table {qualifier} in {qualifier}.*")
                    if not sources:
                        raise AdqlError("* needs a table in FROM")
                    expanded.extend(exp.column(c.name, table=alias)
                                    for alias, table in sources for c in table.columns)
                else:
                    expanded.append(item)
            select.set("expressions", expanded)

    def check_columns(self) -> None:
        published = {c.name for t in self.tables for c in t.columns}
        output_names = {e.alias.lower() for s in self.tree.find_all(exp.Select)
                        for e in s.expressions if isinstance(e, exp.Alias)}
        for column in self.tree.find_all(exp.Column):
            if isinstance(column.this, exp.Star):
                continue
            name = column.name.lower()
            column.set("this", exp.to_identifier(name))
            if column.args.get("db") or column.args.get("catalog"):
                # ivoa.obscore.s_ra: the alias of a table is its bare name.
                column.set("db", None)
                column.set("catalog", None)
            qualifier = column.table.lower()
            if qualifier:
                column.set("table", exp.to_identifier(qualifier))
                table = self.aliases.get(qualifier)
                if table is None:
                    subquery_names = {s.alias.lower() for s in self.tree.find_all(exp.Subquery)
                                      if s.alias}
                    if qualifier in subquery_names:
                        continue  # a derived table's column: its own select list was checked
                    raise AdqlError(f"unknown table {qualifier} in {qualifier}.{name}")
                if table.column(name) is None:
                    raise AdqlError(f"{table.qualified} has no column {name}")
            elif name not in published and name not in output_names:
                raise AdqlError(f"unknown column {name}")

    def rewrite_geometry(self) -> None:
        for node in list(self.tree.find_all(exp.Anonymous)):
            if node.name.upper() == "DISTANCE":
                args = list(node.expressions)
                if len(args) == 2:
                    (ra1, dec1), (ra2, dec2) = _point(args[0]), _point(args[1])
                elif len(args) == 4:
                    ra1, dec1, ra2, dec2 = args
                else:
                    raise AdqlError("DISTANCE takes two POINTs")
                node.replace(self._parse(_haversine_deg(_sql(ra1), _sql(dec1), _sql(ra2),
                                                        _sql(dec2))))
        for contains in list(self.tree.find_all(exp.Contains)):
            parent = contains.parent
            other = None
            if isinstance(parent, (exp.EQ, exp.NEQ)):
                other = parent.expression if parent.this is contains else parent.this
            if parent is None or other is None:
                raise AdqlError("CONTAINS must be compared with 1 or 0: CONTAINS(...) = 1")
            wanted = _number(other, "CONTAINS(...) must be compared with 1 or 0")
            if wanted not in (0.0, 1.0):
                raise AdqlError("CONTAINS(...) must be compared with 1 or 0")
            inside = (wanted == 1.0) == isinstance(parent, exp.EQ)
            condition = self._contains(contains)
            parent.replace(exp.Paren(this=condition) if inside
                           else exp.Not(this=exp.Paren(this=condition)))
        for node in self.tree.find_all(exp.Anonymous):
            raise AdqlError(f"{node.name.upper()} is only supported inside CONTAINS(...) = 1 "
                            "or DISTANCE(...)")

    def _contains(self, node: exp.Contains) -> exp.Expr:
        ra_node, dec_node = _point(node.this)
        region = node.expression
        if not isinstance(region, exp.Anonymous) or region.name.upper() not in ("CIRCLE",
                                                                               "POLYGON"):
            raise AdqlError("the second argument of CONTAINS must be a CIRCLE or a POLYGON")
        ra, dec = _sql(ra_node), _sql(dec_node)
        shape = (_circle(region, ra, dec) if region.name.upper() == "CIRCLE"
                 else _polygon(region, ra, dec))
        test = f"(NOT {ra} IS NULL AND NOT {dec} IS NULL AND {shape.test})"
        hpx = self._hpx_column(ra_node, dec_node)
        if hpx is not None and shape.cover is not None:
            ranges = coarsen(cone_ranges(*shape.cover))
            within = " OR ".join(f"{hpx} BETWEEN {lo} AND {hi}" for lo, hi in ranges)
            test = f"({within}) AND {test}"
            alias = hpx.split(".", 1)[0]
            fraction = sum(hi - lo + 1 for lo, hi in ranges) / NPIX_29
            self.covered[alias] = min(self.covered.get(alias, 1.0), fraction)
        return self._parse(test)

    def _hpx_column(self, ra: exp.Expression, dec: exp.Expression) -> str | None:
        """The hidden HEALPix column indexing (``ra``, ``dec``) when both are the
        position columns of one published table."""
        if not (isinstance(ra, exp.Column) and isinstance(dec, exp.Column)):
            return None
        candidates = [(a, t) for a, t in self.aliases.items() if t.position
                      and t.position == (ra.name.lower(), dec.name.lower())
                      and (not ra.table or ra.table.lower() == a)
                      and ra.table.lower() == dec.table.lower()]
        if len(candidates) != 1:
            return None
        alias = candidates[0][0]
        return f"{alias}.{HPX_COLUMN}"

    @staticmethod
    def _parse(text: str) -> exp.Expr:
        return sqlglot.parse_one(text, read="tsql")

    def add_time_bounds(self, span: tuple[int, datetime, datetime] | None) -> None:
        """Write each SELECT's bounds on ``t_min`` (from below) and ``t_max`` (from above)
        on the hidden time column too (see the module's docstring)."""
        for select in list(self.tree.find_all(exp.Select)):
            where = select.args.get("where")
            if where is None:
                continue
            sources = dict(self.tables_of(select))
            lows: dict[str, datetime] = {}
            highs: dict[str, datetime] = {}
            terms = where.this.flatten() if isinstance(where.this, exp.And) else [where.this]
            for term in terms:
                for alias, when, side in self._time_terms(term, sources):
                    if side == "lower":
                        lows[alias] = max(lows.get(alias, when), when)
                    else:
                        highs[alias] = min(highs.get(alias, when), when)
            for alias in {**lows, **highs}:
                lo, hi = lows.get(alias), highs.get(alias)
                column = TIME_SCAN_COLUMN if self._sky_first(alias, lo, hi, span) \
                    else TIME_COLUMN
                for value, node in ((lo, exp.GTE), (hi, exp.LTE)):
                    if value is not None:
                        select.where(node(this=exp.column(column, table=alias),
                                          expression=_time_literal(value)), copy=False)

    def _time_terms(self, term: exp.Expr, sources: dict[str, TapTable]
                    ) -> list[tuple[str, datetime, str]]:
        """(alias, time, "lower" or "upper"): the bounds on the time column ``term``
        implies."""
        found: list[tuple[Any, type[exp.Expr], Any]]
        if isinstance(term, exp.Between):
            found = [(term.this, exp.GTE, term.args.get("low")),
                     (term.this, exp.LTE, term.args.get("high"))]
        elif type(term) in _FLIPPED:
            found = [(term.this, type(term), term.expression),
                     (term.expression, _FLIPPED[type(term)], term.this)]
        else:
            return []
        out: list[tuple[str, datetime, str]] = []
        for column, op, value in found:
            if not isinstance(column, exp.Column) or value is None:
                continue
            resolved = self._resolve(column, sources)
            if resolved is None:
                continue
            alias, kind = resolved
            try:
                when = _mjd_time(_number(value, "a time bound"))
            except AdqlError:
                continue
            if when is None:
                continue
            if kind == "lower" and op in (exp.GTE, exp.GT, exp.EQ):
                out.append((alias, (when - _TIME_MARGIN).replace(microsecond=0), kind))
            elif kind == "upper" and op in (exp.LTE, exp.LT, exp.EQ):
                out.append((alias, (when + _TIME_MARGIN).replace(microsecond=0)
                            + timedelta(seconds=1), kind))
        return out

    @staticmethod
    def _resolve(column: exp.Column, sources: dict[str, TapTable]) -> tuple[str, str] | None:
        """(alias, "lower" or "upper") when ``column`` is a time-bounding column of one of
        this SELECT's own tables."""
        name = column.name.lower()
        if column.table:
            candidates = [column.table.lower()] if column.table.lower() in sources else []
        else:
            candidates = [a for a, t in sources.items() if t.column(name) is not None]
        if len(candidates) != 1:
            return None
        kind = dict(sources[candidates[0]].time_bounds).get(name)
        return (candidates[0], kind) if kind else None

    def _sky_first(self, alias: str, lo: datetime | None, hi: datetime | None,
                   span: tuple[int, datetime, datetime] | None) -> bool:
        """Whether the sky ranges of ``alias`` hold fewer rows than its time window (only
        ever on SQLite, whose ``span`` is given)."""
        if span is None or alias not in self.covered:
            return False
        _, first, last = span
        start, end = max(first, lo) if lo else first, min(last, hi) if hi else last
        window = max((end - start).total_seconds(), 0.0) / max(
            (last - first).total_seconds(), 1.0)
        return self.covered[alias] < window


def translate(adql: str, dialect: str, fetch: int | None = None,
              span: tuple[int, datetime, datetime] | None = None) -> Translation:
    """Check ``adql`` and write it as SQL for ``dialect`` (``postgresql`` or ``sqlite``),
    reading at most ``fetch`` rows when given (and never more than its TOP).  ``span``
    (SQLite: the alerts' count, first and last time) steers the plan of cone + time
    queries."""
    tree = parse(adql)
    _check_nodes(tree)
    t = _Translator(tree)
    t.rewrite_tables()
    if not t.tables:
        raise AdqlError("the query reads no table (FROM is required)")
    t.expand_stars()
    t.check_columns()
    t.rewrite_geometry()
    t.add_time_bounds(span if dialect == "sqlite" else None)
    limit_node = tree.args.get("limit")
    limit = int(_number(limit_node.expression, "TOP")) if limit_node is not None else None
    if fetch is not None:
        rows = min(fetch, limit) if limit is not None else fetch
        tree.set("limit", exp.Limit(expression=exp.Literal.number(rows)))
    columns: list[tuple[str, TapColumn | None]] = []
    for item in tree.expressions:
        target = item.this if isinstance(item, exp.Alias) else item
        meta = None
        if isinstance(target, exp.Column):
            table = (t.aliases.get(target.table.lower()) if target.table
                     else next((x for x in t.tables if x.column(target.name)), None))
            meta = table.column(target.name) if table else None
        columns.append((item.alias_or_name or "", meta))
    out = "postgres" if dialect.startswith("postgres") else "sqlite"
    return Translation(tree.sql(dialect=out), t.tables, columns, limit, tree)

