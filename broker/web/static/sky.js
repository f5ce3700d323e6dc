// The shifter's all-sky view: alerts, error circles, credible regions and coincidences
// on a Mollweide projection, drawn as inline SVG from /dashboard/sky (no CDN, no images).
// Right ascension increases to the LEFT, RA 0 in the middle and RA 180 at both edges,
// as on the broker's sky map PNGs.  The projection math is exported for the tests.
import { enc, utc } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const D2R = Math.PI / 180;
const SQRT2 = Math.SQRT2;
/** SVG units per projection unit: the map spans x in [-2√2, 2√2] * SCALE, y in [-√2, √2] * SCALE. */
export const SCALE = 100;

/** Messenger colours (the legend is made from this table), bright on the dark sky. */
export const MESSENGER_COLOURS = {
  gravitational_wave: "#4ea1ff", neutrino: "#2fbf71", gamma_ray: "#ff8c42", x_ray: "#f0b429",
  ultraviolet: "#b28cff", optical: "#f2f2f2", infrared: "#ff6f91", radio: "#5ee6e6",
  cosmic_ray: "#c9a66b", other: "#8c96a8",
};
const colour = (m) => MESSENGER_COLOURS[m] || MESSENGER_COLOURS.other;

// -- projection math ---------------------------------------------------------------------

/** Mollweide forward projection of longitude and latitude (radians): [x, y] with
 *  x in [-2√2, 2√2], y in [-√2, √2] (y up).  Newton's method on 2θ + sin 2θ = π sin φ. */
export function mollweide(lon, lat) {
  let theta = lat;
  if (Math.abs(Math.abs(lat) - Math.PI / 2) < 1e-12) {
    theta = lat;
  } else {
    const target = Math.PI * Math.sin(lat);
    let t = 2 * lat;  // solve for t = 2θ: t + sin t = π sin φ
    for (let i = 0; i < 50; i++) {
      const step = (t + Math.sin(t) - target) / (1 + Math.cos(t));
      t -= step;
      if (Math.abs(step) < 1e-12) break;
    }
    theta = t / 2;
  }
  return [(2 * SQRT2 / Math.PI) * lon * Math.cos(theta), SQRT2 * Math.sin(theta)];
}

/** Longitude of a right ascension (deg) on the map: in [-180, 180), RA 0 at 0. */
export const wrapLon = (ra) => ((((ra + 180) % 360) + 360) % 360) - 180;

/** SVG position [x, y] of (RA, Dec) in degrees: RA increasing to the left, north up. */
export function project(ra, dec) {
  const [x, y] = mollweide(-wrapLon(ra) * D2R, dec * D2R);
  return [x * SCALE, -y * SCALE];
}

/** Points [ra, dec] (deg) of the small circle of angular radius r (deg) around (ra, dec),
 *  n + 1 of them: the outline is closed (the last point is the first). */
export function smallCircle(ra, dec, r, n = 72) {
  const ra0 = ra * D2R, dec0 = dec * D2R, rr = r * D2R, out = [];
  for (let i = 0; i <= n; i++) {
    const b = (2 * Math.PI * (i % n)) / n;  // bearing from north, through east
    const sd = Math.sin(dec0) * Math.cos(rr) + Math.cos(dec0) * Math.sin(rr) * Math.cos(b);
    const d = Math.asin(Math.max(-1, Math.min(1, sd)));
    const a = ra0 + Math.atan2(Math.sin(b) * Math.sin(rr) * Math.cos(dec0),
      Math.cos(rr) - Math.sin(dec0) * Math.sin(d));
    out.push([(((a / D2R) % 360) + 360) % 360, d / D2R]);
  }
  return out;
}

/** A polyline of [ra, dec] (deg) as runs of SVG points, cut where it crosses RA 180 (the
 *  map's edge), each side ending on the edge at the interpolated declination. */
