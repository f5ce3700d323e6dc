// mmbroker live dashboard: first rows from /dashboard/state, then server-sent events.
// No framework and no external assets: the page must work on a control-room network.
import { ackCoincidence, enc, utc } from "./common.js";
import { SkyView } from "./sky.js";

const MAX_ROWS = 500;
const config = JSON.parse(document.getElementById("config").textContent);
const state = { alerts: [], coincidences: [], alarms: new Map(), health: [], seen: {} };

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
};
const num = (v, digits = 3) => (v === null || v === undefined ? "" : Number(v).toPrecision(digits));
const pos = (a) => (a.ra_deg === null || a.ra_deg === undefined ? "—"
  : `${a.ra_deg.toFixed(2)}, ${a.dec_deg.toFixed(2)}` +
    (a.error_radius_deg ? ` ± ${num(a.error_radius_deg, 2)}` : ""));
const age = (s) => (s === null || s === undefined ? "never"
  : s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`);

// -- filters -------------------------------------------------------------------------------

const filters = { stream: $("#f-stream"), messenger: $("#f-messenger"), role: $("#f-role") };
function remember(kind, value) {
  if (!value) return;
  state.seen[kind] = state.seen[kind] || new Set();
  if (state.seen[kind].has(value)) return;
  state.seen[kind].add(value);
  const select = filters[kind];
  const options = [...state.seen[kind]].sort();
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "all"),
    ...options.map((o) => el("option", { value: o }, o)));
  select.value = chosen;
}
// The stream filter is for alerts: a coincidence has members from several streams.
const passes = (a) => (!filters.stream.value || a.source === undefined || a.source === filters.stream.value) &&
  (!filters.messenger.value || a.messenger === filters.messenger.value ||
    (a.messengers || []).includes(filters.messenger.value)) &&
  (!filters.role.value || a.role === filters.role.value);
for (const select of Object.values(filters)) select.addEventListener("change", () => { renderAll(); sky.draw(); });
const sky = new SkyView($("#sky"), { hours: config.sky_hours, passes });

// -- tables --------------------------------------------------------------------------------

function alertRow(a, fresh) {
  const tr = el("tr", { class: [a.role !== "observation" ? "test" : "", fresh ? "fresh" : ""].join(" "),
    "data-ivorn": a.ivorn, "data-role": a.role });
  const name = el("a", { href: `/dashboard/alerts/${enc(a.ivorn)}` }, a.event_id);
  tr.append(el("td", {}, utc(a.received_at)), el("td", {}, utc(a.event_time)),
    el("td", {}, a.messenger),
    el("td", {}, `${a.facility} / ${a.source}`),
    el("td", {}, name, a.role !== "observation" ? el("span", { class: `role role-${a.role}` }, a.role.toUpperCase()) : null),
    el("td", {}, pos(a)), el("td", {}, num(a.far_hz)),
    el("td", { class: `state-${a.state}` }, a.state));
  return tr;
}

function coincidenceRow(c, fresh) {
  const cls = [c.role !== "observation" ? "test" : "", c.significant ? "significant" : "", fresh ? "fresh" : ""];
  const tr = el("tr", { class: cls.join(" "), "data-ivorn": c.ivorn });
  const ack = c.ack ? `${c.ack.acked_by} ${utc(c.ack.acked_at).slice(11)}` : (c.significant ? "WAITING" : "");
  tr.append(el("td", {}, utc(c.created_at)),
    el("td", {}, el("a", { href: `/dashboard/coincidences/${enc(c.ivorn)}` }, c.pairing),
      c.role !== "observation" ? el("span", { class: `role role-${c.role}` }, c.role.toUpperCase()) : null),
    el("td", {}, c.messengers.join(" + ")), el("td", {}, pos(c)),
    el("td", {}, num(c.far_hz)), el("td", { class: `state-${c.state}` }, c.state),
    el("td", { class: "ack" }, ack));
  return tr;
}

function renderAll() {
  $("#alerts tbody").replaceChildren(...state.alerts.filter(passes).map((a) => alertRow(a, false)));
  $("#coincidences tbody").replaceChildren(...state.coincidences.filter(passes).map((c) => coincidenceRow(c, false)));
}

function addAlert(a) {
  if (state.alerts.some((x) => x.ivorn === a.ivorn)) return;  // already in the first rows
  remember("stream", a.source); remember("messenger", a.messenger); remember("role", a.role);
  state.alerts.unshift(a);
  state.alerts.length = Math.min(state.alerts.length, MAX_ROWS);
  sky.alert(a);
  if (!passes(a)) return;
  const body = $("#alerts tbody");
  body.prepend(alertRow(a, true));
  while (body.children.length > MAX_ROWS) body.lastChild.remove();
}

function addCoincidence(c) {
  if (state.coincidences.some((x) => x.ivorn === c.ivorn)) return;
  if (c.supersedes !== null && state.alarms.delete(c.supersedes)) showAlarm();
  c.messengers.forEach((m) => remember("messenger", m)); remember("role", c.role);
  state.coincidences.unshift(c);
  state.coincidences.length = Math.min(state.coincidences.length, MAX_ROWS);
  sky.coincidence(c);
  if (passes(c)) $("#coincidences tbody").prepend(coincidenceRow(c, true));
  if (c.significant && !c.ack) raise(c);
}

let healthSeen = 0;
function renderHealth(streams) {
  healthSeen = Date.now();
  $("#health").classList.remove("frozen");
  $("#health-note").textContent = "";
  state.health = streams;
  $("#health tbody").replaceChildren(...streams.map((h) => {
    const label = h.detector ? h.detector : h.stream;
    const tr = el("tr", { class: `h-${h.state}${h.detector ? " detector" : ""}`,
      "data-stream": h.stream, "data-detector": h.detector, "data-state": h.state });
    tr.append(el("td", { title: `stale after ${h.stale_after_s} s` }, label),
      el("td", { class: "state" }, h.state === "disconnected" && h.connection_age_s !== null
        ? `disconnected (${age(h.connection_age_s).replace(" ago", "")})` : h.state),
      el("td", {}, age(h.last_message_age_s)),
      el("td", {}, h.heartbeat_age_s === null ? "—" : `${age(h.heartbeat_age_s)}${h.heartbeat_status ? " " + h.heartbeat_status : ""}`),
      el("td", {}, h.detector ? "" : (h.messages_per_min ?? "")),
      el("td", {}, h.detector ? "" : h.quarantined_total));
    return tr;
  }));
}

// -- latency histograms ----------------------------------------------------------------------

function renderLatency(dist) {
  const figures = Object.entries(dist.intervals).map(([name, d]) => {
    const w = 240, h = 70, bars = d.counts.length, most = Math.max(1, ...d.counts);
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h + 14}`); svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `${name} histogram`);
    d.counts.forEach((n, i) => {
      const r = document.createElementNS(svg.namespaceURI, "rect");
      const bh = (n / most) * h;
      r.setAttribute("x", (i * w) / bars + 1); r.setAttribute("width", w / bars - 2);
      r.setAttribute("y", h - bh); r.setAttribute("height", bh);
      const t = document.createElementNS(svg.namespaceURI, "title");
      t.textContent = `${n} alerts in [${num(dist.bin_edges_s[i], 2)}, ${num(dist.bin_edges_s[i + 1], 2)}) s`;
      r.append(t); svg.append(r);
    });
    for (const [i, label] of [[1, "10 ms"], [5, "1 s"], [9, "100 s"], [13, "3 h"]]) {
      const t = document.createElementNS(svg.namespaceURI, "text");
      t.setAttribute("x", (i * w) / bars); t.setAttribute("y", h + 12); t.textContent = label;
      svg.append(t);
    }
    const q = d.count ? `p50 ${num(d.p50)} s · p90 ${num(d.p90)} s · n=${d.count}` : "no data yet";
    return el("figure", {}, svg, el("figcaption", {}, `${name}: ${q}`));
  });
  $("#latency").replaceChildren(...figures);
}

