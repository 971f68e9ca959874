// The run timeline's model: a run's event log → the bars and marks of a waterfall. Pure (no DOM),
// so node's test runner checks it (tests/web/js/) and the page (run-timeline.js) only draws it.
//
//   const model = buildTimeline(events, { createdAt: run.created_at, plan: run.plan, upto: seq, now: Date.now() });
//
// `events` are frames of GET /api/runs/<id>/events/ (or of the run's socket): {type, seq, ts, payload}.
// `upto` (a seq) builds the timeline as it stood once that event was applied — what a watcher saw
// then; bars still open end at that event's time. Without `upto` every event counts and open bars
// end at `now` (a live run).
//
// Per run: its queue wait (created → started) and its execution (started → finished).
// Per step: one bar per attempt, each split into queue wait (the step became due: the run started,
// or the previous step finished → the attempt started) and execution (started → finished, or the
// next attempt taking over). A new attempt is read from the event when it says so (a `step_retried`
// event, or a step whose `attempt`/`attempts` is higher than the one shown) and otherwise inferred
// from a second `step_started` of the same step. Marks: a failed step or run, a cancelled run.

export const STEP_EVENT_STATUS = Object.freeze({
  step_started: "running",
  step_retried: "running",
  step_succeeded: "succeeded",
  step_failed: "failed",
  step_skipped: "skipped",
});

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/** Milliseconds since the epoch of an ISO time, or null. */
export function toMs(iso) {
  if (iso === null || iso === undefined || iso === "") return null;
  const ms = typeof iso === "number" ? iso : Date.parse(iso);
  return Number.isFinite(ms) ? ms : null;
}

/** The attempt number an event states for its step, or null when it states none. */
export function statedAttempt(frame) {
  const payload = frame.payload || {};
  const step = payload.step || {};
  for (const value of [payload.attempt, step.attempt, step.attempts]) {
    if (Number.isInteger(value) && value > 0) return value;
  }
  return null;
}

/** Who executed the attempt, when the event names it (a worker, a claim); else null. */
export function statedWorker(frame) {
  const payload = frame.payload || {};
  const step = payload.step || {};
  for (const value of [payload.worker, step.worker, step.claimed_by, payload.claimed_by]) {
    if (typeof value === "string" && value) return value;
  }
  return null;
}

/** The events in seq order, each once (the page merges the log and the live stream). */
export function orderedEvents(events) {
  const bySeq = new Map();
  for (const frame of events || []) {
    if (frame && Number.isInteger(frame.seq) && frame.seq > 0 && frame.type !== "connected") bySeq.set(frame.seq, frame);
  }
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}

function newAttempt(step, number, frame, startedAt, dueAt) {
  const attempt = {
    step: step.index,
    attempt: number,
    worker: statedWorker(frame),
    dueAt, // the step became due (queue wait starts)
    startedAt, // execution starts
    endedAt: null, // execution ends (null: still open)
    status: "running", // running | succeeded | failed | skipped | lost (taken over by the next attempt)
    startSeq: frame.seq,
    endSeq: null,
    error: "",
  };
  step.attempts.push(attempt);
  return attempt;
}

function stepRow(steps, index, tool) {
  let step = steps.get(index);
  if (!step) {
    step = { index, tool: tool || "", status: "pending", attempts: [], skippedAt: null, error: "" };
    steps.set(index, step);
  }
  if (tool && !step.tool) step.tool = tool;
  return step;
}

/**
 * The timeline as of event `upto` (default: all). Returns
 * {run, steps, marks, origin, end, seq, lastEvent, live}: times in ms since the epoch.
 */
