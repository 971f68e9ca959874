// The staff Realtime page: polls the status JSON and fills the tables (a file, not an
// inline script, so that the site's Content-Security-Policy lets it run).
import { timeOfDay } from "/static/web/time.js";

const root = document.getElementById("content-main");
const url = root.dataset.statusUrl;
const interval = Number(root.dataset.interval);
const runAdmin = root.dataset.runAdmin;
// With runs executing inside the web process there are no workers to list: say so.
const noWorkers = root.dataset.embedded === "true" ? "none: runs execute inside the web process (embedded mode)" : "none";

function cell(row, text, href) {
  const td = row.insertCell();
  if (href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  } else {
    td.textContent = text;
  }
}

function fill(id, rows, columns, empty = "none") {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  if (!rows.length) {
    const td = body.insertRow().insertCell();
    td.colSpan = columns.length;
    td.textContent = empty;
    return;
  }
  for (const item of rows) {
    const row = body.insertRow();
    for (const c of columns) cell(row, ...c(item));
  }
}

const modes = (counts) => Object.entries(counts).map(([m, n]) => `${m} ${n}`).join(", ") || "0";
const set = (id, text) => {
  document.getElementById(id).textContent = text;
};

async function refresh() {
  try {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) {
      set("rt-updated", `status ${response.status}`);
      return;
    }
    const data = await response.json();
    set("rt-sockets", modes(data.sockets));
    set("rt-events", data.events_per_second);
    set("rt-frames", data.frames_per_second);
    set("rt-p99", data.latency_p99_ms === null ? "–" : `${data.latency_p99_ms} ms`);
    set("rt-database", data.database);
    set("rt-layer", data.channel_layer);
    set("rt-upstream", data.upstream.length === 0 ? "all verified on the installed releases" :
      data.upstream.map((u) => `${u.reach} (${u.kind}) ${u.action}: ${u.problem}`).join("; "));
    const f = data.failover;
    set("rt-failover", `${f.degraded_sockets} sockets polling now; ${f.failovers} failovers, ${f.recoveries} recoveries`);
    fill("rt-runs", data.runs, [(r) => [r.run_id, `${runAdmin}${r.run_id}/change/`], (r) => [r.sockets], (r) => [modes(r.modes)], (r) => [r.processes.join(", ")]]);
    fill("rt-processes", data.processes, [(p) => [p.name], (p) => [p.role], (p) => [modes(p.sockets)], (p) => [p.degraded], (p) => [`${p.seen_seconds_ago} s ago`]]);
    fill("rt-workers", data.workers, [(w) => [w.name], (w) => [`${w.seen_seconds_ago} s ago`]], noWorkers);
    set("rt-updated", `Updated ${timeOfDay(data.at * 1000)}`);
  } catch (error) {
    set("rt-updated", `Could not refresh: ${error}`);
  }
}

refresh();
setInterval(refresh, interval);
