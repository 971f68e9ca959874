// The run timeline of a run's page and the admin's run page (web/_run_timeline.html): a waterfall
// of the run's event log (run-timeline-model.js), live while the run runs, and a replay control
// that steps through the events seq by seq. Loaded as a module file, never inline (CSP); bar
// geometry is set through element.style, which a strict style-src allows.
//
// History comes from GET /api/runs/<id>/events/?since=N (paged: `has_more`); live events come
// from the page's own run socket (run-view.js re-dispatches each applied frame as
// `quikday:run-change`), so the timeline opens no connection of its own. A gap (a reconnect's
// snapshot jumped ahead, an event the page never saw) is filled from the same API.
import { buildTimeline, describeEvent, eventsFromSnapshot, formatDuration, orderedEvents, timelineRows, toMs } from "./run-timeline-model.js";

const MARK_GLYPH = { failure: "✕", cancel: "■", skip: "–" };
const PLAY_STEP_MS = 700; // one event per this while replaying
const TICK_MS = 250; // open bars grow this often while the run runs

const TIME = new Intl.DateTimeFormat("en-GB", {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  fractionalSecondDigits: 3,
  hourCycle: "h23",
  timeZoneName: "short",
});

/** A time of day, 24-hour, to the millisecond, with the reader's zone: 16:07:59.123 UTC. */
export function clockTime(ms) {
  return ms === null || ms === undefined ? "—" : TIME.format(new Date(ms));
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

/** Axis ticks: a round step (1, 2, 5 × 10^k ms) giving at most `most` intervals. */
function ticks(span, most = 6) {
  const raw = Math.max(span, 1) / most;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let t = 0; t <= span + 1e-9; t += step) out.push(t);
  return out;
}

function tickLabel(ms) {
  if (ms === 0) return "0";
  if (ms < 1000) return `+${Math.round(ms)} ms`;
  if (ms < 60_000) return `+${Number((ms / 1000).toFixed(1))} s`;
  return `+${Math.floor(ms / 60_000)} min ${String(Math.round((ms % 60_000) / 1000)).padStart(2, "0")} s`;
}

/** What a row says to a screen reader (and in its tooltip): the bar in words. */
function rowText(row) {
  const parts = [];
  const name = row.kind === "run" ? "Run" : `Step ${row.step + 1} (${row.tool})${row.attempt && row.attempts > 1 ? `, attempt ${row.attempt} of ${row.attempts}` : ""}`;
  parts.push(`${name}: ${row.status === "lost" ? "executor lost, taken over" : row.status}`);
  if (row.worker) parts.push(`on ${row.worker}`);
  if (row.wait) parts.push(`queued ${formatDuration(row.wait.to - row.wait.from)}`);
  if (row.exec) parts.push(`${row.open ? "running for" : "executed"} ${formatDuration(row.exec.to - row.exec.from)}`);
  if (row.exec) parts.push(`from ${clockTime(row.exec.from)}`);
  if (row.error) parts.push(row.error);
  return parts.join(", ");
}

