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

// Numbers as the server writes them (studies/reporting/numbers.py): three significant
// figures, whole numbers as they are, 1.5e-5 outside [1e-4, 1e6); none or NaN as a dash.
function fmt(value) {
  if (value === null || value === undefined) return "–";
  const n = Number(value);
  if (!Number.isFinite(n)) return "–";
  if (Number.isInteger(n)) return String(n);
  const rounded = Number(n.toPrecision(3));
  const exponent = Math.floor(Math.log10(Math.abs(rounded)));
  if (exponent >= -4 && exponent < 6) return String(rounded);
  return rounded.toExponential(2).replace(/\.?0+e/, "e").replace("e+", "e");
}

function trialCounts(t) {
  const parts = [`${t.complete} done`];
  for (const state of ["running", "pruned", "failed"]) if (t[state]) parts.push(`${t[state]} ${state}`);
  return parts.join(", ");
}

// The studies page: rebuild the table body from GET /api/studies.
async function refreshStudies(table) {
  const page = await fetchJson(table.dataset.live);
  const ticked = new Set(picked());
  const body = document.createElement("tbody");
  for (const s of page.items) {
    const row = document.createElement("tr");
    row.dataset.id = s.id;
    const link = document.createElement("a");
    link.href = `/studies/${encodeURIComponent(s.id)}`;
    link.textContent = s.id;
    const pick = document.createElement("input");
    Object.assign(pick, { type: "checkbox", className: "pick", name: "studies", value: s.id, checked: ticked.has(s.id) });
    pick.setAttribute("form", "compare");
    pick.setAttribute("aria-label", `compare ${s.id}`);
    const name = document.createElement("td");
    name.append(pick, " ", link);
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

function picked() {
  return [...document.querySelectorAll("input.pick:checked")].map((box) => box.value);
}

// The compare button: /compare?studies=a,b (the page also takes `studies` repeated).
function compareTicked(event) {
  event.preventDefault();
  const names = picked();
  const error = document.getElementById("compare-error");
  if (names.length < 2 || names.length > 8) {
    error.textContent = `tick 2 to 8 studies to compare (${names.length} ticked)`;
    return;
  }
  window.location.assign(`/compare?studies=${names.map(encodeURIComponent).join(",")}`);
}

// The study page: update the header, stages and diagnosis; redraw the figures when the
// study changed. Stops once the study has finished and its last state is drawn.
async function refreshStudy(head, last) {
  const study = await fetchJson(head.dataset.live);
  const stamp = JSON.stringify([study.status, study.updated_at, study.stages.map((s) => [s.status, s.trials])]);
  if (stamp !== last) {
    setStatus(study.status, study.message);
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
    if (last !== undefined) {
      drawAll();
      const form = document.getElementById("trial-filter");
      if (form) loadTrials(form, document.getElementById("trials"));
    }
  }
  head.dataset.status = study.status;
  if (!FINISHED.has(study.status)) setTimeout(() => refreshStudy(head, stamp).catch(stopWatching), POLL_MS);
  else polling = false;
}

// Polls the study while it is not finished; a button that restarts it (resume) starts again.
let polling = false;

function watch(head) {
  if (polling) return;
  polling = true;
  setTimeout(() => refreshStudy(head, undefined).catch(stopWatching), POLL_MS);
}

function stopWatching(error) {
  console.warn(error);
  polling = false;
}

// -- the study page's buttons: cancel, resume, delete, through the API ------------------

// A write to the API with the session's CSRF token; the API's own message on an error.
async function write(method, url) {
  const response = await fetch(url, { method, credentials: "same-origin", headers: csrfHeaders() });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new Error(detailText(body, response.status));
  return body;
}

function detailText(body, status) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg).join("; ");
  return typeof detail === "string" ? detail : `the service answered ${status}`;
}

function showActions(status) {
  document.querySelectorAll("#actions .action").forEach((button) => {
    button.hidden = !button.dataset.when.split(" ").includes(status);
  });
}

async function act(button, head) {
  const study = document.getElementById("actions").dataset.study;
  const url = `/api/studies/${encodeURIComponent(study)}`;
  const error = document.getElementById("action-error");
  const action = button.dataset.action;
  if (action === "delete" && !window.confirm(`Delete study ${study}, its trials and curves? This cannot be undone.`)) return;
  error.textContent = "";
  button.disabled = true;
  try {
    if (action === "delete") {
      await write("DELETE", url);
      window.location.assign("/");
      return;
    }
    const answer = await write("POST", `${url}/${action}`);
    setStatus(answer.status, answer.message);
    head.dataset.status = answer.status;
    if (!FINISHED.has(answer.status)) watch(head);
  } catch (failure) {
    error.textContent = failure.message;  // text, never HTML
  } finally {
    button.disabled = false;
  }
}

function setStatus(status, message) {
  const badgeEl = document.getElementById("status");
  badgeEl.textContent = status;
  badgeEl.className = `badge ${status}`;
  document.getElementById("message").textContent = message;
  showActions(status);
}

// -- the trial table: sorted, filtered and paged by the API ---------------------------

