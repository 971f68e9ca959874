// Unit tests of the browser client: `node --test tests/realtime/js/` (test_client_js.py runs them under pytest).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  applyListFrame,
  applyRunFrame,
  backoffDelay,
  DEFAULTS,
  runProgress,
  watchRun,
  watchRuns,
} from "../../../realtime/static/realtime/quikday-realtime.js";

const RUN_ID = "3f1c9a4e-8a7b-4c2d-9e0f-1a2b3c4d5e6f";
const BASE = "http://app.test/";

// --- Fakes: a manual clock, a scriptable WebSocket, a fetch with canned answers -------------

class Clock {
  constructor() {
    this.now = 0;
    this.timers = new Map();
    this.next = 1;
  }
  setTimeout = (fn, ms) => {
    const id = this.next++;
    this.timers.set(id, { at: this.now + ms, fn });
    return id;
  };
  clearTimeout = (id) => this.timers.delete(id);
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
      await flush();
    }
    this.now = end;
    await flush();
  }
}

async function flush() {
  // A macrotask: every pending promise chain (fetch → json → apply) settles first.
  await new Promise((resolve) => setImmediate(resolve));
}

// Two sockets in a row fail before `connected`: the client then asks over HTTP (its polling fallback).
async function twoSocketsFailBeforeConnected(h) {
  h.sockets[0].serverClose(1006);
  await h.clock.advance(h.clock.pending()[0]);
  h.sockets[1].serverClose(1006);
  await flush();
}

function socketClass() {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 1;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    // test side
    frame(frame) {
      this.onmessage && this.onmessage({ data: JSON.stringify(frame) });
    }
    serverClose(code, reason = "") {
      this.readyState = 3;
      this.onclose && this.onclose({ code, reason });
    }
  }
  return { FakeSocket, sockets };
}

function snapshotRun(seq = 0, steps = [], status = "queued") {
  return {
    id: RUN_ID,
    status,
    plan: [
      { tool: "wait", args: { seconds: 1 } },
      { tool: "echo", args: { text: "hi" } },
      { tool: "wait", args: { seconds: 1 } },
    ],
    output: null,
    error: "",
    started_at: null,
    finished_at: null,
    seq,
    steps,
  };
}

const connected = (seq, run = snapshotRun(seq), mode = "push") => ({
  type: "connected",
  run_id: RUN_ID,
  seq,
  ts: "",
  payload: { mode, recovered: true, run },
});
const step = (index, status) => ({ index, tool: "wait", args: {}, status, output: null, error: "", started_at: "t", finished_at: null });
const event = (seq, type, payload) => ({ type, run_id: RUN_ID, seq, ts: "", payload });
const runStatus = (seq) => event(seq, "run_status", { status: "processing", started_at: "t0" });
const stepEvent = (seq, index, status) =>
  event(seq, { running: "step_started", succeeded: "step_succeeded", failed: "step_failed", skipped: "step_skipped" }[status], {
    step: step(index, status),
  });
const completed = (seq, status = "succeeded") =>
  event(seq, "run_completed", { status, output: [], error: "", started_at: "t0", finished_at: "t9" });

// The whole history of a three-step run that succeeds: seq 1..8.
const HISTORY = [
  runStatus(1),
  stepEvent(2, 0, "running"),
  stepEvent(3, 0, "succeeded"),
  stepEvent(4, 1, "running"),
  stepEvent(5, 1, "succeeded"),
  stepEvent(6, 2, "running"),
  stepEvent(7, 2, "succeeded"),
  completed(8),
];

function harness(extra = {}) {
  const clock = new Clock();
  const { FakeSocket, sockets } = socketClass();
  const statuses = [];
  const changes = [];
  const fetches = [];
  const answers = extra.answers || (() => Promise.reject(new TypeError("network down")));
  const options = {
    baseUrl: BASE,
    WebSocket: FakeSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    ignoreBrowserNetwork: true,
    fetch: (url) => {
      fetches.push(url);
      return answers(url);
    },
    onStatus: (s) => statuses.push(s),
    onChange: (run) => changes.push(run),
    ...extra.options,
  };
  return { clock, sockets, statuses, changes, fetches, options };
}

