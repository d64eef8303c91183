// secure-meanshift dashboard: polls /api/state and draws the tables. Every value
// from the coordinator is set as text (never as HTML): a reason or an identity
// cannot inject markup. Read only: nothing here changes the federation.
"use strict";
const TOKEN = new URLSearchParams(location.search).get("token") || "";
const REFRESH_MS = Math.max(500, parseInt(document.body.dataset.refreshMs, 10) || 5000);
const AUDIT_ROWS = 25;

function api(path) {
  return fetch(path, {headers: {"X-Dashboard-Token": TOKEN}, cache: "no-store"})
    .then(r => r.json());
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}

function fill(id, rows, empty, cols) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows);
  if (!rows.length) {
    const td = el("td", empty);
    td.colSpan = cols;
    body.appendChild(row([td]));
  }
}

function ago(t, now) {
  if (!t) return "never";
  const s = Math.max(0, now - t);
  return s < 90 ? s.toFixed(0) + " s ago" : (s / 60).toFixed(0) + " min ago";
}

function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "-";
}

function progressCell(job) {
  const td = el("td");
  const p = job.progress;
  const max = (p && p.max_iter) || job.max_iter || 0;
  const it = (p && p.iteration) || job.iterations || 0;
  if (job.state === "running" || job.state === "agreeing" || job.state === "queued") {
    if (p && p.max_iter) {
      const bar = el("span", null, "bar"), fillBar = el("span");
      fillBar.style.width = Math.min(100, 100 * it / max).toFixed(0) + "%";
      bar.appendChild(fillBar);
      td.appendChild(bar);
      td.appendChild(el("span", "iteration " + it + "/" + max +
        (p.moving === "no" ? " (converged)" : ""), "progress"));
    } else {
      td.appendChild(el("span", (p && (p.message || p.stage)) || job.state, "progress"));
    }
  } else {
    td.textContent = it + " iteration(s)";
  }
  return td;
}

function resultCell(job) {
  const td = el("td");
  if (job.state === "succeeded" && job.receiver) {
    const b = el("button", "plot centroids");
    b.dataset.job = job.job_id;
    b.addEventListener("click", () => plot(job.job_id));
    td.appendChild(b);
  } else if (job.state === "succeeded") {
    td.textContent = "not a receiver";
  }
  return td;
}

function drawParties(s, now) {
  fill("parties", s.parties.map(p => {
    const state = el("td", p.connected ? "online" : "offline", p.connected ? "online" : "offline");
    const sets = el("td", (p.datasets || []).join(", "));
    for (const prob of p.problems || []) sets.appendChild(el("div", prob, "problem"));
    return row([p.id, p.kind, state, ago(p.last_seen, now), p.busy_job || "", sets]);
  }), "no party has connected", 6);
}

function drawJobs(s) {
  fill("jobs", s.jobs.map(j => {
    const tr = row([j.job_id, j.name, el("td", j.state, "state-" + j.state), progressCell(j),
      (j.parties || []).join(", "), j.dealer, j.submitter, clock(j.updated),
      el("td", j.state === "succeeded" ? "" : j.reason, j.state === "failed" ? "blame" : ""),
      resultCell(j)]);
    tr.dataset.job = j.job_id;
    tr.dataset.state = j.state;
    return tr;
  }), "no jobs this identity may read", 10);
}

function drawAudit(s) {
  document.getElementById("audit-note").textContent =
    s.audit === null ? "not shown: " + (s.audit_note || "operators only") : "";
  const rows = (s.audit || []).slice(-AUDIT_ROWS).reverse();
  if (s.audit && s.audit.length > rows.length)
    document.getElementById("audit-note").textContent = "the newest " + rows.length +
      " rows (secure-meanshift coordinator audit --db FILE lists them all)";
  fill("audit", rows.map(a => row([
    clock(a.time), a.identity, a.action, a.job_id || "", a.outcome])),
    s.audit === null ? "-" : "empty", 5);
}

function draw(s) {
  const now = s.time || Date.now() / 1000;
  document.getElementById("who").textContent = "as " + s.identity;
  const err = document.getElementById("error");
  err.hidden = !s.error;
  err.textContent = s.error ? "coordinator: " + s.error : "";
  drawParties(s, now);
  drawJobs(s);
  drawAudit(s);
  document.getElementById("updated").textContent = clock(now);
  document.body.dataset.loaded = "yes";
}

function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function plot(jobId) {
  document.getElementById("plot-section").hidden = false;
  document.getElementById("plot-job").textContent = jobId;
  const box = document.getElementById("plot"), note = document.getElementById("plot-note");
  box.replaceChildren();
  note.textContent = "opening the sealed shares...";
  api("/api/result?job=" + encodeURIComponent(jobId)).then(r => {
    if (r.error) { note.textContent = r.error; return; }
    note.textContent = r.centroids.length + " centroid(s)" +
      (r.suppressed ? ", " + r.suppressed + " suppressed (small clusters)" : "");
    box.appendChild(scatter(r.centroids, r.columns));
  }).catch(e => { note.textContent = "cannot read the result: " + e; });
}

function scatter(points, columns) {
  const W = 420, H = 320, M = 40;
  const s = svg("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, id: "centroid-plot"});
  const xs = points.map(p => p[0]), ys = points.map(p => p.length > 1 ? p[1] : 0);
  const span = (v) => { const lo = Math.min(...v), hi = Math.max(...v);
    const pad = (hi - lo) * 0.1 || 0.5; return [lo - pad, hi + pad]; };
  const [x0, x1] = span(xs), [y0, y1] = span(ys);
  const X = x => M + (x - x0) / (x1 - x0) * (W - 2 * M);
  const Y = y => H - M - (y - y0) / (y1 - y0) * (H - 2 * M);
  s.appendChild(svg("rect", {x: M, y: M, width: W - 2 * M, height: H - 2 * M,
    fill: "none", stroke: "#999"}));
  s.appendChild(svg("text", {x: W / 2, y: H - 8, "text-anchor": "middle"}, columns[0] || "x0"));
  s.appendChild(svg("text", {x: 12, y: H / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${H / 2})`}, columns[1] || "x1"));
  for (const [v, pos] of [[x0, "start"], [x1, "end"]])
    s.appendChild(svg("text", {x: X(v), y: H - M + 14, "text-anchor": pos, "font-size": 10},
      v.toPrecision(3)));
  for (const [v, dy] of [[y0, 0], [y1, 10]])
    s.appendChild(svg("text", {x: M - 4, y: Y(v) + dy, "text-anchor": "end", "font-size": 10},
      v.toPrecision(3)));
  points.forEach((p, i) => s.appendChild(svg("circle", {cx: X(xs[i]), cy: Y(ys[i]), r: 6,
    fill: "#c33", class: "centroid"})));
  return s;
}

function tick() {
  api("/api/state").then(draw).catch(e => {
    const err = document.getElementById("error");
    err.hidden = false;
    err.textContent = "dashboard server: " + e;
  }).finally(() => setTimeout(tick, REFRESH_MS));
}

document.getElementById("refresh").textContent = (REFRESH_MS / 1000).toString();
tick();
