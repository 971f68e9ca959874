// The live parts of the pages and the admin, on top of the realtime client.
import { isTerminal, runProgress, watchRun, watchRuns } from "/static/realtime/quikday-realtime.js";

const STATE_LABEL = {
  connecting: "connecting",
  live: "live",
  reconnecting: "reconnecting",
  polling: "polling",
  offline: "offline",
  closed: "closed",
};

// Timing overrides (tests, debugging): set globalThis.quikdayRealtimeOptions before the page's scripts run.
const overrides = () => globalThis.quikdayRealtimeOptions || {};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function statusBadge(status) {
  return el("span", { class: `status status-${status}` }, status);
}

function shortJson(value) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

/** Seconds to a tenth: finished − started, or now − started while it runs. */
export function duration(step, now = Date.now()) {
  if (!step || !step.started_at) return "";
  const end = step.finished_at ? Date.parse(step.finished_at) : now;
  return `${Math.max(0, (end - Date.parse(step.started_at)) / 1000).toFixed(1)} s`;
}

/** To the second, in the reader's time zone: 2026-11-27 16:07:59. */
export function toSecond(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function showConnection(node, modeNode, status) {
  if (!node) return;
  const label = status.state === "closed" && status.reason && status.reason !== "finished" ? `closed: ${status.reason}` : STATE_LABEL[status.state];
  node.textContent = status.state === "closed" && status.reason === "finished" ? "closed (run finished)" : label;
  node.className = `conn conn-${status.state}`;
  node.dataset.state = status.state;
  if (modeNode) modeNode.textContent = status.mode || "—";
}

// --- A run's page (and the admin's change page) -----------------------------------------

/** Render `snapshot` into `panel` (see web/_run_panel.html) and keep it live. */
export function mountRunView(panel, snapshot, options = {}) {
  const field = (name) => panel.querySelector(`[data-field="${name}"]`);
  const parts = {
    status: field("status"),
    connection: field("connection"),
    mode: field("mode"),
    progress: field("progress"),
    progressText: field("progress-text"),
    steps: field("steps"),
    error: field("error"),
    announcer: field("announcer"),
    cancel: field("cancel"),
    times: field("times"),
  };
  let current = snapshot;
  let lastAnnounced = snapshot.status;

  const render = (run) => {
    current = run;
    parts.status.replaceWith((parts.status = statusBadge(run.status)));
    parts.status.dataset.field = "status";
    const p = runProgress(run);
    parts.progress.setAttribute("aria-valuenow", String(p.succeeded));
    parts.progress.setAttribute("aria-valuemax", String(p.total));
    parts.progress.setAttribute("aria-valuetext", `${p.succeeded} of ${p.total} steps succeeded`);
    parts.progress.dataset.percent = String(p.percent);
    const widths = { succeeded: p.succeeded, running: p.running, failed: p.failed, skipped: p.skipped };
    for (const [kind, count] of Object.entries(widths)) {
      parts.progress.querySelector(`.bar-${kind}`).style.width = p.total ? `${(count / p.total) * 100}%` : "0";
    }
    const extra = [];
    if (p.running) extra.push(`${p.running} running`);
    if (p.failed) extra.push(`${p.failed} failed`);
    if (p.skipped) extra.push(`${p.skipped} skipped`);
    parts.progressText.textContent = `${p.succeeded} of ${p.total} steps succeeded (${p.percent} %)${extra.length ? " · " + extra.join(" · ") : ""}`;
    if (run.error) {
      parts.error.hidden = false;
      parts.error.textContent = run.error;
    }
    if (parts.cancel) parts.cancel.hidden = isTerminal(run.status);
    renderSteps(run);
    if (parts.times) {
      parts.times.replaceChildren(
        el("dt", {}, "Created"), el("dd", {}, toSecond(run.created_at)),
        el("dt", {}, "Started"), el("dd", {}, toSecond(run.started_at)),
        el("dt", {}, "Finished"), el("dd", {}, toSecond(run.finished_at)),
      );
    }
    if (run.status !== lastAnnounced) {
      lastAnnounced = run.status;
      parts.announcer.textContent = `Run ${run.status}`;
    }
  };

  const renderSteps = (run) => {
    const byIndex = new Map((run.steps || []).map((s) => [s.index, s]));
    const rows = (run.plan || []).map((spec, index) => {
      const step = byIndex.get(index);
      const status = step ? step.status : "pending";
      const output = step ? (step.error ? step.error : shortJson(step.output)) : "";
      const row = el(
        "tr",
        { "data-index": String(index), "data-status": status, class: `step-${status}` },
        el("td", {}, String(index + 1)),
        el("td", {}, el("code", {}, spec.tool)),
        el("td", { class: "args" }, el("code", {}, shortJson(spec.args || {}))),
        el("td", {}, statusBadge(status)),
        el("td", { class: "duration", "data-duration": "" }, duration(step)),
        el("td", { class: step && step.error ? "output error-text" : "output" }, output),
      );
      return row;
    });
    parts.steps.replaceChildren(...rows);
  };

  render(snapshot);
  // Bars move smoothly from here on; the first paint shows the snapshot as it is.
  requestAnimationFrame(() => parts.progress.classList.add("animated"));
  // A running step's duration ticks on its own between events.
  const ticker = setInterval(() => {
    for (const step of current.steps || []) {
      if (step.status !== "running") continue;
      const cell = parts.steps.querySelector(`tr[data-index="${step.index}"] [data-duration]`);
      if (cell) cell.textContent = duration(step);
    }
  }, 100);

  const watch = watchRun(snapshot.id, {
    ...overrides(),
    ...options,
    onChange: (run, frame) => {
      render(run);
      // Observable from outside (tests; a page embedding the panel): every applied change, once.
      document.dispatchEvent(new CustomEvent("quikday:run-change", { detail: { seq: run.seq, type: frame.type, status: run.status } }));
    },
    onStatus: (status) => {
      showConnection(parts.connection, parts.mode, status);
      if (status.state === "closed") clearInterval(ticker);
      if (status.state === "closed" && status.reason !== "finished" && status.reason !== "stopped") {
        parts.announcer.textContent = `Live updates stopped: ${status.reason}`;
      }
    },
  });
  window.addEventListener("pagehide", () => watch.stop());
  return watch;
}

// --- The run list (and the admin's change list) ------------------------------------------------

function progressCell(summary) {
  const p = runProgress(summary);
  const bar = el("span", { class: "mini-progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": String(p.total), "aria-valuenow": String(p.succeeded), "aria-label": "Steps succeeded" });
  for (const kind of ["succeeded", "running", "failed", "skipped"]) {
    const width = p.total ? ((kind === "succeeded" ? p.succeeded : p[kind]) / p.total) * 100 : 0;
    bar.append(el("span", { class: `bar bar-${kind}`, style: `width:${width}%` }));
  }
  const extra = [p.failed ? `${p.failed} failed` : "", p.skipped ? `${p.skipped} skipped` : ""].filter(Boolean).join(", ");
  return [bar, el("span", { class: "count" }, `${p.succeeded}/${p.total}${extra ? " · " + extra : ""}`)];
}

/** The list page: one row per run, newest first; new runs appear, statuses move. */
export function mountRunList({ body, connection, announcer, snapshot, showOwner, runUrl }) {
  const render = (runs) => {
    const sorted = [...runs.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    if (!sorted.length && !removed.size) return;
    body.replaceChildren(
      ...sorted.map((run) =>
        el(
          "tr",
          { "data-run-id": run.id, "data-status": run.status },
          el("td", {}, el("a", { href: runUrl(run.id) }, el("code", {}, run.id.slice(0, 8))), " ", run.prompt ? run.prompt.slice(0, 40) : ""),
          ...(showOwner ? [el("td", {}, run.owner)] : []),
          el("td", {}, statusBadge(run.status)),
          el("td", { class: "progress-cell" }, ...progressCell(run)),
          el("td", {}, toSecond(run.created_at)),
        ),
      ),
    );
  };
  const removed = new Set(); // runs deleted since the page was rendered
  const initial = new Map(snapshot.map((run) => [run.id, run]));
  render(initial);
  const known = new Map(snapshot.map((run) => [run.id, run.status]));
  return watchRuns({
    ...overrides(),
    onChange: (runs, changed) => {
      for (const id of changed) if (!runs.has(id)) removed.add(id);
      for (const id of snapshot.map((r) => r.id)) if (!runs.has(id) && !removed.has(id)) runs.set(id, initial.get(id));
      render(runs);
      const news = changed.map((id) => runs.get(id)).filter((run) => run && known.get(run.id) !== run.status);
      for (const run of news) known.set(run.id, run.status);
      if (news.length && announcer) announcer.textContent = news.map((run) => `Run ${run.id.slice(0, 8)} ${run.status}`).join(". ");
    },
    onStatus: (status) => showConnection(connection, null, status),
  });
}

/** The admin's change list: update the status and progress cells of the rows shown. */
export function mountLiveCells({ root, connection }) {
  return watchRuns({
    ...overrides(),
    onChange: (runs, changed) => {
      for (const id of changed) {
        const run = runs.get(id);
        const status = root.querySelector(`[data-run-status="${id}"]`);
        if (!run) {
          if (status) status.closest("tr").remove(); // deleted
          continue;
        }
        if (status) {
          status.textContent = run.status;
          status.className = `status status-${run.status}`;
        }
        const progress = root.querySelector(`[data-run-progress="${id}"]`);
        if (progress) progress.replaceChildren(...progressCell(run));
      }
    },
    onStatus: (status) => showConnection(connection, null, status),
  });
}

// --- The new-run form ----------------------------------------------------------------------------

/** Show only the picked tool's fields in each step; add steps. Works without it, too. */
export function enhanceRunForm(form) {
  const steps = form.querySelector("#steps");
  const template = form.ownerDocument.getElementById("step-template");
  const sync = (fieldset) => {
    const picked = fieldset.querySelector("[data-tool-select]").value;
    for (const args of fieldset.querySelectorAll(".tool-args")) {
      const on = args.dataset.tool === picked;
      args.hidden = !on;
      for (const input of args.querySelectorAll("input, textarea, select")) input.disabled = !on;
    }
  };
  const wire = (fieldset) => {
    fieldset.querySelector("[data-tool-select]").addEventListener("change", () => sync(fieldset));
    sync(fieldset);
  };
  steps.querySelectorAll("fieldset.step").forEach(wire);
  form.querySelector("#add-step").addEventListener("click", () => {
    const row = steps.querySelectorAll("fieldset.step").length;
    const html = template.innerHTML.replaceAll("__row__", String(row)).replaceAll("__number__", String(row + 1));
    steps.insertAdjacentHTML("beforeend", html);
    const added = steps.lastElementChild;
    wire(added);
    added.querySelector("select").focus();
  });
}
