// The gridedge status page: renders the status document, follows /events, two languages.
"use strict";
const catalogs = JSON.parse(document.getElementById("catalogs").textContent);
let doc = JSON.parse(document.getElementById("doc").textContent);
let lang = document.body.dataset.lang;
const prev = {};  // device -> [time, events], for rates
const t = (s) => (catalogs[lang] && catalogs[lang][s]) || s;
const esc = (v) => String(v ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const cls = (state) => (["connected", "up", "ready", "delivered"].includes(state) ? "ok"
  : ["disconnected", "down", "silent", "rejected", "no_sim", "no_network", "closed", "failing"].includes(state) ? "bad" : "warn");
const state = (s) => `<span class="${cls(s)}" data-state="${esc(s)}">${esc(t(s))}</span>`;
function ago(ms) {
  if (!ms) return t("never");
  const s = Math.max(0, (Date.now() - ms) / 1000);
  return (s < 90 ? `${s.toFixed(0)} s` : s < 5400 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`) + " " + t("ago");
}
function table(head, rows) {
  return `<table><tr>${head.map((h) => `<th>${esc(t(h))}</th>`).join("")}</tr>${rows.join("")}</table>`;
}
function section(id, title, body) { return `<section id="${id}"><h2>${esc(t(title))}</h2>${body}</section>`; }

function gateway(d) {
  const l = d.link || {};
  return section("gateway", "Gateway", table(["Gateway", "State"], [
    `<tr><td>${esc(d.gw)}</td><td>${esc(d.version)}</td></tr>`,
    `<tr><td>${esc(t("Uplink"))}</td><td>${state(l.state || "down")}</td></tr>`,
    `<tr><td>${esc(t("Last acknowledgement"))}</td><td>${ago(l.last_ack_ms)}</td></tr>`,
    `<tr><td>${esc(t("Clock"))}</td><td>${esc(d.clock && d.clock.tq)}</td></tr>`,
    `<tr><td>${esc(t("Posture"))}</td><td data-posture="${esc(d.posture && d.posture.posture)}">${esc(t((d.posture && d.posture.posture) || "everyday"))}${d.posture && d.posture.reason ? " · " + esc(d.posture.reason) : ""}</td></tr>`,
  ]));
}
function outbox(d) {
  const o = d.outbox; if (!o) return "";
  const names = {0: "life-safety", 1: "event", 2: "telemetry", 3: "bulk"};
  const rows = Object.entries(names).map(([p, n]) => {
    const lane = o.lanes[p] || {rows: 0};
    const age = (o.oldest_age_s || {})[p];
    return `<tr><td>${esc(t(n))}</td><td data-lane="${esc(p)}">${esc(lane.rows)}</td><td>${age === undefined ? "" : ago(Date.now() - age * 1000)}</td></tr>`;
  });
  rows.push(`<tr><td>${esc(t("Dropped"))} / ${esc(t("Refused"))}</td><td>${esc(o.dropped)} / ${esc(o.refused)}</td><td></td></tr>`);
  return section("outbox", "Outbox", table(["Lane", "Messages", "Oldest"], rows));
}
function devices(d) {
  const now = Date.now();
  const rows = Object.entries(d.devices || {}).map(([id, c]) => {
    let details = "";
    if (c.fix) {  // a receiver's own fix, whatever the receiver is called
      details = `${t("GNSS fix")} ${esc(c.fix.fix)}D, ${esc(c.fix.sats ?? "?")} ${t("satellites")}, ${esc(Number(c.fix.lat).toFixed(5))}, ${esc(Number(c.fix.lon).toFixed(5))}`;
    }
    const p = prev[id];
    if (p && now > p[0]) details += ` ${((c.events - p[1]) * 1000 / (now - p[0])).toFixed(1)} ${t("reports/s")}`;
    prev[id] = [now, c.events];
    const rejected = Object.values(c.rejected || {}).reduce((a, b) => a + b, 0);
    details += ` · ${t("last data")} ${ago(c.last_ms)}` + (rejected ? ` · ${t("rejected input")} ${esc(rejected)}` : "");
    return `<tr data-device="${esc(id)}"><td>${esc(id)}</td><td>${state(c.state)}</td><td>${esc(details)}</td></tr>`;
  });
  for (const [name, b] of Object.entries(d.bearers || {})) {
    const signal = b.rssi_dbm == null ? "" : `${esc(b.rssi_dbm)} dBm · `;
    const cause = b.cause ? ` · ${esc(t(b.cause))}` : "";
    rows.push(`<tr data-device="${esc(name)}"><td>${esc(t("Bearer"))} ${esc(name)}</td><td>${state(b.state)}${cause}</td><td>${esc(signal)}${esc(t("sent"))} ${esc(b.sent)}</td></tr>`);
  }
  return section("devices", "Devices", table(["Device", "State", "Details"], rows));
}
function wearables(d) {
  const ws = (d.ble && d.ble.wearables) || {};
  const workers = d.workers || {};
  const rows = Object.entries(ws).map(([id, w]) => `<tr data-device="${esc(id)}"><td>${esc(id)}</td>` +
    `<td>${esc(workers[id] || "")}</td><td>${state(w.state)}</td><td>${esc(w.battery ?? "")}%</td>` +
    `<td>${esc(w.rssi ?? "")}</td><td>${esc(w.last_event ? t(w.last_event) : "")} ${w.last_event_ms ? ago(w.last_event_ms) : ""}</td></tr>`);
  return section("wearables", "Wearables", table(["Device", "Worker", "State", "Battery", "Signal", "Last event"], rows));
}
function alarms(d) {
  const rows = (d.life_safety || []).map((a) => `<tr class="alarm" data-seq="${esc(a.seq)}"><td>${esc(a.kind)}</td>` +
    `<td>${esc(a.worker || a.mmsi || a.src || "")}</td><td>${ago(a.at)}</td>` +
    `<td>${state(a.state)}${(a.bearers || []).map((b) => " · " + esc(t("by")) + " " + esc(b)).join("")}</td></tr>`);
  return section("alarms", "Life-safety messages", rows.length ? table(["Messages", "Worker", "Oldest", "State"], rows) : `<p class="muted">${esc(t("none yet"))}</p>`);
}
function firmware(d) {
  const jobs = (d.firmware && d.firmware.jobs) || {};
  const rows = Object.entries(jobs).map(([id, j]) => `<tr><td>${esc(id)}</td><td>${esc(JSON.stringify(j.progress ?? j))}</td></tr>`);
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
