// One way to show a moment to people, on every page and in the admin: UTC, 24-hour, marked "UTC".
// The server renders the same text (runs/display.py), so a time reads alike before and after
// a page's script runs, whoever's browser and wherever the server is.

const pad = (n) => String(n).padStart(2, "0");

/** 2026-11-27 16:07:59 UTC (from an ISO string, a Date or epoch milliseconds); "—" for none. */
export function toSecond(moment) {
  if (moment === null || moment === undefined || moment === "") return "—";
  const d = new Date(moment);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

/** 16:07:59 UTC: the time of day alone, for "updated at" lines. */
export function timeOfDay(moment) {
  return toSecond(moment).slice(11);
}
