// Quik.day Realtime — the browser client of docs/protocol.md. No dependencies, no build step.
//
//   import { watchRun } from "/static/realtime/quikday-realtime.js";
//   const watch = watchRun(runId, {
//     onChange: (run) => render(run),             // the run, as GET /api/runs/<id>/ shows it now
//     onStatus: (s) => show(s.state, s.mode),     // live | reconnecting | polling | offline | closed
//   });
//   watch.stop();                                 // when the page (or component) goes away
//
// One run state per watcher: `connected` gives the snapshot, every event is applied to it
// (the reducer of docs/protocol.md) and a frame whose seq the copy already has is ignored,
// so however many reconnects and transport changes happen, no step is missing or shown twice.

export const STATE = Object.freeze({
  CONNECTING: "connecting",
  LIVE: "live",
  RECONNECTING: "reconnecting",
  POLLING: "polling",
  OFFLINE: "offline",
  CLOSED: "closed",
});

// Close codes after which reconnecting cannot help (docs/protocol.md, "Close codes").
export const FINAL_CLOSE_CODES = Object.freeze({
  1009: "a frame sent to the server was too large",
  4009: "a frame sent to the server was too large",
  4400: "malformed run id or since",
  4401: "not authenticated",
  4403: "not your run",
  4404: "no such run",
});

const HTTP_FINAL = Object.freeze({ 400: "bad request", 401: "not authenticated", 403: "not allowed", 404: "no such run" });

export const DEFAULTS = Object.freeze({
  baseDelayMs: 500, // first reconnect waits up to this (full jitter: anything from 0)
  maxDelayMs: 15000, // the backoff's ceiling
  pingIntervalMs: 25000, // an idle socket sends a ping this often (under the 55 s after which proxies such as Heroku's router drop an idle connection)
  pongTimeoutMs: 10000, // no frame this long after a ping: the connection is dead
  connectTimeoutMs: 10000, // no `connected` this long after opening: that socket failed
  pollAfterFailures: 2, // sockets that fail to connect in a row before HTTP polling is tried
  pollIntervalMs: 2000, // how often the fallback polls
  socketRetryMs: 15000, // while polling, try the socket again this often
  restartSpreadMs: 5000, // after a 1012 (the server restarting: a deploy), the reconnect waits anything up to this
});

// The server is restarting (a deploy): every client of the process is told at once, so their
// reconnects are spread over restartSpreadMs rather than the first backoff's half second.
export const CLOSE_SERVICE_RESTART = 1012;

const STEP_EVENTS = new Set(["step_started", "step_retried", "step_succeeded", "step_failed", "step_skipped"]);
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function isTerminal(status) {
  return TERMINAL.has(status);
}

// --- The reducer ------------------------------------------------------------------------

/**
 * Apply one frame to a run copy; returns a new object when it changed, else `run` itself.
 * `connected` replaces the copy with its snapshot (the server's truth, whatever the copy had).
 */
export function applyRunFrame(run, frame) {
  if (!frame || typeof frame !== "object") return run;
  if (frame.type === "connected") {
    // At the same seq the copy already equals the snapshot (that is the reducer's promise).
    if (run && run.seq === frame.seq && run.id === frame.payload.run.id) return run;
    return { ...frame.payload.run, seq: frame.seq };
  }
  const isEvent = frame.type === "run_status" || frame.type === "run_completed" || STEP_EVENTS.has(frame.type);
  if (!isEvent || !run || frame.seq <= run.seq) return run;
  const payload = frame.payload;
  const next = { ...run, steps: [...(run.steps || [])], seq: frame.seq };
  if (frame.type === "run_status") {
    next.status = payload.status;
    next.started_at = payload.started_at;
  } else if (frame.type === "run_completed") {
    for (const key of ["status", "output", "error", "started_at", "finished_at"]) next[key] = payload[key];
  } else {
    const step = payload.step;
    next.steps = next.steps.filter((s) => s.index !== step.index);
    next.steps.push(step);
    next.steps.sort((a, b) => a.index - b.index);
  }
  return next;
}