const json = (body, status = 200) => Promise.resolve({ ok: status < 400, status, json: () => Promise.resolve(body) });

// --- The reducer --------------------------------------------------------------------------

test("the reducer applies connected and every event type like docs/protocol.md", () => {
  let run = applyRunFrame(null, connected(0));
  assert.equal(run.status, "queued");
  for (const frame of HISTORY) run = applyRunFrame(run, frame);
  assert.equal(run.status, "succeeded");
  assert.equal(run.seq, 8);
  assert.equal(run.finished_at, "t9");
  assert.deepEqual(
    run.steps.map((s) => [s.index, s.status]),
    [
      [0, "succeeded"],
      [1, "succeeded"],
      [2, "succeeded"],
    ],
  );
});

test("the reducer ignores a seq it already has, and keeps steps by index", () => {
  let run = applyRunFrame(null, connected(3, snapshotRun(3, [step(0, "succeeded")], "processing")));
  const same = applyRunFrame(run, stepEvent(2, 0, "running"));
  assert.equal(same, run, "an old event returns the copy itself");
  run = applyRunFrame(run, stepEvent(5, 2, "skipped"));
  run = applyRunFrame(run, stepEvent(4, 1, "failed"));
  assert.equal(run.seq, 5, "a lower seq than the copy's is ignored");
  assert.deepEqual(
    run.steps.map((s) => s.index),
    [0, 2],
  );
  const failed = applyRunFrame(null, connected(1, snapshotRun(1, [step(1, "failed"), step(0, "succeeded")])));
  const skipped = applyRunFrame(failed, stepEvent(2, 2, "skipped"));
  assert.deepEqual(
    skipped.steps.map((s) => s.index),
    [1, 0, 2].sort(),
  );
  assert.equal(applyRunFrame(skipped, { type: "pong", seq: 9 }), skipped);
});

test("progress counts succeeded of total; failed and skipped are not done", () => {
  const run = snapshotRun(5, [step(0, "succeeded"), step(1, "failed"), step(2, "skipped")], "failed");
  assert.deepEqual(runProgress(run), { total: 3, succeeded: 1, failed: 1, skipped: 1, running: 0, percent: 33 });
});

test("the list reducer keeps the newest summary of each run", () => {
  const runs = new Map();
  const a = (seq, status) => ({ id: "a", seq, status });
  assert.deepEqual(applyListFrame(runs, { type: "connected", payload: { runs: [a(2, "processing"), { id: "b", seq: 0 }] } }), ["a", "b"]);
  assert.deepEqual(applyListFrame(runs, { type: "run_summary", payload: { run: a(1, "processing") } }), []);
  assert.deepEqual(applyListFrame(runs, { type: "run_summary", payload: { run: a(5, "succeeded") } }), ["a"]);
  // A reconnect's snapshot older than what the page has changes nothing.
  assert.deepEqual(applyListFrame(runs, { type: "connected", payload: { runs: [a(4, "processing")] } }), []);
  assert.equal(runs.get("a").status, "succeeded");
});

test("the list reducer drops a deleted run, and no later summary brings it back", () => {
  const runs = new Map();
  const gone = new Set();
  const a = (seq) => ({ id: "a", seq, status: "processing" });
  applyListFrame(runs, { type: "connected", payload: { runs: [a(2), { id: "b", seq: 0 }] } }, gone);
  assert.deepEqual(applyListFrame(runs, { type: "run_deleted", run_id: "a", seq: 0, payload: {} }, gone), ["a"]);
  assert.deepEqual([...runs.keys()], ["b"]);
  assert.deepEqual(applyListFrame(runs, { type: "run_summary", payload: { run: a(3) } }, gone), []);
  assert.deepEqual(applyListFrame(runs, { type: "connected", payload: { runs: [a(4)] } }, gone), []);
  assert.deepEqual(applyListFrame(runs, { type: "run_deleted", run_id: "a", seq: 0, payload: {} }, gone), []);
  assert.deepEqual([...runs.keys()], ["b"]);
});

// --- Backoff ------------------------------------------------------------------------------

