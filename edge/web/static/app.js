// The gridedge status page: renders the status document, follows /events, two languages.
"use strict";
const catalogs = JSON.parse(document.getElementById("catalogs").textContent);
let doc = JSON.parse(document.getElementById("doc").textContent);
let lang = document.body.dataset.lang;
const RATE_WINDOW_MS = 10000;  // reports/s over this long, not between two pushes
const samples = {};
const CLOCK = {gnss: "GNSS time", ntp: "NTP time", rtc: "real-time clock", persisted: "saved time, not yet set", none: "time unknown"};  // device -> [[time, events], ...] within the window
const t = (s) => (catalogs[lang] && catalogs[lang][s]) || s;
const f = (s, values) => t(s).replace(/\{(\w+)\}/g, (_, k) => esc(values[k]));
const esc = (v) => String(v ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const cls = (state) => (["connected", "up", "ready", "delivered"].includes(state) ? "ok"
  : ["disconnected", "down", "silent", "rejected", "no_sim", "no_network", "closed", "failing"].includes(state) ? "bad" : "warn");
const state = (s) => `<span class="${cls(s)}" data-state="${esc(s)}">${esc(t(s))}</span>`;
const why = (text) => text ? `<span class="why" data-why>${esc(text)}</span>` : "";
function ago(ms) {
  if (!ms) return esc(t("never"));
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 90) return f("{n} s ago", {n: s.toFixed(0)});
  if (s < 5400) return f("{n} min ago", {n: (s / 60).toFixed(0)});
  return f("{n} h ago", {n: (s / 3600).toFixed(1)});
}
// rows: [attributes, [cell HTML...]]; each cell is labelled with its column (a phone shows
// the label beside the value when the table stacks)
function table(head, rows, name) {
  const body = rows.map(([attrs, cells]) => `<tr ${attrs}>${cells.map((c, i) =>
    `<td data-label="${esc(t(head[i]))}">${c}</td>`).join("")}</tr>`).join("");
  return `<table class="${esc(name || "")}"><thead><tr>${head.map((h) => `<th>${esc(t(h))}</th>`).join("")}</tr></thead><tbody>${body}</tbody></table>`;
}
function section(id, title, body) { return `<section id="${id}"><h2>${esc(t(title))}</h2>${body}</section>`; }