/** Counts for a progress bar: succeeded of total; failed and skipped are not done work. */
export function runProgress(run) {
  const total = (run && run.plan ? run.plan.length : 0) || (run && run.steps_total) || 0;
  const counts = { succeeded: 0, failed: 0, skipped: 0, running: 0 };
  for (const step of (run && run.steps) || []) {
    if (step.status in counts) counts[step.status] += 1;
  }
  if (run && run.steps === undefined && run.steps_succeeded !== undefined) {
    counts.succeeded = run.steps_succeeded;
    counts.failed = run.steps_failed;
    counts.skipped = run.steps_skipped;
    counts.running = run.steps_running || 0;
  }
  const percent = total ? Math.round((counts.succeeded / total) * 100) : 0;
  return { total, ...counts, percent };
}

/**
 * The user-level stream's reducer: a Map run id → summary, keeping per run the summary
 * with the highest seq (a summary of a run is never replaced by an older one).
 * `run_deleted` removes the run; `gone` (a Set of the ids deleted so far) keeps a late
 * summary or snapshot from bringing it back. Returns the ids that changed.
 */
export function applyListFrame(runs, frame, gone = new Set()) {
  const changed = [];
  if (frame && frame.type === "run_deleted") {
    gone.add(frame.run_id);
    if (runs.delete(frame.run_id)) changed.push(frame.run_id);
    return changed;
  }
  const offer = (summary) => {
    if (gone.has(summary.id)) return;
    const known = runs.get(summary.id);
    if (known && known.seq >= summary.seq) return;
    runs.set(summary.id, summary);
    changed.push(summary.id);
  };
  if (frame && frame.type === "connected") for (const summary of frame.payload.runs) offer(summary);
  else if (frame && frame.type === "run_summary") offer(frame.payload.run);
  return changed;
}

// --- Backoff ----------------------------------------------------------------------------

/** Exponential backoff with full jitter: uniform in [0, min(max, base·2^attempt)). */
export function backoffDelay(attempt, { baseDelayMs = DEFAULTS.baseDelayMs, maxDelayMs = DEFAULTS.maxDelayMs, random = Math.random } = {}) {
  const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}

// --- The connection: socket, reconnects, heartbeat, HTTP fallback ---------------------------

export class HttpError extends Error {
  constructor(status, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
  }
}