export function buildTimeline(events, { createdAt = null, plan = null, upto = null, now = null } = {}) {
  const ordered = orderedEvents(events);
  const applied = upto === null ? ordered : ordered.filter((frame) => frame.seq <= upto);
  const run = { status: "queued", createdAt: toMs(createdAt), startedAt: null, finishedAt: null, error: "" };
  const steps = new Map();
  const marks = [];
  (plan || []).forEach((spec, index) => stepRow(steps, index, spec && spec.tool));
  // When the next step became due: the run started, then each finished step.
  let dueAt = null;

  for (const frame of applied) {
    const at = toMs(frame.ts);
    const payload = frame.payload || {};
    if (frame.type === "run_status") {
      run.status = payload.status || run.status;
      run.startedAt = toMs(payload.started_at) ?? run.startedAt ?? at;
      if (dueAt === null) dueAt = run.startedAt;
      continue;
    }
    if (frame.type === "run_completed") {
      run.status = payload.status;
      run.startedAt = toMs(payload.started_at) ?? run.startedAt;
      run.finishedAt = toMs(payload.finished_at) ?? at;
      run.error = payload.error || "";
      if (payload.status === "failed" || payload.status === "cancelled") {
        marks.push({ kind: payload.status === "failed" ? "failure" : "cancel", scope: "run", at: run.finishedAt, seq: frame.seq, text: run.error });
      }
      continue;
    }
    const status = STEP_EVENT_STATUS[frame.type];
    if (!status || !payload.step) continue;
    const data = payload.step;
    const step = stepRow(steps, data.index, data.tool);
    const current = step.attempts[step.attempts.length - 1] || null;
    const stated = statedAttempt(frame);
    const startedAt = toMs(data.started_at) ?? at;
    if (status === "running") {
      const isNew =
        !current ||
        frame.type === "step_retried" ||
        (stated !== null ? stated > current.attempt : current.startSeq !== frame.seq);
      if (isNew) {
        if (current && current.endedAt === null) {
          // The previous attempt's executor was lost: it ends where the next one took over.
          current.endedAt = startedAt;
          current.endSeq = frame.seq;
          current.status = "lost";
        }
        const number = stated !== null && (!current || stated > current.attempt) ? stated : (current ? current.attempt + 1 : 1);
        // A retry is due the moment its predecessor was lost (the same instant, as far as the log knows).
        const due = current ? current.endedAt : (dueAt ?? run.startedAt ?? startedAt);
        newAttempt(step, number, frame, startedAt, Math.min(due ?? startedAt, startedAt));
      } else if (statedWorker(frame)) {
        current.worker = statedWorker(frame);
      }
      step.status = "running";
      continue;
    }
    // A finishing event: it closes the open attempt (a step skipped before it started has none).
    const finishedAt = toMs(data.finished_at) ?? at;
    step.status = status;
    step.error = data.error || "";
    if (current && current.endedAt === null && (toMs(data.started_at) !== null || status !== "skipped")) {
      current.endedAt = finishedAt;
      current.endSeq = frame.seq;
      current.status = status;
      current.error = step.error;
      if (statedWorker(frame)) current.worker = statedWorker(frame);
    } else if (!current && toMs(data.started_at) !== null) {
      // Its start is not in what we have (pruned): the bar still shows the execution the step reports.
      const attempt = newAttempt(step, stated ?? 1, frame, toMs(data.started_at), toMs(data.started_at));
      attempt.endedAt = finishedAt;
      attempt.endSeq = frame.seq;
      attempt.status = status;
      attempt.error = step.error;
    }
    if (status === "skipped") step.skippedAt = finishedAt;
    if (status === "failed") marks.push({ kind: "failure", scope: "step", step: step.index, at: finishedAt, seq: frame.seq, text: step.error });
    if (status !== "skipped") dueAt = finishedAt;
  }

  const lastEvent = applied.length ? applied[applied.length - 1] : null;
  const live = !TERMINAL.has(run.status);
  // Open bars end at the moment shown: the replayed event's time, or now.
  const openEnd = upto !== null ? (lastEvent ? toMs(lastEvent.ts) : run.createdAt) : (now ?? (lastEvent ? toMs(lastEvent.ts) : run.createdAt));
  const times = [run.createdAt, run.startedAt, run.finishedAt];
  for (const step of steps.values()) {
    for (const attempt of step.attempts) times.push(attempt.dueAt, attempt.startedAt, attempt.endedAt);
    times.push(step.skippedAt);
  }
  for (const frame of applied) times.push(toMs(frame.ts));
  const known = times.filter((t) => t !== null && t !== undefined);
  const origin = known.length ? Math.min(...known) : openEnd;
  let end = known.length ? Math.max(...known) : origin;
  if (live && openEnd !== null && openEnd !== undefined) end = Math.max(end, openEnd);
  return {
    run: { ...run, openEnd: live ? openEnd : run.finishedAt },
    steps: [...steps.values()].sort((a, b) => a.index - b.index),
    marks,
    origin,
    end: end ?? origin,
    seq: lastEvent ? lastEvent.seq : 0,
    lastEvent,
    live,
  };
}

/**
 * Frames rebuilt from a run as GET /api/runs/<id>/ shows it, for a run whose log was pruned:
 * its own and its steps' recorded times, one attempt per step (the snapshot keeps no earlier
 * attempt), in the order they happened. Marked `rebuilt`: they are not the log, and have no seq
 * a watcher saw.
 */
