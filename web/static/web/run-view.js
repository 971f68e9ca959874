// The live parts of the pages and the admin, on top of the realtime client.
import { isTerminal, runProgress, watchRun, watchRuns } from "/static/realtime/quikday-realtime.js";
import { toSecond } from "/static/web/time.js";

export { toSecond };

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

/** Cut to `limit` characters with "…", as the server's truncatechars does. */
export function truncate(text, limit) {
  if (!text) return "";
  return text.length > limit ? `${text.slice(0, limit - 1)}…` : text;
}

function shortJson(value) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

/** Seconds to a tenth: finished − started, or now − started while it runs. */
/** A step started more than once (its executor was lost: a worker died, the server restarted) says so. */
function attemptsNote(step) {
  if (!step || !(step.attempts > 1)) return [];
  const earlier = step.attempts === 2 ? "its first attempt was" : `its first ${step.attempts - 1} attempts were`;
  return [el("small", { class: "attempts" }, `started ${step.attempts} times: ${earlier} interrupted`)];
}

export function duration(step, now = Date.now()) {
  if (!step || !step.started_at) return "";
  const end = step.finished_at ? Date.parse(step.finished_at) : now;
  return `${Math.max(0, (end - Date.parse(step.started_at)) / 1000).toFixed(1)} s`;
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
        el("td", {}, statusBadge(status), ...attemptsNote(step)),
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
      // Observable from outside (tests; the timeline, run-timeline.js; a page embedding the panel): every applied change and its frame, once.
      document.dispatchEvent(new CustomEvent("quikday:run-change", { detail: { seq: run.seq, type: frame.type, status: run.status, frame } }));
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
    const part = el("span", { class: `bar bar-${kind}` });
    part.style.width = `${width}%`; // through the CSSOM: the CSP refuses style attributes
    bar.append(part);
  }
  const extra = [p.failed ? `${p.failed} failed` : "", p.skipped ? `${p.skipped} skipped` : ""].filter(Boolean).join(", ");
  return [bar, el("span", { class: "count" }, `${p.succeeded}/${p.total}${extra ? " · " + extra : ""}`)];
}

const newestFirst = (runs) => [...runs.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));

/**
 * Keep a list of run summaries live over the one run-list socket: `render(runs)` gets every run
 * known (the page's snapshot and whatever the stream brings, new runs included) on each change.
 */
function watchSummaries({ snapshot, render, connection, announcer, removed = new Set(), onChange = () => {} }) {
  const initial = new Map(snapshot.map((run) => [run.id, run]));
  render(initial);
  const known = new Map(snapshot.map((run) => [run.id, run.status]));
  const watch = watchRuns({
    ...overrides(),
    onChange: (runs, changed) => {
      // A changed id the stream no longer has was deleted (run_deleted): the snapshot's copy stays out.
      for (const id of changed) if (!runs.has(id)) removed.add(id);
      for (const id of initial.keys()) if (!runs.has(id) && !removed.has(id)) runs.set(id, initial.get(id));
      render(runs);
      onChange(runs, changed);
      const news = changed.map((id) => runs.get(id)).filter((run) => run && known.get(run.id) !== run.status);
      for (const run of news) known.set(run.id, run.status);
      if (news.length && announcer) announcer.textContent = news.map((run) => `Run ${run.id.slice(0, 8)} ${run.status}`).join(". ");
    },
    onStatus: (status) => showConnection(connection, null, status),
  });
  window.addEventListener("pagehide", () => watch.stop());
  return watch;
}

/** The list page: one row per run, newest first; new runs appear, statuses move. */
export function mountRunList({ body, connection, announcer, snapshot, showOwner, runUrl }) {
  const removed = new Set(); // runs deleted since the page was drawn: the last one deleted empties the table
  const render = (runs) => {
    const sorted = newestFirst(runs);
    if (!sorted.length && !removed.size) return;
    body.replaceChildren(
      ...sorted.map((run) =>
        el(
          "tr",
          { "data-run-id": run.id, "data-status": run.status },
          el("td", {}, el("a", { href: runUrl(run.id) }, el("code", {}, run.id.slice(0, 8))), " ", truncate(run.prompt, 40)),
          ...(showOwner ? [el("td", {}, run.owner)] : []),
          el("td", {}, statusBadge(run.status)),
          el("td", { class: "progress-cell" }, ...progressCell(run)),
          el("td", {}, toSecond(run.created_at)),
        ),
      ),
    );
  };
  return watchSummaries({ snapshot, render, connection, announcer, removed });
}

/** The home page's recent runs: the newest `limit`, live (new ones come in on top). */
export function mountRecentRuns({ list, connection, announcer, snapshot, limit, runUrl }) {
  const render = (runs) => {
    const recent = newestFirst(runs).slice(0, limit);
    list.closest("section").hidden = !recent.length;
    list.replaceChildren(
      ...recent.map((run) =>
        el(
          "li",
          { "data-run-id": run.id, "data-status": run.status },
          el("a", { href: runUrl(run.id) }, el("code", {}, run.id.slice(0, 8)), " ", truncate(run.prompt, 60) || "(no prompt)"),
          " ",
          statusBadge(run.status),
        ),
      ),
    );
  };
  return watchSummaries({ snapshot, render, connection, announcer });
}

/**
 * The admin's change list: update the status and progress cells of the rows shown, and add a
 * row for each new run on the list's unfiltered first page (elsewhere a new run would not
 * belong where it would land: the page offers a link to the list instead).
 */