async function refreshLatency() {
  try {
    const r = await fetch("/dashboard/latency", { credentials: "same-origin" });
    if (r.ok) renderLatency(await r.json());
  } catch (e) { /* the feed's status already shows a lost connection */ }
}

// The server renews health every second: silence means the feed or its poller is stuck.
setInterval(() => {
  if (healthSeen && Date.now() - healthSeen > 5000) {
    $("#health").classList.add("frozen");
    $("#health-note").textContent = `no health update for ${Math.round((Date.now() - healthSeen) / 1000)} s: figures may be stale`;
  }
}, 1000);

// -- the alarm: banner, sound, title ---------------------------------------------------------

const sound = { muted: localStorage.getItem("mmbroker.muted") === "1", ctx: null };
const baseTitle = document.title;
let blink = null, beeper = null;

function setMute(muted) {
  sound.muted = muted;
  localStorage.setItem("mmbroker.muted", muted ? "1" : "0");
  const locked = !muted && (!sound.ctx || sound.ctx.state !== "running");
  $("#mute").textContent = muted ? "Sound: muted" : locked ? "Sound: click to enable" : "Sound: on";
  $("#mute").classList.toggle("locked", locked);
  $("#mute").setAttribute("aria-pressed", String(muted));
}
function beep() {
  if (sound.muted || !sound.ctx || sound.ctx.state !== "running") return;
  const t = sound.ctx.currentTime;
  for (const [start, freq] of [[0, 880], [0.25, 660], [0.5, 880]]) {
    const osc = sound.ctx.createOscillator(), gain = sound.ctx.createGain();
    osc.frequency.value = freq; gain.gain.value = 0.2;
    osc.connect(gain).connect(sound.ctx.destination);
    osc.start(t + start); osc.stop(t + start + 0.2);
  }
}
// Browsers allow sound only after a user gesture: the first key or click unlocks it.
function unlockSound() {
  if (!window.AudioContext) return;
  sound.ctx = sound.ctx || new AudioContext();
  sound.ctx.resume().then(() => setMute(sound.muted)).catch(() => {});
}
document.addEventListener("click", unlockSound, { once: true });
document.addEventListener("keydown", unlockSound, { once: true });

