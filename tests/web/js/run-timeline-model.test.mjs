// Unit tests of the run timeline's model: `node --test tests/web/js/` (tests/web/test_timeline_js.py runs them under pytest).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  buildTimeline,
  describeEvent,
  eventsFromSnapshot,
  formatDuration,
  orderedEvents,
  timelineRows,
} from "../../../web/static/web/run-timeline-model.js";

const T0 = Date.parse("2026-12-04T10:00:00.000Z");
const at = (seconds) => new Date(T0 + seconds * 1000).toISOString();
const PLAN = [{ tool: "wait", args: { seconds: 1 } }, { tool: "echo", args: { text: "hi" } }];

// Frames as the server writes them (realtime/events/log.py): the step's representation, the run's times.
function stepFrame(seq, type, index, { started, finished = null, status, error = "", ts, ...extra }) {
  const step = { index, tool: PLAN[index].tool, args: PLAN[index].args, status, output: null, error, started_at: started === null ? null : at(started), finished_at: finished === null ? null : at(finished), ...extra };
  return { type, run_id: "r", seq, ts: at(ts ?? finished ?? started), payload: { step } };
}
const started = (seq, index, seconds, extra = {}) => stepFrame(seq, "step_started", index, { started: seconds, status: "running", ...extra });
const succeeded = (seq, index, from, to) => stepFrame(seq, "step_succeeded", index, { started: from, finished: to, status: "succeeded" });
const runStarted = (seq, seconds) => ({ type: "run_status", run_id: "r", seq, ts: at(seconds), payload: { status: "processing", started_at: at(seconds) } });
const runCompleted = (seq, status, from, to, error = "") => ({ type: "run_completed", run_id: "r", seq, ts: at(to), payload: { status, output: null, error, started_at: at(from), finished_at: at(to) } });

const stepRows = (model) => timelineRows(model).filter((row) => row.kind === "step");
const span = (segment) => segment && [(segment.from - T0) / 1000, (segment.to - T0) / 1000];

test("queue wait and execution: the run's (created → started → finished) and each step's", () => {
  const events = [runStarted(1, 2), started(2, 0, 2.5), succeeded(3, 0, 2.5, 3.5), started(4, 1, 4), succeeded(5, 1, 4, 4.25), runCompleted(6, "succeeded", 2, 4.5)];
  const model = buildTimeline(events, { createdAt: at(0), plan: PLAN });
  const [run, ...steps] = timelineRows(model);
  assert.deepEqual([span(run.wait), span(run.exec)], [[0, 2], [2, 4.5]]);
  assert.equal(run.status, "succeeded");
  assert.deepEqual(steps.map((row) => [row.step, row.attempt, span(row.wait), span(row.exec), row.status]), [
    [0, 1, [2, 2.5], [2.5, 3.5], "succeeded"], // due when the run started
    [1, 1, [3.5, 4], [4, 4.25], "succeeded"], // due when step 0 finished
  ]);
  assert.deepEqual(model.marks, []);
  assert.equal(model.live, false);
  assert.deepEqual([(model.origin - T0) / 1000, (model.end - T0) / 1000], [0, 4.5]);
});

test("a retried step inferred from a second step_started: two attempts, two bars, the first lost", () => {
  const events = [runStarted(1, 1), started(2, 0, 1), started(3, 0, 6), succeeded(4, 0, 6, 7), started(5, 1, 7), succeeded(6, 1, 7, 8), runCompleted(7, "succeeded", 1, 8)];
  const rows = stepRows(buildTimeline(events, { createdAt: at(0), plan: PLAN }));
  assert.deepEqual(rows.map((row) => [row.step, row.attempt, row.status, span(row.exec)]), [
    [0, 1, "lost", [1, 6]], // its executor was lost; the next attempt took over at 6
    [0, 2, "succeeded", [6, 7]],
    [1, 1, "succeeded", [7, 8]],
  ]);
  assert.equal(rows[0].attempts, 2);
  assert.equal(rows[1].wait, null); // due the instant its predecessor was lost
});

test("a retried step as the events state it: step_retried, attempt numbers and workers read from the payload", () => {
  const events = [
    runStarted(1, 1),
    started(2, 0, 1, { attempts: 1, worker: "celery@a" }),
    stepFrame(3, "step_retried", 0, { started: 5, status: "running", attempts: 2, worker: "celery@b" }),
    stepFrame(4, "step_retried", 0, { started: 9, status: "running", attempt: 3, worker: "celery@c" }),
    stepFrame(5, "step_failed", 0, { started: 9, finished: 10, status: "failed", error: "boom", attempts: 3 }),
    stepFrame(6, "step_skipped", 1, { started: null, finished: 10, status: "skipped" }),
    runCompleted(7, "failed", 1, 10, "step 0 (wait) failed: boom"),
  ];
  const rows = stepRows(buildTimeline(events, { createdAt: at(0), plan: PLAN }));
  assert.deepEqual(rows.map((row) => [row.step, row.attempt, row.worker, row.status, span(row.exec)]), [
    [0, 1, "celery@a", "lost", [1, 5]],
    [0, 2, "celery@b", "lost", [5, 9]],
    [0, 3, "celery@c", "failed", [9, 10]],
    [1, null, undefined, "skipped", null],
  ]);
  // A repeated step_started stating the same attempt is no new attempt.
  const repeat = [runStarted(1, 1), started(2, 0, 1, { attempts: 1 }), started(3, 0, 1, { attempts: 1, worker: "w" })];
  assert.deepEqual(stepRows(buildTimeline(repeat, { plan: PLAN })).map((row) => [row.attempt, row.worker]), [[1, "w"], [null, undefined]]);
});