export function mountLiveCells({ root, connection, newRuns }) {
  const unfiltered = !new URLSearchParams(window.location.search).toString();
  const shown = () => new Set([...root.querySelectorAll("[data-run-status]")].map((node) => node.dataset.runStatus));
  // Runs created since the server drew the page are new; older ones not shown belong to other pages.
  const drawnAt = Date.parse(newRuns.dataset.drawnAt);
  const unseen = new Set(); // new runs this page does not show: each counted once, whatever its changes
  const update = (run) => {
    const status = root.querySelector(`[data-run-status="${run.id}"]`);
    if (status) {
      status.textContent = run.status;
      status.className = `status status-${run.status}`;
    }
    const progress = root.querySelector(`[data-run-progress="${run.id}"]`);
    if (progress) progress.replaceChildren(...progressCell(run));
  };
  const add = (run) => {
    const body = root.querySelector("#result_list tbody");
    const model = body && body.querySelector("tr");
    if (!unfiltered || !model) {
      unseen.add(run.id);
      newRuns.hidden = false;
      newRuns.querySelector("[data-count]").textContent = unseen.size === 1 ? "1 new run" : `${unseen.size} new runs`;
      return;
    }
    // A copy of a row the admin drew, its cells filled for this run: same columns, same links.
    const row = model.cloneNode(true);
    const previous = model.querySelector("[data-run-status]").dataset.runStatus;
    const box = row.querySelector("input.action-select"); // absent without actions
    if (box) {
      box.value = run.id;
      box.checked = false;
    }
    row.classList.remove("selected");
    const link = row.querySelector(".field-short_id a");
    link.href = link.getAttribute("href").replace(previous, run.id);
    const code = link.querySelector("code");
    code.textContent = run.id.slice(0, 8);
    code.title = run.id;
    row.querySelector("[data-run-status]").dataset.runStatus = run.id;
    row.querySelector("[data-run-progress]").dataset.runProgress = run.id;
    row.querySelector(".field-owner").textContent = run.owner;
    row.querySelector(".field-created").textContent = toSecond(run.created_at);
    row.querySelector(".field-duration").textContent = "—";
    row.dataset.liveAdded = "";
    body.prepend(row);
    const counter = root.querySelector(".action-counter");
    if (counter) counter.dataset.actionsIcnt = String(Number(counter.dataset.actionsIcnt) + 1);
    recount();
    // "3 runs" under a one-page list counts the added row too (a paged list keeps its links).
    const paginator = root.querySelector(".paginator");
    const count = paginator && paginator.textContent.trim().match(/^(\d+) runs?$/);
    if (count) paginator.textContent = `${Number(count[1]) + 1} runs`;
    update(run);
  };
  // Django's actions.js counts "N of M selected" over the boxes and the total it found when the
  // page loaded, and its select-all checks only those: the rows added here are counted (and
  // selected by select-all) after its own handlers, in its own words.
  const recount = () => {
    const counter = root.querySelector(".action-counter");
    if (!counter) return;
    const boxes = [...root.querySelectorAll("#result_list tbody input.action-select")];
    const selected = boxes.filter((box) => box.checked).length;
    const total = Number(counter.dataset.actionsIcnt);
    const words = window.ngettext ? window.ngettext("%(sel)s of %(cnt)s selected", "%(sel)s of %(cnt)s selected", selected) : "%(sel)s of %(cnt)s selected";
    counter.textContent = window.interpolate ? window.interpolate(words, { sel: selected, cnt: total }, true) : `${selected} of ${total} selected`;
    const toggle = root.querySelector("#action-toggle");
    if (toggle) toggle.checked = selected === boxes.length;
  };
  root.addEventListener("change", (event) => {
    if (event.target.matches?.("input.action-select") && root.querySelector("[data-live-added]")) recount();
  });
  root.addEventListener("click", (event) => {
    if (event.target.id !== "action-toggle" || !root.querySelector("[data-live-added]")) return;
    for (const row of root.querySelectorAll("#result_list tbody tr[data-live-added]")) {
      row.querySelector("input.action-select").checked = event.target.checked;
      row.classList.toggle("selected", event.target.checked);
    }
    recount();
  });
  const watch = watchRuns({
    ...overrides(),
    onChange: (runs, changed) => {
      const present = shown();
      for (const id of changed) {
        const run = runs.get(id);
        if (!run) {
          const status = root.querySelector(`[data-run-status="${id}"]`);
          if (status) status.closest("tr").remove(); // deleted
        } else if (present.has(id)) update(run);
        else if (Date.parse(run.created_at) >= drawnAt) add(run);
      }
    },
    onStatus: (status) => showConnection(connection, null, status),
  });
  window.addEventListener("pagehide", () => watch.stop());
  return watch;
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
  // The server marked the field the error is about: start there.
  const invalid = form.querySelector('[aria-invalid="true"]');
  if (invalid) invalid.focus();
  form.querySelector("#add-step").addEventListener("click", () => {
    const row = steps.querySelectorAll("fieldset.step").length;
    const html = template.innerHTML.replaceAll("__row__", String(row)).replaceAll("__number__", String(row + 1));
    steps.insertAdjacentHTML("beforeend", html);
    const added = steps.lastElementChild;
    wire(added);
    added.querySelector("select").focus();
  });
}