/** A ws:// URL for `path` on `baseUrl` (default: this page's origin). */
export function socketUrl(path, baseUrl) {
  const base = new URL(baseUrl || globalThis.location.href);
  const url = new URL(path, base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

/**
 * Keeps one stream alive. `hooks.url()` builds the socket URL of an attempt (resume point,
 * ticket), `hooks.frame(frame, transport)` takes every frame, `hooks.poll()` reads over HTTP
 * once (throws HttpError for a final answer, anything else for "unreachable").
 * The owner calls `finish(reason)` once the stream is complete.
 */
export class Connection {
  constructor(hooks, options = {}) {
    this.hooks = hooks;
    this.options = { ...DEFAULTS, ...options };
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.setTimeout = options.setTimeout || globalThis.setTimeout.bind(globalThis);
    this.clearTimeout = options.clearTimeout || globalThis.clearTimeout.bind(globalThis);
    this.random = options.random || Math.random;
    this.onStatus = options.onStatus || (() => {});
    this.state = null;
    this.mode = null;
    this.attempt = 0; // reconnects since the last good connection (the backoff's exponent)
    this.socketFailures = 0; // sockets in a row that never got `connected`
    this.socket = null;
    this.stopped = false;
    this.polling = false;
    this.opening = false;
    this.timers = { retry: null, ping: null, pong: null, poll: null, probe: null, connect: null };
    this.lastError = null;
    this.failure = null; // why the last HTTP request (a ticket, a poll) failed: a reconnecting status's reason
    this.reason = null; // the last status's reason
    this._onOnline = () => this._online();
    this._onOffline = () => this._setState(STATE.OFFLINE, { reason: "the browser is offline" });
    if (typeof globalThis.addEventListener === "function" && !options.ignoreBrowserNetwork) {
      globalThis.addEventListener("online", this._onOnline);
      globalThis.addEventListener("offline", this._onOffline);
    }
  }

  start() {
    this._setState(STATE.CONNECTING);
    this._openSocket();
    return this;
  }

  /** Stop for good (the owner is done, or the stream is complete). */
  finish(reason, code = null) {
    if (this.stopped) return;
    this.stopped = true;
    for (const name of Object.keys(this.timers)) this._clear(name);
    this.polling = false;
    this._dropSocket(1000, "done");
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this._onOnline);
      globalThis.removeEventListener("offline", this._onOffline);
    }
    this._setState(STATE.CLOSED, { reason, code });
  }

  _setState(state, extra = {}) {
    const reason = extra.reason === undefined ? null : extra.reason;
    const changed = state !== this.state || reason !== this.reason;
    this.state = state;
    this.reason = reason;
    if (changed) {
      this.onStatus({
        state,
        mode: this.mode,
        transport: state === STATE.POLLING ? "http" : "websocket",
        attempt: this.attempt,
        code: null,
        ...extra,
        reason,
      });
    }
  }

  _clear(name) {
    if (this.timers[name] !== null) this.clearTimeout(this.timers[name]);
    this.timers[name] = null;
  }

  _later(name, ms, fn) {
    this._clear(name);
    this.timers[name] = this.setTimeout(() => {
      this.timers[name] = null;
      if (!this.stopped) fn();
    }, ms);
  }

  async _openSocket() {
    if (this.stopped || this.socket || this.opening) return;
    this.opening = true;
    let url;
    try {
      url = await this.hooks.url();
    } catch (error) {
      this.opening = false;
      if (error instanceof HttpError && error.status in HTTP_FINAL) {
        this.finish(HTTP_FINAL[error.status], error.status);
        return;
      }
      this._httpFailed(error);
      this._socketFailed(false);
      return;
    }
    this.opening = false;
    if (this.stopped || this.socket) return;
    let socket;
    try {
      socket = new this.WebSocket(url);
    } catch (error) {
      this._socketFailed(false);
      return;
    }
    this.socket = socket;
    socket.gotConnected = false;
    this.lastError = null;
    socket.onmessage = (message) => this._onMessage(socket, message);
    socket.onclose = (event) => this._onClose(socket, event.code, event.reason);
    socket.onerror = () => {}; // a close event always follows
    this._later("connect", this.options.connectTimeoutMs, () => {
      // Opened (or hanging) but no `connected`: a proxy that swallows the socket.
      this._dropSocket(4000, "connect timeout");
      this._socketFailed(false);
    });
  }

  _onMessage(socket, message) {
    if (socket !== this.socket || this.stopped) return;
    this._clear("pong");
    this._armPing();
    let frame;
    try {
      frame = JSON.parse(message.data);
    } catch (error) {
      return;
    }
    if (frame.type === "pong") return;
    if (frame.type === "error") {
      this.lastError = frame.payload && frame.payload.message;
      return;
    }
    if (frame.type === "connected") {
      this._clear("connect");
      socket.gotConnected = true;
      this.mode = frame.payload && frame.payload.mode;
      this.attempt = 0;
      this.socketFailures = 0;
      this.failure = null;
      this._stopPolling();
      this._setState(STATE.LIVE);
    }
    this.hooks.frame(frame, "websocket");
  }

  _armPing() {
    this._later("ping", this.options.pingIntervalMs, () => {
      const socket = this.socket;
      if (!socket || socket.readyState !== 1) return;
      try {
        socket.send(JSON.stringify({ type: "ping" }));
      } catch (error) {
        return;
      }
      this._later("pong", this.options.pongTimeoutMs, () => {
        // No frame since the ping: the peer or the path is gone without a close.
        this._dropSocket(4000, "pong timeout");
        this._socketFailed(true);
      });
    });
  }

  _dropSocket(code, reason) {
    const socket = this.socket;
    if (!socket) return;
    this.socket = null;
    this._clear("ping");
    this._clear("pong");
    this._clear("connect");
    socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close(code, reason);
    } catch (error) {
      // already closed
    }
  }

  _onClose(socket, code, reason) {
    if (socket !== this.socket) return;
    this.socket = null;
    this._clear("ping");
    this._clear("pong");
    this._clear("connect");
    if (this.stopped) return;
    if (code in FINAL_CLOSE_CODES) {
      this.finish(this.lastError || reason || FINAL_CLOSE_CODES[code], code);
      return;
    }
    this._socketFailed(socket.gotConnected, code === CLOSE_SERVICE_RESTART);
  }

  /** A socket closed or could not open; `wasLive`: it had delivered `connected`;
   * `restarting`: the server said it is restarting (1012). */
  _socketFailed(wasLive, restarting = false) {
    if (this.stopped) return;
    this.socketFailures = wasLive ? 0 : this.socketFailures + 1;
    if (this.polling) {
      this._later("probe", this.options.socketRetryMs, () => this._openSocket());
      return;
    }
    if (this.socketFailures >= this.options.pollAfterFailures) {
      this._tryPolling();
      return;
    }
    this._retryLater(restarting);
  }

  _retryLater(restarting = false) {
    const offline = globalThis.navigator && globalThis.navigator.onLine === false;
    const delay = restarting
      ? Math.floor(this.random() * this.options.restartSpreadMs)
      : backoffDelay(this.attempt, { ...this.options, random: this.random });
    this.attempt += 1;
    const reason = offline ? "the browser is offline" : this.failure;
    this._setState(offline ? STATE.OFFLINE : STATE.RECONNECTING, { retryInMs: delay, reason });
    this._later("retry", delay, () => this._openSocket());
  }

  _online() {
    if (this.stopped || this.socket || this.polling) return;
    this.attempt = 0;
    this._clear("retry");
    this._openSocket();
  }

  // HTTP polling: only when the socket cannot connect but HTTP answers (a proxy blocking
  // WebSockets). When HTTP fails too the server is unreachable: keep reconnecting.
  async _tryPolling() {
    let ok;
    try {
      await this.hooks.poll();
      ok = true;
    } catch (error) {
      if (this._pollRefused(error)) return;
      this._httpFailed(error);
      ok = false;
    }
    if (this.stopped) return;
    if (!ok) {
      this._retryLater();
      return;
    }
    this.polling = true;
    this.attempt = 0;
    this.mode = "http";
    this._setState(STATE.POLLING);
    this._later("poll", this.options.pollIntervalMs, () => this._pollTick());
    this._later("probe", this.options.socketRetryMs, () => this._openSocket());
  }

  async _pollTick() {
    if (!this.polling) return;
    try {
      await this.hooks.poll();
    } catch (error) {
      if (this._pollRefused(error)) return;
      this._httpFailed(error);
      // Unreachable now: back to reconnecting (socket first, then polling again).
      this._stopPolling();
      this._retryLater();
      return;
    }
    if (this.polling && !this.stopped) this._later("poll", this.options.pollIntervalMs, () => this._pollTick());
  }

  /** Note why an HTTP request failed. A browser tells a page nothing more than "failed" both
   * when the server is unreachable and when CORS refuses this page's origin. */
  _httpFailed(error) {
    if (error instanceof HttpError) {
      this.failure = `the server answered HTTP ${error.status}`;
    } else if (isCrossOrigin(this.options.baseUrl)) {
      this.failure = `${UNREACHABLE}, or it does not allow this page's origin (CORS_ALLOWED_ORIGINS)`;
    } else {
      this.failure = UNREACHABLE;
    }
  }

  _pollRefused(error) {
    if (error instanceof HttpError && error.status in HTTP_FINAL) {
      this.finish(HTTP_FINAL[error.status], error.status);
      return true;
    }
    return this.stopped;
  }

  _stopPolling() {
    this.polling = false;
    this._clear("poll");
    this._clear("probe");
  }
}