export function splitWrap(points) {
  const runs = [];
  let run = [];
  for (let i = 0; i < points.length; i++) {
    const [ra, dec] = points[i];
    if (i > 0) {
      const [pra, pdec] = points[i - 1];
      const a = wrapLon(pra), b = wrapLon(ra);
      if (Math.abs(b - a) > 180) {  // crossed the edge: the short way round is through 180
        const da = a > 0 ? 180 - a : -180 - a;           // to the edge on a's side
        const span = Math.abs(da) + (b > 0 ? 180 - b : b + 180);
        const t = span > 0 ? Math.abs(da) / span : 0;
        const edgeDec = pdec + t * (dec - pdec);
        run.push(project(a > 0 ? 179.999999 : 180.000001, edgeDec));
        if (run.length > 1) runs.push(run);
        run = [project(a > 0 ? 180.000001 : 179.999999, edgeDec)];
      }
    }
    run.push(project(ra, dec));
  }
  if (run.length > 1) runs.push(run);
  return runs;
}

// The north galactic pole and the galactic longitude of the north celestial pole (ICRS,
// deg; Hipparcos / astropy's Galactic frame).
const NGP_RA = 192.85948, NGP_DEC = 27.12825, L_NCP = 122.93192;

/** ICRS [ra, dec] (deg) of galactic (l, b) in degrees. */
export function galacticToIcrs(l, b) {
  const dp = NGP_DEC * D2R, lr = (L_NCP - l) * D2R, br = b * D2R;
  const sd = Math.sin(dp) * Math.sin(br) + Math.cos(dp) * Math.cos(br) * Math.cos(lr);
  const dec = Math.asin(Math.max(-1, Math.min(1, sd)));
  const y = Math.cos(br) * Math.sin(lr);
  const x = Math.cos(dp) * Math.sin(br) - Math.sin(dp) * Math.cos(br) * Math.cos(lr);
  const ra = NGP_RA + Math.atan2(y, x) / D2R;
  return [((ra % 360) + 360) % 360, dec / D2R];
}

/** The galactic plane (b = 0) as n + 1 ICRS points, closed. */
export const galacticPlane = (n = 180) =>
  Array.from({ length: n + 1 }, (_, i) => galacticToIcrs((360 * i) / n, 0));

// -- drawing -----------------------------------------------------------------------------

const node = (tag, attrs = {}, ...children) => {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) n.setAttribute(k, v);
  for (const c of children) if (c) n.append(c);
  return n;
};
const d = (runs) => runs.map((r) => "M" + r.map(([x, y]) => `${x.toFixed(2)},${y.toFixed(2)}`).join("L")).join("");
const title = (text) => { const t = node("title"); t.textContent = text; return t; };
const line = (points, cls) => node("path", { d: d(splitWrap(points)), class: cls });

function frame() {
  const W = 2 * SQRT2 * SCALE, H = SQRT2 * SCALE;
  const g = node("g", { class: "sky-frame" });
  g.append(node("ellipse", { cx: 0, cy: 0, rx: W, ry: H, class: "sky-bg" }));
  for (const dec of [-60, -30, 0, 30, 60]) {
    // A parallel runs from edge to edge: drawn in longitude, not through splitWrap.
    const run = Array.from({ length: 73 }, (_, i) => {
      const [x, y] = mollweide((180 - i * 5) * D2R, dec * D2R);
      return [x * SCALE, -y * SCALE];
    });
    g.append(node("path", { d: d([run]), class: dec === 0 ? "sky-grid equator" : "sky-grid" }));
    const [x, y] = project(179.9999, dec);
    if (dec !== 0) g.append(node("text", { x: x - 4, y: y + 3, class: "sky-label dec" }, document.createTextNode(`${dec > 0 ? "+" : ""}${dec}°`)));
  }
  for (const ra of [0, 30, 60, 90, 120, 150, 210, 240, 270, 300, 330]) {
    const pts = Array.from({ length: 37 }, (_, i) => [ra, -90 + i * 5]);
    g.append(line(pts, "sky-grid"));
  }
  for (const ra of [0, 60, 120, 240, 300]) {  // RA labels along the equator (hours and deg)
    const [x, y] = project(ra, 0);
    g.append(node("text", { x: x + 2, y: y - 3, class: "sky-label ra" }, document.createTextNode(`${ra / 15}h`)));
  }
  g.append(line(galacticPlane(), "sky-galactic"));
  const [gx, gy] = project(...galacticToIcrs(0, 0));
  g.append(node("text", { x: gx + 3, y: gy + 8, class: "sky-label gal" }, document.createTextNode("GC")));
  g.append(node("ellipse", { cx: 0, cy: 0, rx: W, ry: H, class: "sky-edge" }));
  return g;
}

