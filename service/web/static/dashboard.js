// The dashboard's only script: draws the figures, and keeps a running study's page and
// the studies list current by polling the JSON API (no page reload).
"use strict";

const POLL_MS = 2000;
const FINISHED = new Set(["completed", "stopped", "cancelled", "failed"]);
const CONFIG = { responsive: true, displaylogo: false };

function draw(div, figure) {
  return Plotly.react(div, figure.data, figure.layout, CONFIG).then(() => {
    div.dataset.rendered = "true";
  });
}

// The session's CSRF token, which every write made with the session cookie must carry.
function csrfHeaders() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta && meta.content ? { "X-CSRF-Token": meta.content } : {};
}

async function fetchJson(url, options = {}) {
  const headers = { ...csrfHeaders(), ...(options.headers || {}) };
  const response = await fetch(url, { credentials: "same-origin", ...options, headers });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

async function drawFromApi(div) {
  try {
    await draw(div, await fetchJson(div.dataset.src));
  } catch (error) {
    div.textContent = `This figure could not be loaded (${error.message}).`;
    div.dataset.rendered = "error";
  }
}

function drawAll() {
  document.querySelectorAll(".plot[data-src]").forEach(drawFromApi);
  document.querySelectorAll(".plot[data-figure]").forEach((div) => {
    const holder = document.getElementById(`figure-${div.dataset.figure}`);
    draw(div, JSON.parse(holder.textContent));
  });
}

function age(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  const [n, unit] = seconds < 90 ? [seconds, "s"] : seconds < 5400 ? [seconds / 60, "min"]
    : seconds < 129600 ? [seconds / 3600, "h"] : [seconds / 86400, "d"];
  return `${Math.round(n)} ${unit} ago`;
}

function showAges() {
  document.querySelectorAll("[data-time]").forEach((cell) => {
    cell.textContent = age(cell.dataset.time);
  });
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function badge(text) {
  const span = document.createElement("span");
  span.className = `badge ${text}`;
  span.textContent = text;
  return span;
}

function fmt(value) {
  return value === null || value === undefined ? "–" : Number(value).toPrecision(4).replace(/\.?0+$/, "");
}

function trialCounts(t) {
  const parts = [`${t.complete} done`];
  for (const state of ["running", "pruned", "failed"]) if (t[state]) parts.push(`${t[state]} ${state}`);
  return parts.join(", ");
}

// The studies page: rebuild the table body from GET /api/studies.
async function refreshStudies(table) {
  const page = await fetchJson(table.dataset.live);
  const body = document.createElement("tbody");
  for (const s of page.items) {
    const row = document.createElement("tr");
    row.dataset.id = s.id;
    const link = document.createElement("a");
    link.href = `/studies/${encodeURIComponent(s.id)}`;
    link.textContent = s.id;
    const name = document.createElement("td");
    name.append(link);
    const status = document.createElement("td");
    status.append(badge(s.status));
    const when = cell("", "age");
    when.dataset.time = s.created_at || "";
    row.append(name, status, cell(s.current_stage || ""), cell(fmt(s.best_value)),
      cell(fmt(s.baseline)), cell(trialCounts(s.trials)), when);
    body.append(row);
  }
  if (!page.items.length) body.innerHTML = '<tr class="empty"><td colspan="7">No study yet.</td></tr>';
  table.tBodies[0].replaceWith(body);
  table.dataset.refreshed = String(Number(table.dataset.refreshed || 0) + 1);
  showAges();
}

// The study page: update the header, stages and diagnosis; redraw the figures when the
// study changed. Stops once the study has finished and its last state is drawn.
async function refreshStudy(head, last) {
  const study = await fetchJson(head.dataset.live);
  const stamp = JSON.stringify([study.status, study.updated_at, study.stages.map((s) => [s.status, s.trials])]);
  if (stamp !== last) {
    const status = document.getElementById("status");
    status.textContent = study.status;
    status.className = `badge ${study.status}`;
    document.getElementById("message").textContent = study.message;
    document.getElementById("best").textContent = fmt(study.best_value);
    document.getElementById("baseline").textContent = fmt(study.baseline);
    document.getElementById("compute").textContent = `${fmt(study.compute.epochs)} epochs, ${fmt(study.compute.seconds)} s`
      + (study.budget && study.budget.epochs ? ` of a budget of ${fmt(study.budget.epochs.budget)} epochs` : "");
    for (const s of study.stages) {
      const row = document.querySelector(`#stages tr[data-stage="${s.name}"]`);
      if (!row) continue;
      row.cells[1].replaceChildren(badge(s.verdict || s.status));
      row.cells[2].textContent = s.message;
      row.cells[3].textContent = fmt((s.planned || {}).epochs);
      row.cells[4].textContent = fmt(s.epochs);
      row.cells[5].textContent = fmt(s.seconds);
    }
    if (study.diagnosis) {
      document.getElementById("diagnosis-box").classList.remove("hidden");
      document.getElementById("diagnosis-kind").textContent = study.diagnosis.kind.replace("_", " ");
      document.getElementById("diagnosis-message").textContent = study.diagnosis.message;
      document.getElementById("diagnosis-fix").textContent = study.diagnosis.fix;
    }
    if (last !== undefined) drawAll();
  }
  head.dataset.status = study.status;
  if (!FINISHED.has(study.status)) setTimeout(() => refreshStudy(head, stamp).catch(console.warn), POLL_MS);
}

// Where to go after the login: a path of this service only (the server checks it too).
function sameOrigin(next) {
  try {
    const target = new URL(next || "/", window.location.origin);
    if (target.origin === window.location.origin) return target.pathname + target.search + target.hash;
  } catch (error) { /* not a URL: go home */ }
  return "/";
}

async function logIn(form) {
  const response = await fetch("/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: form.elements.token.value }),
  });
  if (response.ok) window.location.assign(sameOrigin(form.dataset.next));
  else document.getElementById("login-error").textContent = (await response.json()).detail;
}

document.addEventListener("DOMContentLoaded", () => {
  drawAll();
  showAges();
  const studies = document.querySelector("table[data-live]");
  if (studies) setInterval(() => refreshStudies(studies).catch(console.warn), POLL_MS);
  const head = document.querySelector("#head[data-live]");
  if (head && !FINISHED.has(head.dataset.status)) {
    setTimeout(() => refreshStudy(head, undefined).catch(console.warn), POLL_MS);
  }
  const form = document.getElementById("login");
  if (form) form.addEventListener("submit", (event) => { event.preventDefault(); logIn(form); });
});