test("backoff is exponential with full jitter and a ceiling", () => {
  assert.equal(backoffDelay(0, { random: () => 0.999 }), 499);
  assert.equal(backoffDelay(3, { random: () => 0.5 }), 2000);
  assert.equal(backoffDelay(20, { random: () => 0.999 }), 14985);
  assert.equal(backoffDelay(4, { random: () => 0 }), 0);
  const seen = new Set(Array.from({ length: 50 }, () => backoffDelay(2)));
  assert.ok(seen.size > 10, "real randomness spreads the delays");
  for (const d of seen) assert.ok(d >= 0 && d < 2000);
});

// --- watchRun: reconnects and resume ------------------------------------------------------------

test("reconnects with backoff and ?since=, and every step is seen exactly once", async () => {
  const h = harness();
  const watch = watchRun(RUN_ID, h.options);
  await flush();
  assert.equal(h.sockets.length, 1);
  assert.equal(h.sockets[0].url, `ws://app.test/ws/runs/${RUN_ID}/`);
  h.sockets[0].frame(connected(0));
  for (const f of HISTORY.slice(0, 3)) h.sockets[0].frame(f);
  assert.equal(h.statuses.at(-1).state, "live");
  assert.equal(h.statuses.at(-1).mode, "push");

  // The server goes away mid-run (Daphne restarting: 1012, or the network: 1006).
  h.sockets[0].serverClose(1006);
  assert.equal(h.statuses.at(-1).state, "reconnecting");
  assert.deepEqual(h.clock.pending(), [250], "first retry: random 0.5 of 500 ms");
  await h.clock.advance(250);
  assert.equal(h.sockets.length, 2);
  assert.equal(h.sockets[1].url, `ws://app.test/ws/runs/${RUN_ID}/?since=3`);

  // It fails again before connecting: the delay doubles.
  h.sockets[1].serverClose(1006);
  await h.clock.advance(0);
  const retry = h.clock.pending()[0];
  assert.equal(retry, 500);
  assert.equal(h.statuses.at(-1).state, "reconnecting");
  assert.deepEqual(h.fetches, [], "one socket that never connected is not yet a reason to poll");
  await h.clock.advance(retry);
  const socket = h.sockets.at(-1);
  assert.equal(h.sockets.length, 3);
  assert.equal(socket.url, `ws://app.test/ws/runs/${RUN_ID}/?since=3`);
  // The server resumes: connected (seq 5, snapshot includes steps 0 and 1 running), backlog 4, 5, then live.
  const snap = applyRunFrame(applyRunFrame(applyRunFrame(null, connected(3, snapshotRun(3, [step(0, "succeeded")], "processing"))), HISTORY[3]), HISTORY[4]);
  socket.frame(connected(5, snap));
  socket.frame(HISTORY[3]); // backlog already in the snapshot: ignored
  socket.frame(HISTORY[4]);
  for (const f of HISTORY.slice(5)) socket.frame(f);
  const run = watch.run();
  assert.equal(run.status, "succeeded");
  assert.deepEqual(
    run.steps.map((s) => [s.index, s.status]),
    [
      [0, "succeeded"],
      [1, "succeeded"],
      [2, "succeeded"],
    ],
  );
  const seqs = h.changes.map((r) => r.seq);
  assert.deepEqual(seqs, [0, 1, 2, 3, 5, 6, 7, 8], "each change once, in order");
  assert.equal(h.statuses.at(-1).state, "closed");
  assert.equal(h.statuses.at(-1).reason, "finished");
  assert.deepEqual(h.clock.pending(), [], "nothing scheduled after the end");
  // The server's own 1000 after run_completed reaches nobody and reconnects nothing.
  socket.serverClose(1000);
  await h.clock.advance(60000);
  assert.equal(h.sockets.length, 3);
});

test("a successful connection resets the backoff", async () => {
  const h = harness();
  watchRun(RUN_ID, h.options);
  await flush();
  h.sockets[0].serverClose(1006);
  await h.clock.advance(h.clock.pending()[0]);
  h.sockets[1].frame(connected(0));
  h.sockets[1].serverClose(1006);
  assert.deepEqual(h.clock.pending(), [250]);
});