/**
 * The live sky view in `root` (an element holding #sky-svg, #sky-hours, #sky-note).
 * `passes(alert or coincidence)` says what the page's filters keep.
 */
export class SkyView {
  constructor(root, { hours = 24, passes = () => true } = {}) {
    this.root = root;
    this.passes = passes;
    // Rows are keyed by IVORN: the feed and /dashboard/sky name rows by IVORN, never by
    // database id (gaps in ids would count the rows this viewer may not see).
    this.alerts = new Map();        // ivorn -> alert
    this.shapes = new Map();        // ivorn -> its SVG elements (see shapesOf())
    this.coincidences = new Map();  // ivorn -> coincidence
    this.svg = root.querySelector("#sky-svg");
    // Outlines under circles under dots under coincidences (the rings stay clickable).
    this.layers = ["sky-contours", "sky-circles", "sky-points", "sky-coincidences"].map((c) => node("g", { class: c }));
    this.svg.replaceChildren(frame(), node("g", { id: "sky-layer" }, ...this.layers));
    const legend = root.querySelector(".sky-legend");
    if (legend) {
      legend.prepend(...Object.entries(MESSENGER_COLOURS).map(([m, c]) => {
        const li = document.createElement("li"), sw = document.createElement("span");
        sw.className = "sw"; sw.style.background = c;
        li.dataset.messenger = m;
        li.append(sw, m.replace("_", " ").replace("x ray", "X-ray"));
        return li;
      }));
    }
    this.select = root.querySelector("#sky-hours");
    const saved = Number(localStorage.getItem("mmbroker.skyHours"));
    this.hours = saved > 0 ? saved : hours;
    if (![...this.select.options].some((o) => Number(o.value) === this.hours)) {
      this.select.append(new Option(`${this.hours} h`, String(this.hours)));
    }
    this.select.value = String(this.hours);
    this.select.addEventListener("change", () => {
      this.hours = Number(this.select.value);
      localStorage.setItem("mmbroker.skyHours", String(this.hours));
      this.reload();
    });
    this.timer = null; this.drawPending = false;
    setInterval(() => this.prune(), 60_000);
  }

  /** Everything again, from the archive (first load, a reset of the feed, a span change). */
  async reload() {
    return this.fetch();
  }