function gateway(d) {
  const l = d.link || {};
  const down = (l.state || "down") !== "up";
  const tq = d.clock && d.clock.tq;
  return section("gateway", "Gateway", table(["Gateway", "State"], [
    ["", [esc(d.gw), esc(d.version)]],
    ['data-uplink', [esc(t("Uplink")), state(l.state || "down") + (down ? why(l.last_error) : "")]],
    ["", [esc(t("Last acknowledgement")), ago(l.last_ack_ms)]],
    ["", [esc(t("Clock")), esc(tq ? t(CLOCK[tq] || tq) : "")]],
    [`data-posture="${esc(d.posture && d.posture.posture)}"`, [esc(t("Posture")),
      esc(t((d.posture && d.posture.posture) || "everyday")) + (d.posture && d.posture.reason ? " · " + esc(d.posture.reason) : "")]],
  ], "kv"));
}
function outbox(d) {
  const o = d.outbox; if (!o) return "";
  const names = {0: "life-safety", 1: "event", 2: "telemetry", 3: "bulk"};
  const rows = Object.entries(names).map(([p, n]) => {
    const lane = o.lanes[p] || {rows: 0};
    const age = (o.oldest_age_s || {})[p];
    return ["", [esc(t(n)), `<span data-lane="${esc(p)}">${esc(lane.rows)}</span>`, age === undefined ? "" : ago(Date.now() - age * 1000)]];
  });
  rows.push(["", [`${esc(t("Dropped"))} / ${esc(t("Refused"))}`, `${esc(o.dropped)} / ${esc(o.refused)}`, ""]]);
  return section("outbox", "Outbox", table(["Lane", "Messages", "Oldest"], rows));
}
function rate(id, events) {
  const now = Date.now();
  const s = (samples[id] = (samples[id] || []).filter(([at]) => now - at <= RATE_WINDOW_MS));
  s.push([now, events]);
  const [at0, ev0] = s[0];
  return now - at0 >= 2000 ? ((events - ev0) * 1000 / (now - at0)).toFixed(1) : null;
}
function devices(d) {
  const rows = Object.entries(d.devices || {}).map(([id, c]) => {
    const details = [];
    if (c.fix) {  // a receiver's own fix, whatever the receiver is called
      details.push(`${esc(t("GNSS fix"))} ${esc(c.fix.fix)}D, ${esc(c.fix.sats ?? "?")} ${esc(t("satellites"))}, ${esc(Number(c.fix.lat).toFixed(5))}, ${esc(Number(c.fix.lon).toFixed(5))}`);
    }
    const r = rate(id, c.events);
    if (r !== null) details.push(`${esc(r)} ${esc(t("reports/s"))}`);
    details.push(c.last_ms ? `${esc(t("last data"))} ${ago(c.last_ms)}` : esc(t("no data received yet")));
    const rejected = Object.values(c.rejected || {}).reduce((a, b) => a + b, 0);
    if (rejected) details.push(`${esc(t("rejected input"))} ${esc(rejected)}`);
    const reason = c.state !== "connected" ? why(c.last_error) : "";
    const raw = `<a class="raw-link" href="/raw/${encodeURIComponent(id)}?lang=${esc(lang)}">${esc(t("raw data"))}</a>`;
    return [`data-device="${esc(id)}"`, [`${esc(id)}<br>${raw}`, state(c.state) + reason, details.join(" · ")]];
  });
  for (const [name, b] of Object.entries(d.bearers || {})) {
    const signal = b.rssi_dbm == null ? "" : `${esc(b.rssi_dbm)} dBm · `;
    const cause = b.cause ? why(t(b.cause)) : "";
    rows.push([`data-device="${esc(name)}"`, [`${esc(t("Bearer"))} ${esc(name)}`, state(b.state) + cause, `${signal}${esc(t("sent"))} ${esc(b.sent)}`]]);
  }
  return section("devices", "Devices", table(["Device", "State", "Details"], rows));
}
function wearables(d) {
  const ws = (d.ble && d.ble.wearables) || {};
  const workers = d.workers || {};
  const rows = Object.entries(ws).map(([id, w]) => [`data-device="${esc(id)}"`, [esc(id), esc(workers[id] || ""),
    state(w.state), w.battery == null ? "" : `${esc(w.battery)}%`, w.rssi == null ? "" : `${esc(w.rssi)} dBm`,
    `${esc(w.last_event ? t(w.last_event) : "")} ${w.last_event_ms ? ago(w.last_event_ms) : ""}`]]);
  return section("wearables", "Wearables", table(["Device", "Worker", "State", "Battery", "Signal", "Last event"], rows));
}
function alarms(d) {
  const rows = (d.life_safety || []).map((a) => {
    const repeats = a.messages > 1 ? ` <span class="muted">${f("{n} messages since {since}", {n: a.messages, since: ago(a.first_at)})}</span>` : "";
    const bearers = (a.bearers || []).map((b) => " · " + esc(t("by")) + " " + esc(b)).join("");
    return [`class="alarm" data-seq="${esc(a.seq)}"`, [esc(t(a.kind)) + repeats, esc(a.worker || a.mmsi || a.src || ""), ago(a.at), state(a.state) + bearers]];
  });
  return section("alarms", "Life-safety messages", rows.length ? table(["Incident", "Who", "Latest", "State"], rows) : `<p class="muted">${esc(t("none yet"))}</p>`);
}
function firmware(d) {
  const jobs = (d.firmware && d.firmware.jobs) || {};
  const rows = Object.entries(jobs).map(([id, j]) => ["", [esc(id), esc(JSON.stringify(j.progress ?? j))]]);
  return section("firmware", "Firmware updates", rows.length ? table(["Device", "Details"], rows) : `<p class="muted">${esc(t("no jobs"))}</p>`);
}
function render() {
  document.documentElement.lang = lang === "zh_CN" ? "zh-CN" : "en";
  document.title = t("gridedge status");
  document.getElementById("title").textContent = t("gridedge status");
  document.getElementById("lang-label").textContent = t("Language");
  document.getElementById("view").innerHTML = gateway(doc) + alarms(doc) + outbox(doc) + devices(doc) + wearables(doc) + firmware(doc);
}
const chooser = document.getElementById("lang");
chooser.value = lang;
chooser.addEventListener("change", () => { lang = chooser.value; localStorage.setItem("gridedge-lang", lang); render(); setLive(liveNow); });
const saved = localStorage.getItem("gridedge-lang");
if (saved && catalogs[saved] && !new URLSearchParams(location.search).get("lang")) { lang = saved; chooser.value = lang; }
let liveNow = false;
function setLive(on) {
  liveNow = on;
  const b = document.getElementById("live");
  b.textContent = t(on ? "live" : "reconnecting…");
  b.className = on ? "badge" : "badge off";
}
render();
const events = new EventSource("/events");
events.onopen = () => setLive(true);
events.onerror = () => setLive(false);
events.onmessage = (e) => { doc = JSON.parse(e.data); render(); };