test("a server restarting (1012) spreads the reconnects over restartSpreadMs, then resumes with ?since=", async () => {
  const delays = [];
  for (const random of [0, 0.5, 0.999]) {
    const h = harness({ options: { random: () => random } });
    watchRun(RUN_ID, h.options);
    await flush();
    h.sockets[0].frame(connected(0));
    for (const f of HISTORY.slice(0, 3)) h.sockets[0].frame(f);
    h.sockets[0].serverClose(1012, "service restart");
    assert.equal(h.statuses.at(-1).state, "reconnecting");
    const [delay] = h.clock.pending();
    delays.push(delay);
    await h.clock.advance(delay);
    assert.equal(h.sockets.length, 2);
    assert.equal(h.sockets[1].url, `ws://app.test/ws/runs/${RUN_ID}/?since=3`);
  }
  // Uniform over [0, 5 s): a restarting process's clients do not all come back in the same half second.
  assert.deepEqual(delays, [0, 2500, 4995]);
});

test("an idle socket pings well within the 55 s after which Heroku's router drops it", () => {
  assert.ok(DEFAULTS.pingIntervalMs + DEFAULTS.pongTimeoutMs < 55000);
});

for (const [code, reason] of [
  [4400, "malformed since"],
  [4401, "not authenticated"],
  [4403, "not your run"],
  [4404, "no such run"],
  [1009, null],
  [4009, "a client frame may have at most 65536 bytes"],
]) {
  test(`close code ${code} stops for good with a reason`, async () => {
    const h = harness();
    watchRun(RUN_ID, h.options);
    await flush();
    if (reason) h.sockets[0].frame({ type: "error", run_id: RUN_ID, seq: 0, ts: "", payload: { code: String(code), message: reason } });
    h.sockets[0].serverClose(code);
    const last = h.statuses.at(-1);
    assert.equal(last.state, "closed");
    assert.equal(last.code, code);
    assert.equal(last.reason, reason || "a frame sent to the server was too large");
    await h.clock.advance(120000);
    assert.equal(h.sockets.length, 1, "no reconnect");
  });
}

test("a finished run's snapshot ends the watch at once", async () => {
  const h = harness();
  watchRun(RUN_ID, h.options);
  await flush();
  h.sockets[0].frame(connected(8, snapshotRun(8, [], "succeeded")));
  assert.equal(h.statuses.at(-1).state, "closed");
  assert.deepEqual(h.clock.pending(), []);
});

test("an idle socket pings; a missing pong means a dead connection", async () => {
  const h = harness();
  watchRun(RUN_ID, h.options);
  await flush();
  const socket = h.sockets[0];
  socket.frame(connected(0));
  await h.clock.advance(25000);
  assert.deepEqual(socket.sent, [{ type: "ping" }]);
  socket.frame({ type: "pong", run_id: RUN_ID, seq: 0, ts: "", payload: {} });
  await h.clock.advance(24999);
  assert.equal(socket.sent.length, 1, "the pong re-armed the idle timer");
  await h.clock.advance(1);
  assert.equal(socket.sent.length, 2);
  await h.clock.advance(10000);
  assert.equal(socket.closedWith.code, 4000, "the client drops the dead socket");
  assert.equal(h.statuses.at(-1).state, "reconnecting");
  await h.clock.advance(h.clock.pending()[0]);
  assert.equal(h.sockets.length, 2);
  assert.match(h.sockets[1].url, /\?since=0$/);
});

test("a socket that opens but never says connected counts as failed", async () => {
  const h = harness();
  watchRun(RUN_ID, h.options);
  await flush();
  await h.clock.advance(10000);
  assert.equal(h.sockets[0].closedWith.reason, "connect timeout");
  assert.equal(h.statuses.at(-1).state, "reconnecting");
});

// --- Polling fallback -------------------------------------------------------------------