test("each attempt's worker as the server's step shape carries it: every step event names the current attempt's", () => {
  // runs.serializers.StepSerializer: `worker` after `attempts`, "" for a step that never started.
  const events = [
    runStarted(1, 1),
    started(2, 0, 1, { attempts: 1, worker: "first@host" }),
    stepFrame(3, "step_retried", 0, { started: 5, status: "running", attempts: 2, worker: "second@host" }),
    stepFrame(4, "step_succeeded", 0, { started: 5, finished: 6, status: "succeeded", attempts: 2, worker: "second@host" }),
    stepFrame(5, "step_skipped", 1, { started: null, finished: 7, status: "skipped", attempts: 1, worker: "" }),
    runCompleted(6, "cancelled", 1, 7),
  ];
  const model = buildTimeline(events, { createdAt: at(0), plan: PLAN });
  assert.deepEqual(stepRows(model).map((row) => [row.step, row.attempt, row.worker, row.status]), [
    [0, 1, "first@host", "lost"],
    [0, 2, "second@host", "succeeded"],
    [1, null, undefined, "skipped"],
  ]);
  assert.equal(describeEvent(events[2], model), "step 1 (wait) retried, attempt 2, on second@host");
  // A pruned log rebuilt from the run's steps still names the worker of the attempt it shows.
  const run = { status: "succeeded", created_at: at(0), started_at: at(1), finished_at: at(6), steps: [events[3].payload.step] };
  assert.deepEqual(stepRows(buildTimeline(eventsFromSnapshot(run), { plan: PLAN })).map((row) => [row.attempt, row.worker]), [[2, "second@host"], [null, undefined]]);
});

test("a failed run: a failure mark on the step and on the run, the rest skipped", () => {
  const events = [
    runStarted(1, 1),
    started(2, 0, 1),
    stepFrame(3, "step_failed", 0, { started: 1, finished: 2, status: "failed", error: "ToolError: no" }),
    stepFrame(4, "step_skipped", 1, { started: null, finished: 2, status: "skipped" }),
    runCompleted(5, "failed", 1, 2, "step 0 (wait) failed: ToolError: no"),
  ];
  const model = buildTimeline(events, { createdAt: at(0), plan: PLAN });
  assert.deepEqual(model.marks.map((m) => [m.kind, m.scope, m.step, (m.at - T0) / 1000, m.seq, m.text]), [
    ["failure", "step", 0, 2, 3, "ToolError: no"],
    ["failure", "run", undefined, 2, 5, "step 0 (wait) failed: ToolError: no"],
  ]);
  const rows = stepRows(model);
  assert.deepEqual(rows.map((row) => [row.step, row.status, span(row.exec)]), [[0, "failed", [1, 2]], [1, "skipped", null]]);
  assert.equal((rows[1].skippedAt - T0) / 1000, 2);
  assert.equal(model.run.status, "failed");
});

test("a cancelled run: a cancel mark, the running step's bar ends skipped where it was cut off", () => {
  const events = [
    runStarted(1, 1),
    started(2, 0, 1),
    stepFrame(3, "step_skipped", 0, { started: 1, finished: 3, status: "skipped" }),
    stepFrame(4, "step_skipped", 1, { started: null, finished: 3, status: "skipped" }),
    runCompleted(5, "cancelled", 1, 3),
  ];
  const model = buildTimeline(events, { createdAt: at(0), plan: PLAN });
  assert.deepEqual(model.marks.map((m) => [m.kind, m.scope, (m.at - T0) / 1000, m.seq]), [["cancel", "run", 3, 5]]);
  assert.deepEqual(stepRows(model).map((row) => [row.step, row.status, span(row.exec)]), [[0, "skipped", [1, 3]], [1, "skipped", null]]);
  // Cancelled while queued: only the queue wait, ended by the cancel.
  const queued = buildTimeline([stepFrame(1, "step_skipped", 0, { started: null, finished: 4, status: "skipped" }), { type: "run_completed", seq: 3, ts: at(4), payload: { status: "cancelled", started_at: null, finished_at: at(4), error: "" } }], { createdAt: at(0), plan: PLAN });
  const [run] = timelineRows(queued);
  assert.deepEqual([span(run.wait), run.exec], [[0, 4], null]);
  assert.equal(queued.marks[0].kind, "cancel");
});