export function eventsFromSnapshot(run) {
  const frames = [];
  const push = (type, ts, payload) => ts && frames.push({ type, ts, payload, rebuilt: true });
  if (!run) return frames;
  push("run_status", run.started_at, { status: "processing", started_at: run.started_at });
  for (const step of [...(run.steps || [])].sort((a, b) => a.index - b.index)) {
    if (step.started_at) push("step_started", step.started_at, { step: { ...step, status: "running", output: null, error: "", finished_at: null } });
    const type = { succeeded: "step_succeeded", failed: "step_failed", skipped: "step_skipped" }[step.status];
    if (type) push(type, step.finished_at, { step });
  }
  if (TERMINAL.has(run.status)) {
    push("run_completed", run.finished_at, { status: run.status, output: run.output, error: run.error, started_at: run.started_at, finished_at: run.finished_at });
  }
  frames.sort((a, b) => Date.parse(a.ts) - Date.parse(b.ts));
  frames.forEach((frame, position) => (frame.seq = position + 1));
  return frames;
}

/**
 * The segments to draw, relative to `origin` (ms): per row its queue wait and execution.
 * Rows: the run's, then each step's attempts (a step without an attempt: one empty row).
 */
export function timelineRows(model) {
  const end = (t, open) => (t === null || t === undefined ? open : t);
  const rows = [];
  const run = model.run;
  const runStart = run.startedAt;
  rows.push({
    kind: "run",
    key: "run",
    label: "Run",
    status: run.status,
    wait: run.createdAt !== null ? { from: run.createdAt, to: end(runStart, run.openEnd) } : null,
    exec: runStart !== null ? { from: runStart, to: end(run.finishedAt, run.openEnd) } : null,
    open: runStart === null ? run.finishedAt === null : run.finishedAt === null,
  });
  for (const step of model.steps) {
    if (!step.attempts.length) {
      rows.push({ kind: "step", key: `step-${step.index}`, step: step.index, tool: step.tool, attempt: null, status: step.status, wait: null, exec: null, skippedAt: step.skippedAt, open: false });
      continue;
    }
    for (const attempt of step.attempts) {
      const open = attempt.endedAt === null;
      rows.push({
        kind: "step",
        key: `step-${step.index}-${attempt.attempt}`,
        step: step.index,
        tool: step.tool,
        attempt: attempt.attempt,
        attempts: step.attempts.length,
        worker: attempt.worker,
        status: attempt.status,
        error: attempt.error,
        wait: attempt.dueAt !== null && attempt.dueAt < attempt.startedAt ? { from: attempt.dueAt, to: attempt.startedAt } : null,
        exec: { from: attempt.startedAt, to: end(attempt.endedAt, run.openEnd ?? attempt.startedAt) },
        open,
        startSeq: attempt.startSeq,
        endSeq: attempt.endSeq,
      });
    }
  }
  return rows;
}

/** A duration for people: 0.42 s, 12.3 s, 2 min 05 s. */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  const seconds = Math.max(0, ms) / 1000;
  if (seconds < 1) return `${seconds.toFixed(2)} s`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`;
}

/** One line about an event, for the replay's readout: "step 2 (echo) started, attempt 2".
 * With the `model` built up to it, an attempt the event does not state (inferred) is named too. */
export function describeEvent(frame, model = null) {
  if (!frame) return "before the first event: the run is queued";
  const payload = frame.payload || {};
  if (frame.type === "run_status") return `run ${payload.status}`;
  if (frame.type === "run_completed") return `run ${payload.status}${payload.error ? `: ${payload.error}` : ""}`;
  const step = payload.step;
  if (!step) return frame.type;
  const verb = { step_started: "started", step_retried: "retried", step_succeeded: "succeeded", step_failed: "failed", step_skipped: "skipped" }[frame.type] || frame.type;
  const inferred = model && (model.steps.find((s) => s.index === step.index)?.attempts || []).find((a) => a.startSeq === frame.seq);
  const attempt = statedAttempt(frame) ?? (inferred ? inferred.attempt : null);
  const worker = statedWorker(frame);
  const extra = [attempt && attempt > 1 ? `attempt ${attempt}` : "", worker ? `on ${worker}` : "", frame.type === "step_failed" && step.error ? step.error : ""].filter(Boolean);
  return `step ${step.index + 1} (${step.tool}) ${verb}${extra.length ? ", " + extra.join(", ") : ""}`;
}