test("falls back to HTTP polling when sockets cannot connect, and back to the socket", async () => {
  let events = [];
  const h = harness({
    answers: (url) => {
      if (url.endsWith(`/api/runs/${RUN_ID}/`)) return json(snapshotRun(0));
      const since = Number(new URL(url).searchParams.get("since"));
      const after = events.filter((e) => e.seq > since);
      return json({ run_id: RUN_ID, since, seq: since + after.length, recovered: true, has_more: false, events: after });
    },
  });
  const watch = watchRun(RUN_ID, h.options);
  await flush();
  await twoSocketsFailBeforeConnected(h);
  assert.equal(h.statuses.at(-1).state, "polling");
  assert.equal(h.statuses.at(-1).mode, "http");
  assert.deepEqual(h.fetches, [`${BASE}api/runs/${RUN_ID}/`, `${BASE}api/runs/${RUN_ID}/events/?since=0`]);
  events = HISTORY.slice(0, 3);
  await h.clock.advance(2000);
  assert.equal(watch.run().seq, 3);
  assert.equal(h.fetches.at(-1), `${BASE}api/runs/${RUN_ID}/events/?since=0`);
  await h.clock.advance(2000);
  assert.equal(h.fetches.at(-1), `${BASE}api/runs/${RUN_ID}/events/?since=3`);
  // The socket is tried again after socketRetryMs; this time it connects.
  await h.clock.advance(11000);
  const socket = h.sockets.at(-1);
  assert.equal(h.sockets.length, 3);
  assert.match(socket.url, /\?since=3$/);
  socket.frame(connected(3, watch.run()));
  assert.equal(h.statuses.at(-1).state, "live");
  const fetched = h.fetches.length;
  await h.clock.advance(20000);
  socket.frame({ type: "pong", run_id: RUN_ID, seq: 3, ts: "", payload: {} });
  assert.equal(h.fetches.length, fetched, "no polling once the socket is back");
  for (const f of HISTORY.slice(3)) socket.frame(f);
  assert.deepEqual(
    h.changes.map((r) => r.seq),
    [0, 1, 2, 3, 4, 5, 6, 7, 8],
  );
});

test("polling follows has_more, and a lost history restarts from the run", async () => {
  const answers = [
    json(snapshotRun(0)),
    json({ recovered: true, has_more: true, events: HISTORY.slice(0, 2) }),
    json({ recovered: true, has_more: false, events: HISTORY.slice(2, 4) }),
    json({ recovered: false, has_more: false, events: [] }),
    json(snapshotRun(8, [step(0, "succeeded"), step(1, "succeeded"), step(2, "succeeded")], "succeeded")),
  ];
  const h = harness({ answers: () => answers.shift() });
  const watch = watchRun(RUN_ID, h.options);
  await flush();
  await twoSocketsFailBeforeConnected(h);
  assert.equal(watch.run().seq, 4);
  assert.ok(h.fetches[2].endsWith("?since=2"));
  await h.clock.advance(2000);
  assert.equal(watch.run().status, "succeeded");
  assert.equal(h.statuses.at(-1).state, "closed");
  assert.deepEqual(h.clock.pending(), []);
});

test("an HTTP 404 while polling stops for good", async () => {
  const h = harness({ answers: () => json({ error: "not_found" }, 404) });
  watchRun(RUN_ID, h.options);
  await flush();
  await twoSocketsFailBeforeConnected(h);
  assert.equal(h.statuses.at(-1).state, "closed");
  assert.equal(h.statuses.at(-1).code, 404);
});

// --- Tickets (another origin) --------------------------------------------------------------

test("from another origin each attempt takes a fresh ticket; none is reused", async () => {
  let n = 0;
  const h = harness({ options: { baseUrl: "https://api.example.com/", ticket: async () => `t${++n}` } });
  watchRun(RUN_ID, h.options);
  await flush();
  assert.equal(h.sockets[0].url, `wss://api.example.com/ws/runs/${RUN_ID}/?ticket=t1`);
  h.sockets[0].frame(connected(2, snapshotRun(2)));
  h.sockets[0].serverClose(1006);
  await h.clock.advance(h.clock.pending()[0]);
  assert.equal(h.sockets[1].url, `wss://api.example.com/ws/runs/${RUN_ID}/?since=2&ticket=t2`);
});