test("live: open bars end now; replay (upto) shows the timeline as of an event, open bars ending at its time", () => {
  const events = [runStarted(1, 1), started(2, 0, 1.5), succeeded(3, 0, 1.5, 3), started(4, 1, 3.5)];
  const live = buildTimeline(events, { createdAt: at(0), plan: PLAN, now: T0 + 10_000 });
  assert.equal(live.live, true);
  const rows = stepRows(live);
  assert.deepEqual(rows.map((row) => [row.step, row.open, span(row.exec)]), [[0, false, [1.5, 3]], [1, true, [3.5, 10]]]);
  assert.equal((live.end - T0) / 1000, 10);

  const asOf2 = buildTimeline(events, { createdAt: at(0), plan: PLAN, upto: 2, now: T0 + 10_000 });
  assert.equal(asOf2.seq, 2);
  assert.equal(asOf2.lastEvent.type, "step_started");
  assert.deepEqual(stepRows(asOf2).map((row) => [row.step, row.status, row.open, span(row.exec)]), [
    [0, "running", true, [1.5, 1.5]],
    [1, "pending", false, null],
  ]);
  const asOf0 = buildTimeline(events, { createdAt: at(0), plan: PLAN, upto: 0 });
  assert.equal(asOf0.seq, 0);
  assert.equal(asOf0.run.status, "queued");
  assert.deepEqual(stepRows(asOf0).map((row) => row.status), ["pending", "pending"]);
});

test("events merged from the log and the stream: each seq once, in order; connected frames ignored", () => {
  const events = [started(2, 0, 1), runStarted(1, 1), started(2, 0, 1), { type: "connected", seq: 2, payload: {} }];
  assert.deepEqual(orderedEvents(events).map((f) => f.seq), [1, 2]);
  assert.equal(stepRows(buildTimeline(events, { plan: PLAN })).filter((row) => row.step === 0).length, 1);
});

test("readouts: durations and event descriptions", () => {
  assert.deepEqual([formatDuration(420), formatDuration(12_340), formatDuration(125_000), formatDuration(null)], ["0.42 s", "12.3 s", "2 min 05 s", "—"]);
  assert.equal(describeEvent(null), "before the first event: the run is queued");
  assert.equal(describeEvent(runStarted(1, 1)), "run processing");
  assert.equal(describeEvent(started(2, 1, 1, { attempts: 2, worker: "celery@b" })), "step 2 (echo) started, attempt 2, on celery@b");
  assert.equal(describeEvent(runCompleted(5, "failed", 1, 2, "boom")), "run failed: boom");
  // An attempt the event does not state is named from the model built up to it.
  const events = [runStarted(1, 1), started(2, 0, 1), started(3, 0, 6)];
  assert.equal(describeEvent(events[2], buildTimeline(events, { plan: PLAN, upto: 3 })), "step 1 (wait) started, attempt 2");
  assert.equal(describeEvent(events[1], buildTimeline(events, { plan: PLAN, upto: 2 })), "step 1 (wait) started");
});

test("a pruned log: the bars rebuilt from the run's recorded times, one attempt per step", () => {
  const run = {
    status: "failed", created_at: at(0), started_at: at(1), finished_at: at(4), error: "step 1 (echo) failed: no", output: null, plan: PLAN,
    steps: [
      { index: 1, tool: "echo", status: "failed", error: "no", started_at: at(3), finished_at: at(4) },
      { index: 0, tool: "wait", status: "succeeded", error: "", started_at: at(1.5), finished_at: at(3) },
    ],
  };
  const frames = eventsFromSnapshot(run);
  assert.deepEqual(frames.map((f) => [f.seq, f.type, f.rebuilt]), [
    [1, "run_status", true], [2, "step_started", true], [3, "step_succeeded", true], [4, "step_started", true], [5, "step_failed", true], [6, "run_completed", true],
  ]);
  const model = buildTimeline(frames, { createdAt: run.created_at, plan: PLAN });
  const [runRow, ...steps] = timelineRows(model);
  assert.deepEqual([span(runRow.wait), span(runRow.exec), runRow.status], [[0, 1], [1, 4], "failed"]);
  assert.deepEqual(steps.map((row) => [row.step, row.attempt, row.status, span(row.wait), span(row.exec)]), [
    [0, 1, "succeeded", [1, 1.5], [1.5, 3]],
    [1, 1, "failed", null, [3, 4]],
  ]);
  assert.deepEqual(model.marks.map((m) => [m.kind, m.scope]), [["failure", "step"], ["failure", "run"]]);
  assert.deepEqual(eventsFromSnapshot({ status: "queued", created_at: at(0), started_at: null, steps: [] }), []);
});