  /** The span from the archive (bounded by the server: MAX_SKY_ALERTS): what the feed
   *  does not carry (contours, members) comes with it, and rows released late too. */
  async fetch() {
    const params = new URLSearchParams({ hours: String(this.hours) });
    let body;
    try {
      const r = await fetch(`/dashboard/sky?${params}`, { credentials: "same-origin" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      body = await r.json();
    } catch (e) {
      this.note(`sky view: cannot load (${e.message}); retrying`);
      this.schedule(5000);
      return;
    }
    // The archive's answer is the span: rows the feed brought meanwhile are in it too.
    this.alerts.clear(); this.coincidences.clear();
    for (const a of body.alerts) this.putAlert(a);
    for (const c of body.coincidences) this.putCoincidence(c);
    this.note("");
    this.draw();
  }

  /** Fetch what arrived (contours, members) a moment after the feed announced it. */
  schedule(ms = 1000) {
    if (this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; this.fetch(); }, ms);
  }

  note(text) {
    const n = this.root.querySelector("#sky-note");
    if (n) n.textContent = text;
  }

  putAlert(a) {
    const old = this.alerts.get(a.ivorn);
    // Keep what only the sky endpoint has (the contour) when the feed's summary comes again.
    this.alerts.set(a.ivorn, old ? { ...old, ...a, contour90: a.contour90 ?? old.contour90 } : a);
  }

  putCoincidence(c) {
    const old = this.coincidences.get(c.ivorn);
    if (c.supersedes) this.coincidences.delete(c.supersedes);
    this.coincidences.set(c.ivorn, old ? { ...old, ...c, member_ivorns: c.member_ivorns ?? old.member_ivorns } : c);
  }

  /** Whether a time is of the span: the last `hours`, up to 10 min ahead (clock skew), as
   *  the server's FUTURE_SLACK_S. */
  inSpan(iso) {
    const t = Date.parse(iso), now = Date.now();
    return !iso || (t >= now - this.hours * 3600_000 && t <= now + 600_000);
  }

  /** A new alert from the live feed: drawn now, its contour fetched a moment later. */
  alert(a) {
    if (!this.inSpan(a.event_time)) return;
    this.putAlert({ contour90: null, ...a });
    this.draw();
    this.schedule();
  }

  /** A new coincidence from the live feed: drawn now, its members fetched a moment later. */
  coincidence(c) {
    this.putCoincidence(c);
    this.draw();
    this.schedule();
  }

  /** A coincidence acknowledged: its marker stops pulsing. */
  acked(ivorn, ack) {
    const c = this.coincidences.get(ivorn);
    if (c) { c.ack = ack; this.draw(); }
  }

  prune() {
    let changed = false;
    for (const [k, a] of this.alerts) if (!this.inSpan(a.event_time)) { this.alerts.delete(k); changed = true; }
    for (const [k, c] of this.coincidences) if (!this.inSpan(c.created_at)) { this.coincidences.delete(k); changed = true; }
    if (changed) this.draw();
  }

  draw() {
    if (this.drawPending) return;
    this.drawPending = true;
    // At most about five redraws a second, however fast the feed brings rows.
    setTimeout(() => requestAnimationFrame(() => { this.drawPending = false; this.render(); }), 150);
  }

  /** The SVG elements of an alert (outline or circle, dot), built again only when what
   *  they show changes: the feed may bring hundreds of alerts, and a redraw then only
   *  puts the kept elements back in order. */
  shapesOf(a, inCoinc) {
    const cls = [`m-${a.messenger}`, a.state === "retracted" ? "retracted" : "",
      inCoinc ? "in-coinc" : "", a.role !== "observation" ? "not-obs" : ""].join(" ");
    const key = [a.ra_deg, a.dec_deg, a.error_radius_deg, a.contour90 ? a.contour90.length : 0,
      a.area90_deg2, cls, a.ivorn].join("|");
    const had = this.shapes.get(a.ivorn);
    if (had && had.key === key) return had;
    const placed = a.ra_deg !== null && a.ra_deg !== undefined && a.dec_deg !== null && a.dec_deg !== undefined;
    const tip = `${a.event_id} (${a.messenger}, ${a.facility}) ${utc(a.event_time)} UTC` +
      (placed ? ` — RA ${a.ra_deg.toFixed(2)}°, Dec ${a.dec_deg.toFixed(2)}°` : "") +
      (a.error_radius_deg ? ` ± ${a.error_radius_deg.toPrecision(2)}°` : "") +
      (a.area90_deg2 ? `, 90% area ${Math.round(a.area90_deg2)} deg²` : "") +
      (a.role !== "observation" ? ` [${a.role.toUpperCase()}]` : "");
    const attrs = { "data-ivorn": a.ivorn, "data-messenger": a.messenger };
    const href = `/dashboard/alerts/${enc(a.ivorn)}`;
    const out = { key, contour: null, circle: null, dot: null };
    if (a.contour90 && a.contour90.length) {
      out.contour = node("a", { href }, node("path", { ...attrs, d: a.contour90.map((l) => d(splitWrap(l))).join(""),
        class: `sky-contour ${cls}`, stroke: colour(a.messenger), fill: "none" }, title(`${tip} — 90% credible region`)));
    } else if (placed && a.error_radius_deg) {
      out.circle = node("path", { ...attrs, d: d(splitWrap(smallCircle(a.ra_deg, a.dec_deg, Math.min(a.error_radius_deg, 90)))),
        class: `sky-circle ${cls}`, stroke: colour(a.messenger), fill: colour(a.messenger) }, title(tip));
    }
    if (placed) {
      const [x, y] = project(a.ra_deg, a.dec_deg);
      out.dot = node("a", { href }, node("circle", { ...attrs, cx: x.toFixed(2), cy: y.toFixed(2), r: 2.6,
        class: `sky-alert ${cls}`, fill: colour(a.messenger), "data-ra": a.ra_deg, "data-dec": a.dec_deg }, title(tip)));
    }
    this.shapes.set(a.ivorn, out);
    return out;
  }

  render() {
    for (const k of this.shapes.keys()) if (!this.alerts.has(k)) this.shapes.delete(k);
    const [contours, circles, points, coincs] = this.layers;
    // Newest revision of each event only: an update replaces its position.
    const newest = new Map();
    for (const a of this.alerts.values()) {
      const key = `${a.source}|${a.event_id}`;
      const had = newest.get(key);
      if (!had || a.revision > had.revision ||
          (a.revision === had.revision && Date.parse(a.received_at) > Date.parse(had.received_at))) newest.set(key, a);
    }
    const members = new Set();
    for (const c of this.coincidences.values()) if (this.passes(c)) (c.member_ivorns || []).forEach((i) => members.add(i));
    const drawn = { contours: [], circles: [], points: [] };
    let shown = 0;
    const byArrival = (x, y, at) => (Date.parse(x[at]) - Date.parse(y[at])) || (x.ivorn < y.ivorn ? -1 : 1);
    for (const a of [...newest.values()].sort((x, y) => byArrival(x, y, "received_at"))) {
      if (!this.passes(a)) continue;
      shown++;
      const sh = this.shapesOf(a, members.has(a.ivorn));
      if (sh.contour) drawn.contours.push(sh.contour);
      if (sh.circle) drawn.circles.push(sh.circle);
      if (sh.dot) drawn.points.push(sh.dot);
    }
    contours.replaceChildren(...drawn.contours);
    circles.replaceChildren(...drawn.circles);
    points.replaceChildren(...drawn.points);
    const marks = [];
    for (const c of [...this.coincidences.values()].sort((x, y) => byArrival(x, y, "created_at"))) {
      if (!this.passes(c)) continue;
      let { ra_deg: ra, dec_deg: dec } = c;
      if (ra === null || ra === undefined) {
        const m = (c.member_ivorns || []).map((i) => this.alerts.get(i)).find((a) => a && a.ra_deg !== null && a.ra_deg !== undefined);
        if (!m) continue;
        ra = m.ra_deg; dec = m.dec_deg;
      }
      const [x, y] = project(ra, dec);
      const cls = ["sky-coinc", c.significant ? "significant" : "", c.state === "retracted" ? "retracted" : "",
        c.ack ? "acked" : ""].join(" ");
      const tip = `Coincidence ${c.pairing} (${c.messengers.join(" + ")}), FAR ${c.far_hz === null ? "—" : Number(c.far_hz).toPrecision(3)} Hz, ` +
        `found ${utc(c.created_at)} UTC${c.role !== "observation" ? ` [${c.role.toUpperCase()}]` : ""} — open details`;
      const mark = node("g", { transform: `translate(${x.toFixed(2)},${y.toFixed(2)})` },
        node("circle", { r: 7, class: "ring" }), node("path", { d: "M-11,0H-4M4,0H11M0,-11V-4M0,4V11", class: "cross" }), title(tip));
      marks.push(node("a", { href: `/dashboard/coincidences/${enc(c.ivorn)}`, class: cls,
        "data-ivorn": c.ivorn, "data-x": x.toFixed(2), "data-y": y.toFixed(2),
        "aria-label": `coincidence ${c.pairing}` }, mark));
    }
    coincs.replaceChildren(...marks);
    this.svg.dataset.alerts = String(shown);
    this.svg.dataset.coincidences = String(marks.length);
    const count = this.root.querySelector("#sky-count");
    if (count) count.textContent = `${shown} alert${shown === 1 ? "" : "s"}, ${marks.length} coincidence${marks.length === 1 ? "" : "s"}`;
  }
}