test("from another origin, a ticket that cannot be fetched (CORS or down) says so while reconnecting", async () => {
  let ticketsWork = false;
  const ticket = async () => {
    if (!ticketsWork) throw new TypeError("Failed to fetch"); // all a browser says, CORS or network
    return "t1";
  };
  const h = harness({ options: { baseUrl: "https://api.example.com/", ticket } });
  watchRun(RUN_ID, h.options);
  for (let i = 0; i < 4; i++) {
    await flush();
    await h.clock.advance(h.clock.pending()[0]);
  }
  assert.equal(h.sockets.length, 0, "no socket without a ticket");
  const last = h.statuses.at(-1);
  assert.equal(last.state, "reconnecting");
  assert.match(last.reason, /down or unreachable, or it does not allow this page's origin \(CORS_ALLOWED_ORIGINS\)/);
  assert.equal(h.statuses.filter((s) => s.reason === last.reason).length, 1, "said once, not on every retry");

  ticketsWork = true;
  await h.clock.advance(h.clock.pending()[0]);
  h.sockets[0].frame(connected(2, snapshotRun(2)));
  assert.equal(h.statuses.at(-1).state, "live");
  assert.equal(h.statuses.at(-1).reason, null);
});

test("on the page's own origin an unreachable server is not blamed on CORS; an HTTP error is named", async () => {
  const page = { origin: "http://app.test", href: "http://app.test/runs/" };
  const previous = Object.getOwnPropertyDescriptor(globalThis, "location");
  Object.defineProperty(globalThis, "location", { value: page, configurable: true });
  try {
    let answer = () => Promise.reject(new TypeError("Failed to fetch"));
    const h = harness({ answers: () => answer() });
    watchRun(RUN_ID, h.options);
    await flush();
    await twoSocketsFailBeforeConnected(h);
    assert.equal(h.statuses.at(-1).state, "reconnecting");
    assert.equal(h.statuses.at(-1).reason, "no answer over HTTP: the server is down or unreachable");
    answer = () => json({ error: "unavailable" }, 503);
    await h.clock.advance(h.clock.pending()[0]);
    h.sockets[2].serverClose(1006);
    await flush();
    assert.equal(h.statuses.at(-1).reason, "the server answered HTTP 503");
  } finally {
    if (previous) Object.defineProperty(globalThis, "location", previous);
    else delete globalThis.location;
  }
});

// --- watchRuns ---------------------------------------------------------------------------

test("the run list stream dedupes per run across a reconnect's snapshot", async () => {
  const h = harness();
  const seen = [];
  const watch = watchRuns({ ...h.options, onChange: (runs, ids) => seen.push(ids) });
  await flush();
  assert.equal(h.sockets[0].url, "ws://app.test/ws/runs/");
  h.sockets[0].frame({ type: "connected", payload: { mode: "push", runs: [{ id: "a", seq: 1, status: "processing" }] } });
  h.sockets[0].frame({ type: "run_summary", payload: { run: { id: "b", seq: 0, status: "queued" } } });
  h.sockets[0].frame({ type: "run_summary", payload: { run: { id: "a", seq: 4, status: "succeeded" } } });
  h.sockets[0].serverClose(1006);
  await h.clock.advance(h.clock.pending()[0]);
  h.sockets[1].frame({ type: "connected", payload: { mode: "push", runs: [{ id: "a", seq: 4, status: "succeeded" }, { id: "b", seq: 1, status: "processing" }] } });
  assert.deepEqual(seen, [["a"], ["b"], ["a"], ["b"]]);
  assert.equal(watch.runs().get("b").status, "processing");
  assert.equal(h.statuses.at(-1).state, "live", "the list stream never finishes on its own");
});

test("with the server unreachable (HTTP fails too) it keeps reconnecting, never polling", async () => {
  const h = harness();
  watchRun(RUN_ID, h.options);
  await flush();
  h.sockets[0].frame(connected(2, snapshotRun(2)));
  for (let i = 0; i < 6; i++) {
    h.sockets.at(-1).serverClose(1006);
    await flush();
    assert.equal(h.statuses.at(-1).state, "reconnecting");
    await h.clock.advance(h.clock.pending()[0]);
  }
  assert.equal(h.sockets.length, 7);
  assert.ok(h.fetches.length >= 4, "HTTP was tried between sockets");
  assert.ok(h.statuses.every((s) => s.state !== "polling"));
  assert.ok(h.sockets.slice(1).every((s) => s.url.endsWith("?since=2")));
});