function raise(c) {
  state.alarms.set(c.ivorn, c);
  showAlarm();
}
function showAlarm() {
  const banner = $("#alarm");
  if (state.alarms.size === 0) {
    banner.hidden = true;
    clearInterval(blink); clearInterval(beeper); blink = beeper = null;
    document.title = baseTitle;
    return;
  }
  // Rows are named by IVORN (no database ids: their gaps would count hidden rows).
  const newest = [...state.alarms.values()].sort((a, b) =>
    b.created_at.localeCompare(a.created_at) || b.ivorn.localeCompare(a.ivorn))[0];
  $("#alarm-detail").textContent = `${newest.pairing} (${newest.messengers.join(" + ")}), FAR ` +
    `${num(newest.far_hz)} Hz, found ${utc(newest.created_at)} UTC` +
    (newest.role !== "observation" ? ` [${newest.role.toUpperCase()}]` : "") +
    (state.alarms.size > 1 ? ` — and ${state.alarms.size - 1} more` : "");
  $("#alarm-link").href = `/dashboard/coincidences/${enc(newest.ivorn)}`;
  banner.dataset.ivorn = newest.ivorn;
  banner.hidden = false;
  if (!blink) {
    let on = false;
    blink = setInterval(() => {
      on = !on;
      document.title = on ? `⚠ SIGNIFICANT COINCIDENCE (${state.alarms.size})` : baseTitle;
    }, 1000);
    document.title = `⚠ SIGNIFICANT COINCIDENCE (${state.alarms.size})`;
    beep();
    beeper = setInterval(beep, 3000);
  }
}
function cleared(ack) {
  state.alarms.delete(ack.coincidence);
  const c = state.coincidences.find((x) => x.ivorn === ack.coincidence);
  if (c) c.ack = { acked_by: ack.acked_by, acked_at: ack.acked_at };
  sky.acked(ack.coincidence, { acked_by: ack.acked_by, acked_at: ack.acked_at });
  const cell = document.querySelector(`#coincidences tr[data-ivorn="${CSS.escape(ack.coincidence)}"] .ack`);
  if (cell) cell.textContent = `${ack.acked_by} ${utc(ack.acked_at).slice(11)}`;
  showAlarm();
}
async function acknowledge() {
  const banner = $("#alarm");
  if (banner.hidden || !config.can_ack) return;
  const button = $("#ack-button");
  button.disabled = true;
  try {
    const ack = await ackCoincidence(banner.dataset.ivorn);
    cleared({ coincidence: banner.dataset.ivorn, acked_by: ack.acked_by, acked_at: ack.acked_at });
  } catch (e) {
    $("#alarm-detail").textContent += ` — acknowledge failed (${e.message})`;
  } finally { button.disabled = false; }
}
if (config.can_ack) $("#ack-button").addEventListener("click", acknowledge);
$("#mute").addEventListener("click", () => setMute(!sound.muted));
setMute(sound.muted);

