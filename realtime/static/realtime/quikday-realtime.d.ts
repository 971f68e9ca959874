// Types of quikday-realtime.js (docs/protocol.md describes every frame).

export type RunStatus = "queued" | "processing" | "succeeded" | "failed" | "cancelled";
export type StepStatus = "pending" | "running" | "succeeded" | "failed" | "skipped";
export type ConnectionState = "connecting" | "live" | "reconnecting" | "polling" | "offline" | "closed";
/** The server's mode while on the socket; "http" while polling the events API. */
export type Mode = "push" | "poll" | "hybrid" | "http" | null;

export interface Step {
  index: number;
  tool: string;
  args: Record<string, unknown>;
  status: StepStatus;
  output: unknown;
  error: string;
  started_at: string | null;
  finished_at: string | null;
  /** 1 when first started; each take-over of the step (its executor was lost) adds one (event `step_retried`). */
  attempts: number;
  /** Who executes the current attempt: a Celery worker's node name (celery@host) or, embedded, "web:<host>:<pid>"; "" if never started. */
  worker: string;
}

/** A run as GET /api/runs/<id>/ returns it. */
export interface Run {
  id: string;
  owner: string;
  status: RunStatus;
  prompt: string;
  plan: { tool: string; args?: Record<string, unknown> }[];
  output: unknown;
  error: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  seq: number;
  steps: Step[];
  ws_url: string;
}

/** A run in the user-level stream (/ws/runs/) and GET /api/run-summaries/. */
export interface RunSummary {
  id: string;
  owner: string;
  status: RunStatus;
  prompt: string;
  seq: number;
  steps_total: number;
  steps_succeeded: number;
  steps_failed: number;
  steps_skipped: number;
  steps_running: number;
  cancel_requested: boolean;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export interface Frame<P = Record<string, unknown>> {
  type: string;
  run_id: string;
  seq: number;
  ts: string;
  payload: P;
}

export interface Status {
  state: ConnectionState;
  mode: Mode;
  transport: "websocket" | "http";
  /** Reconnects since the last good connection. */
  attempt: number;
  /**
   * Why a closed watch ended: "finished", "stopped", or the server's message (e.g. "not your run").
   * While reconnecting: why the last HTTP request (a ticket, a poll) failed, or null when none did —
   * from another origin "no answer over HTTP: … or it does not allow this page's origin
   * (CORS_ALLOWED_ORIGINS)", since a browser tells a page no more than that.
   */
  reason: string | null;
  /** The close code (or HTTP status) that ended it, when there was one. */
  code: number | null;
  /** While reconnecting: the delay before the next attempt. */
  retryInMs?: number;
}

export interface Timing {
  baseDelayMs?: number;
  maxDelayMs?: number;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  connectTimeoutMs?: number;
  pollAfterFailures?: number;
  pollIntervalMs?: number;
  socketRetryMs?: number;
  /** After a 1012 (the server restarting), the reconnect waits anything up to this. */
  restartSpreadMs?: number;
}

export interface ConnectOptions extends Timing {
  onStatus?: (status: Status) => void;
  /** The server, when it is not this page's origin (then pass `ticket` too). */
  baseUrl?: string;
  /** Another origin: a fresh single-use ticket per attempt, from POST /api/ws-tickets/. */
  ticket?: () => Promise<string>;
  /** Headers of the HTTP fallback's requests, e.g. {Authorization: "Token …"} from another origin. */
  headers?: Record<string, string>;
  /** Test seams. */
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: unknown) => void;
  random?: () => number;
  ignoreBrowserNetwork?: boolean;
}

export interface WatchRunOptions extends ConnectOptions {
  /** Called with the new run after each change (never twice for one seq). */
  onChange?: (run: Run, frame: Frame) => void;
  /** Every frame received, before it is applied. */
  onFrame?: (frame: Frame, transport: "websocket" | "http") => void;
}

export interface WatchRunsOptions extends ConnectOptions {
  onChange?: (runs: Map<string, RunSummary>, changedIds: string[]) => void;
  onFrame?: (frame: Frame) => void;
}

export interface RunWatch {
  stop(): void;
  run(): Run | null;
  state(): ConnectionState | null;
}

export interface RunsWatch {
  stop(): void;
  runs(): Map<string, RunSummary>;
  state(): ConnectionState | null;
}

export const STATE: Readonly<Record<"CONNECTING" | "LIVE" | "RECONNECTING" | "POLLING" | "OFFLINE" | "CLOSED", ConnectionState>>;
export const FINAL_CLOSE_CODES: Readonly<Record<number, string>>;
export const CLOSE_SERVICE_RESTART: 1012;
export const DEFAULTS: Readonly<Required<Timing>>;

export function watchRun(runId: string, options?: WatchRunOptions): RunWatch;
export function watchRuns(options?: WatchRunsOptions): RunsWatch;

export function applyRunFrame(run: Run | null, frame: Frame): Run | null;
export function applyListFrame(runs: Map<string, RunSummary>, frame: Frame, gone?: Set<string>): string[];
export function runProgress(run: Run | RunSummary | null): {
  total: number;
  succeeded: number;
  failed: number;
  skipped: number;
  running: number;
  percent: number;
};
export function backoffDelay(attempt: number, options?: Timing & { random?: () => number }): number;
export function isTerminal(status: string): boolean;
export function socketUrl(path: string, baseUrl?: string): string;

export class HttpError extends Error {
  status: number;
  constructor(status: number, message?: string);
}