function tableQuery(form, table) {
  const query = new URLSearchParams();
  for (const name of ["stage", "state", "q"]) {
    const value = form.elements[name].value.trim();
    if (value) query.set(name, value);
  }
  query.set("sort", table.dataset.sort);
  query.set("order", table.dataset.order);
  query.set("offset", form.elements.offset.value || "0");
  query.set("limit", form.elements.limit.value);
  return query;
}

function paramCell(value) {
  if (value === undefined) return cell("");
  return cell(typeof value === "number" ? fmt(value) : String(value));
}

async function loadTrials(form, table) {
  const query = tableQuery(form, table);
  const error = document.getElementById("trial-error");
  const started = performance.now();
  table.dataset.loading = "true";
  try {
    const response = await fetch(`${form.dataset.api}?${query}`, { credentials: "same-origin" });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error(detailText(body, response.status));
    const study = document.getElementById("actions").dataset.study;
    const params = [...table.tHead.rows[0].cells].map((th) => th.dataset.sort || "")
      .filter((s) => s.startsWith("param:")).map((s) => s.slice(6));
    const rows = document.createElement("tbody");
    for (const t of body.items) {
      const row = document.createElement("tr");
      const link = document.createElement("a");
      link.href = `/studies/${encodeURIComponent(study)}/trials/${t.number}`;
      link.textContent = t.number;
      const first = document.createElement("td");
      first.append(link);
      const why = cell(t.state === "complete" ? "" : t.reason || "");  // why it was pruned or failed
      why.className = "reason";
      row.append(first, cell(t.stage), cell(t.state), why, cell(fmt(t.value)),
        cell(t.epochs === null ? "" : String(t.epochs)), cell(fmt(t.seconds)));
      for (const p of params) row.append(paramCell(t.params[p]));
      rows.append(row);
    }
    if (!body.items.length) {
      const row = document.createElement("tr");
      row.className = "empty";
      const only = cell("No trial matches.");
      only.colSpan = 7 + params.length;
      row.append(only);
      rows.append(row);
    }
    table.tBodies[0].replaceWith(rows);
    table.dataset.total = String(body.total);
    const offset = body.offset;
    document.getElementById("trials-range").textContent = body.total
      ? `${offset + 1}–${Math.min(offset + body.limit, body.total)} of ${body.total.toLocaleString("en")}` : "0 of 0";
    document.getElementById("trials-prev").disabled = offset === 0;
    document.getElementById("trials-next").disabled = offset + body.limit >= body.total;
    for (const th of table.tHead.rows[0].cells) {
      if (th.dataset.sort === table.dataset.sort) th.setAttribute("aria-sort", table.dataset.order === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    error.textContent = "";
    window.history.replaceState(null, "", `${window.location.pathname}?${query}`);
  } catch (failure) {
    error.textContent = failure.message;
  } finally {
    table.dataset.ms = String(Math.round(performance.now() - started));
    table.dataset.loaded = String(Number(table.dataset.loaded || 0) + 1);
    delete table.dataset.loading;
  }
}

function setUpTrialTable(form, table) {
  const reload = (fromStart) => {
    if (fromStart) form.elements.offset.value = "0";
    form.elements.sort.value = table.dataset.sort;
    form.elements.order.value = table.dataset.order;
    return loadTrials(form, table);
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); reload(true); });
  for (const name of ["stage", "state", "limit"]) form.elements[name].addEventListener("change", () => reload(true));
  for (const th of table.tHead.rows[0].cells) {
    if (!th.dataset.sort) continue;  // not a column the server sorts by
    th.querySelector("button").addEventListener("click", () => {
      const column = th.dataset.sort;
      if (table.dataset.sort === column) table.dataset.order = table.dataset.order === "asc" ? "desc" : "asc";
      else {  // best first for the value; otherwise smallest first
        table.dataset.sort = column;
        table.dataset.order = column === "value" && form.dataset.direction === "maximize" ? "desc" : "asc";
      }
      reload(true);
    });
  }
  const step = (sign) => {
    const limit = Number(form.elements.limit.value);
    form.elements.offset.value = String(Math.max(0, Number(form.elements.offset.value || 0) + sign * limit));
    reload(false);
  };
  document.getElementById("trials-prev").addEventListener("click", () => step(-1));
  document.getElementById("trials-next").addEventListener("click", () => step(1));
}

// Where to go after the login: a page of this service only (the server checks it too).
// The whole URL, not its path: a path such as "//host/x" (what "/.//host/x" resolves to)
// would be read again as another host's address.
function sameOrigin(next) {
  try {
    const target = new URL(next || "/", window.location.origin);
    if (target.origin === window.location.origin) return target.href;
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
  if (head && !FINISHED.has(head.dataset.status)) watch(head);
  if (head) document.querySelectorAll("#actions .action").forEach((button) => {
    button.addEventListener("click", () => act(button, head));
  });
  const filter = document.getElementById("trial-filter");
  if (filter) setUpTrialTable(filter, document.getElementById("trials"));
  const compare = document.getElementById("compare");
  if (compare) compare.addEventListener("submit", compareTicked);
  const form = document.getElementById("login");
  if (form) form.addEventListener("submit", (event) => { event.preventDefault(); logIn(form); });
});