export function mountTimeline(root) {
  const part = (name) => root.querySelector(`[data-timeline="${name}"]`);
  const control = (name) => root.querySelector(`[data-replay="${name}"]`);
  const parts = { note: part("note"), axis: part("axis"), rows: part("rows"), replay: part("replay") };
  const buttons = { first: control("first"), prev: control("prev"), play: control("play"), next: control("next"), last: control("last") };
  const slider = control("slider");
  const readout = control("readout");
  const planNode = document.getElementById("run-timeline-plan");
  const plan = planNode ? JSON.parse(planNode.textContent) : [];
  const createdAt = root.dataset.createdAt || null;
  const eventsUrl = root.dataset.eventsUrl;

  const events = new Map(); // seq → frame: the log and the live stream, merged
  let contiguous = 0; // every seq up to this is in `events`
  let wanted = 0; // the highest seq the page is known to have reached
  let fetching = null;
  let pruned = false;
  let rebuilt = []; // a pruned log's frames, rebuilt from the run's recorded times
  let position = null; // the seq shown; null: follow the latest (live)
  let playing = null;
  let ticker = null;

  const ordered = () => orderedEvents([...events.values()]);

  const getJson = async (url) => {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}`);
    return response.json();
  };

  const add = (frame) => {
    if (!frame || !Number.isInteger(frame.seq) || frame.seq < 1 || frame.type === "connected") return;
    events.set(frame.seq, frame);
    while (events.has(contiguous + 1)) contiguous += 1;
    wanted = Math.max(wanted, frame.seq);
  };

  // Page through the log from what we have up to what the page has seen (or the end).
  const fill = async () => {
    if (fetching) return fetching;
    const before = contiguous;
    fetching = (async () => {
      try {
        for (;;) {
          const page = await getJson(`${eventsUrl}?since=${contiguous}`);
          if (!page.recovered) {
            pruned = contiguous === 0 && page.seq > 0;
            if (pruned) rebuilt = eventsFromSnapshot(await getJson(root.dataset.runUrl));
            break;
          }
          for (const frame of page.events) add(frame);
          wanted = Math.max(wanted, page.seq);
          if (!page.has_more || !page.events.length) break;
        }
        parts.note.textContent = pruned
          ? "This run's events were pruned from the log (older than the retention period): the bars come from the run's recorded times, one per step, without earlier attempts or a replay."
          : "";
        parts.note.hidden = !pruned;
      } catch (error) {
        parts.note.hidden = false;
        parts.note.textContent = `Could not load the run's events: ${error.message}`;
      } finally {
        fetching = null;
      }
      render();
      // Still behind what the page saw (it moved on meanwhile): once more, only if this read got somewhere.
      if (wanted > contiguous && contiguous > before && !pruned) fill();
    })();
    return fetching;
  };

  // A frame the page's socket applied: take it when it is the next one, else fill the gap.
  document.addEventListener("quikday:run-change", (event) => {
    const detail = event.detail || {};
    const frame = detail.frame;
    if (frame && frame.type !== "connected") add(frame);
    if (Number.isInteger(detail.seq)) wanted = Math.max(wanted, detail.seq);
    if (wanted > contiguous) fill();
    else render();
  });

  const known = () => (pruned ? rebuilt : ordered().filter((frame) => frame.seq <= contiguous));

  const scaleOf = (model) => {
    const span = Math.max(1, model.end - model.origin);
    return { origin: model.origin, span, at: (t) => ((t - model.origin) / span) * 100 };
  };

  const segment = (className, from, to, scale) => {
    const node = el("span", { class: className });
    node.style.left = `${scale.at(from)}%`;
    node.style.width = `${Math.max(0, scale.at(to) - scale.at(from))}%`;
    return node;
  };

  const mark = (kind, at, scale, text) => {
    const node = el("span", { class: `tl-mark tl-mark-${kind}`, "data-mark": kind, title: text || kind }, MARK_GLYPH[kind]);
    node.style.left = `${scale.at(at)}%`;
    return node;
  };

  const renderRows = (model, scale) => {
    const rows = timelineRows(model);
    const items = rows.map((row) => {
      const track = el("div", { class: "tl-track" });
      if (row.wait && row.wait.to > row.wait.from) track.append(segment("tl-bar tl-wait", row.wait.from, row.wait.to, scale));
      if (row.exec) track.append(segment(`tl-bar tl-exec tl-${row.kind === "run" ? `run-${row.status}` : row.status}${row.open ? " tl-open" : ""}`, row.exec.from, row.exec.to, scale));
      if (row.skippedAt && !row.exec) track.append(mark("skip", row.skippedAt, scale, "skipped"));
      for (const m of model.marks) {
        const here = row.kind === "run" ? m.scope === "run" : m.scope === "step" && m.step === row.step && (row.attempt === null || row.attempt === row.attempts);
        if (here) track.append(mark(m.kind, m.at, scale, m.text));
      }
      const label =
        row.kind === "run"
          ? el("span", { class: "tl-label" }, el("strong", {}, "Run"))
          : el(
              "span",
              { class: "tl-label" },
              el("span", { class: "tl-index" }, `${row.step + 1}`),
              " ",
              el("code", {}, row.tool),
              row.attempt && row.attempts > 1 ? el("span", { class: "tl-attempt" }, ` attempt ${row.attempt}`) : null,
              row.worker ? el("span", { class: "tl-worker" }, row.worker) : null,
            );
      const figures = [];
      if (row.wait) figures.push(`wait ${formatDuration(row.wait.to - row.wait.from)}`);
      if (row.exec) figures.push(`${row.open ? "running" : "ran"} ${formatDuration(row.exec.to - row.exec.from)}`);
      if (!row.exec && !row.wait) figures.push(row.status);
      else if (row.status === "lost") figures.push("lost");
      const text = rowText(row);
      const item = el(
        "li",
        { class: `tl-row tl-row-${row.kind}`, "data-row": row.key, "data-status": row.status, "data-attempt": row.attempt === null || row.attempt === undefined ? null : String(row.attempt), "data-worker": row.worker || null, title: text },
        label,
        track,
        el("span", { class: "tl-figures" }, figures.join(" · ")),
        el("span", { class: "visually-hidden" }, text),
      );
      track.setAttribute("aria-hidden", "true");
      return item;
    });
    parts.rows.replaceChildren(...items);
  };

  const renderAxis = (scale) => {
    // About one label per 90 px of track: a phone gets fewer than a desktop.
    const most = Math.max(2, Math.min(8, Math.floor((parts.axis.querySelector(".tl-ticks")?.clientWidth || parts.axis.clientWidth || 640) / 90)));
    const nodes = ticks(scale.span, most).map((t) => {
      const node = el("span", { class: "tl-tick" }, tickLabel(t));
      node.style.left = `${(t / scale.span) * 100}%`;
      return node;
    });
    parts.axis.replaceChildren(el("span", { class: "tl-origin" }, `${clockTime(scale.origin)}`), el("span", { class: "tl-ticks" }, ...nodes));
  };

  const render = () => {
    const all = known();
    const last = all.length ? all[all.length - 1].seq : 0;
    const full = buildTimeline(all, { createdAt, plan, now: Date.now() });
    const shown = position === null || position >= last ? full : buildTimeline(all, { createdAt, plan, upto: position });
    // Replaying, the frame stays the whole run's, so the bars grow inside it as they did.
    const scale = scaleOf(full);
    root.dataset.seq = String(shown.seq);
    root.dataset.live = String(full.live);
    root.dataset.following = String(position === null);
    renderAxis(scale);
    renderRows(shown, scale);
    renderReplay(all, shown, last);
    const needsTick = full.live && all.length > 0 && (position === null || position >= last);
    if (needsTick && !ticker) ticker = setInterval(render, TICK_MS);
    if (!needsTick && ticker) {
      clearInterval(ticker);
      ticker = null;
    }
  };

  const renderReplay = (all, shown, last) => {
    parts.replay.hidden = pruned || (!all.length && !contiguous);
    slider.max = String(last);
    const at = shown.seq;
    slider.value = String(at);
    const frame = shown.lastEvent;
    const text = frame
      ? `seq ${frame.seq} of ${last} · ${frame.type} · ${clockTime(toMs(frame.ts))} · ${describeEvent(frame, shown)}`
      : `seq 0 of ${last} · ${describeEvent(null)}`;
    slider.setAttribute("aria-valuetext", text);
    if (readout.textContent !== text) readout.textContent = text;
    // aria-disabled, not disabled: a button that stops applying keeps the keyboard's focus.
    const off = { first: at === 0, prev: at === 0, next: at >= last, last: at >= last && position === null };
    for (const [name, value] of Object.entries(off)) buttons[name].setAttribute("aria-disabled", String(value));
    buttons.play.setAttribute("aria-pressed", String(playing !== null));
    buttons.play.textContent = playing !== null ? "Pause" : "Play";
  };

  const latest = () => contiguous;
  const current = () => (position === null ? latest() : position);
  const show = (seq) => {
    position = seq >= latest() ? null : Math.max(0, seq);
    render();
  };
  const stop = () => {
    if (playing !== null) clearInterval(playing);
    playing = null;
  };

  const moves = { first: () => 0, prev: () => current() - 1, next: () => current() + 1, last: () => latest() };
  for (const [name, target] of Object.entries(moves)) {
    buttons[name].addEventListener("click", () => {
      if (buttons[name].getAttribute("aria-disabled") === "true") return;
      stop();
      show(target());
    });
  }
  buttons.play.addEventListener("click", () => {
    if (playing !== null) {
      stop();
      render();
      return;
    }
    if (position === null) position = 0; // from the start when at the end
    playing = setInterval(() => {
      const next = current() + 1;
      if (next >= latest()) stop();
      show(next);
    }, PLAY_STEP_MS);
    render();
  });
  slider.addEventListener("input", () => {
    stop();
    show(Number(slider.value));
  });

  render();
  fill();
  window.addEventListener("pagehide", () => {
    stop();
    if (ticker) clearInterval(ticker);
  });
  return { render, events: () => ordered() };
}

for (const root of document.querySelectorAll("[data-run-timeline]")) mountTimeline(root);