// --- Helpers shared by the watchers ---------------------------------------------------------

const UNREACHABLE = "no answer over HTTP: the server is down or unreachable";

/** Whether `baseUrl` is another origin than this page's (there CORS decides what the page reads). */
function isCrossOrigin(baseUrl) {
  if (!baseUrl) return false;
  const here = globalThis.location && globalThis.location.origin;
  return !here || new URL(baseUrl, globalThis.location.href).origin !== here;
}

function httpGetter(options) {
  const fetchImpl = options.fetch || globalThis.fetch.bind(globalThis);
  const base = options.baseUrl || (globalThis.location && globalThis.location.href);
  return async (path) => {
    const response = await fetchImpl(new URL(path, base).toString(), {
      headers: { Accept: "application/json", ...(options.headers || {}) },
      // Another origin authenticates with `headers` (a token), never with this browser's cookies.
      credentials: options.baseUrl ? "omit" : "same-origin",
    });
    if (!response.ok) throw new HttpError(response.status);
    return response.json();
  };
}

/** The socket URL with query parameters; a ticket (another origin) is fetched per attempt. */
async function buildUrl(path, query, options) {
  const params = new URLSearchParams(query);
  if (options.ticket) params.set("ticket", await options.ticket());
  const text = params.toString();
  return socketUrl(text ? `${path}?${text}` : path, options.baseUrl);
}