document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "m") setMute(!sound.muted);
  else if (e.key === "a") acknowledge();
  else if (e.key === "/") { e.preventDefault(); filters.stream.focus(); }
});

// -- start ---------------------------------------------------------------------------------

let source = null, retryMs = 1000;

function userChanged(name) {
  if ((name || null) === (config.user || null)) return;
  const note = $("#session-note");
  note.textContent = name ? `This page now answers as ${name}: reload it.`
    : "You are signed out (expired, revoked or signed out elsewhere): embargoed alerts and " +
      "acknowledging are gone. Sign in again.";
  note.hidden = false;
}

function connect(lastId) {
  const status = $("#conn");
  if (source) source.close();
  source = new EventSource(`/dashboard/events?last_event_id=${enc(lastId)}`);
  source.onopen = () => { retryMs = 1000; status.textContent = "live"; status.className = "conn live"; };
  source.onerror = () => {
    status.textContent = "reconnecting…"; status.className = "conn down";
    // The browser retries by itself unless the server answered with an error (a 429, a
    // proxy's 502): then start again from the state, backing off.
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(load, retryMs);
      retryMs = Math.min(retryMs * 2, 30000);
    }
  };
  const on = (kind, fn) => source.addEventListener(kind, (e) => fn(JSON.parse(e.data)));
  on("hello", (d) => userChanged(d.user));
  on("reset", () => load());
  on("alert", addAlert);
  on("coincidence", addCoincidence);
  on("ack", cleared);
  on("health", (d) => renderHealth(d.streams));
}

async function load() {
  let s;
  try {
    const r = await fetch("/dashboard/state", { credentials: "same-origin" });
    if (!r.ok) throw new Error(`state ${r.status}`);
    s = await r.json();
  } catch (e) {
    $("#conn").textContent = "cannot reach the broker; retrying…"; $("#conn").className = "conn down";
    setTimeout(load, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
    return;
  }
  userChanged(s.user.name);
  for (const a of s.alerts) { remember("stream", a.source); remember("messenger", a.messenger); remember("role", a.role); }
  for (const c of s.coincidences) { c.messengers.forEach((m) => remember("messenger", m)); remember("role", c.role); }
  state.alerts = s.alerts;
  state.coincidences = s.coincidences;
  renderAll();
  sky.reload();
  if (s.health === null) {
    $("#health tbody").replaceChildren();
    $("#health-note").textContent = "Sign in with a token holding the health scope to see stream health.";
    $("#latency").replaceChildren(el("p", { class: "muted" }, "Sign in to see latency figures."));
  } else {
    renderHealth(s.health);
    renderLatency(s.latency);
  }
  state.alarms.clear();
  for (const c of s.alarms) state.alarms.set(c.ivorn, c);
  showAlarm();
  connect(s.last_event_id);
}

load();
setInterval(() => { if (state.health.length) refreshLatency(); }, 30000);