// --- watchRun ------------------------------------------------------------------------------------

/**
 * Follow one run. Options: onChange(run, frame), onStatus(status), onFrame(frame), baseUrl,
 * ticket (async () => a ticket from POST /api/ws-tickets/; needed from another origin),
 * headers (for the HTTP fallback, e.g. an Authorization header), and the timing DEFAULTS.
 * Returns {stop(), run(), state()}.
 */
export function watchRun(runId, options = {}) {
  let run = null;
  const onChange = options.onChange || (() => {});
  const get = httpGetter(options);
  const path = `/ws/runs/${encodeURIComponent(runId)}/`;
  let connection;

  const take = (frame, transport) => {
    if (options.onFrame) options.onFrame(frame, transport);
    const next = applyRunFrame(run, frame);
    if (next !== run) {
      run = next;
      onChange(run, frame);
    }
    if (run && isTerminal(run.status)) connection.finish("finished", 1000);
  };

  const hooks = {
    url: () => buildUrl(path, run ? { since: String(run.seq) } : {}, options),
    frame: take,
    poll: async () => {
      if (!run) {
        const snapshot = await get(`/api/runs/${encodeURIComponent(runId)}/`);
        take({ type: "connected", run_id: runId, seq: snapshot.seq, payload: { run: snapshot } }, "http");
      }
      for (;;) {
        if (connection.stopped) return;
        const page = await get(`/api/runs/${encodeURIComponent(runId)}/events/?since=${run.seq}`);
        if (!page.recovered) {
          // The log no longer holds what follows our copy: start again from the run itself.
          const snapshot = await get(`/api/runs/${encodeURIComponent(runId)}/`);
          take({ type: "connected", run_id: runId, seq: snapshot.seq, payload: { run: snapshot } }, "http");
          return;
        }
        for (const frame of page.events) take(frame, "http");
        if (!page.has_more) return;
      }
    },
  };
  connection = new Connection(hooks, options);
  connection.start();
  return {
    stop: () => connection.finish("stopped"),
    run: () => run,
    state: () => connection.state,
    connection,
  };
}

// --- watchRuns: the user-level stream of run summaries ------------------------------------------

/**
 * Follow the summaries of the user's runs (staff: everyone's) over /ws/runs/.
 * onChange(runs: Map<id, summary>, changedIds) after each change (a changed id no longer in
 * `runs` was deleted). A reconnect
 * re-sends the snapshot; a run's summary is only ever replaced by a newer one (seq).
 */
export function watchRuns(options = {}) {
  const runs = new Map();
  const gone = new Set();
  const onChange = options.onChange || (() => {});
  const get = httpGetter(options);
  const take = (frame) => {
    if (options.onFrame) options.onFrame(frame);
    const changed = applyListFrame(runs, frame, gone);
    if (changed.length) onChange(runs, changed);
  };
  const hooks = {
    url: () => buildUrl("/ws/runs/", {}, options),
    frame: take,
    poll: async () => {
      const page = await get("/api/run-summaries/");
      take({ type: "connected", payload: { runs: page.runs } });
    },
  };
  const connection = new Connection(hooks, options).start();
  return { stop: () => connection.finish("stopped"), runs: () => runs, state: () => connection.state, connection };
}
