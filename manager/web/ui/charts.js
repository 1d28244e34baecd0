// Line charts drawn as SVG by the page (no library): one path per series, broken where
// the history has a gap (null), y from 0 (or the data's minimum when it goes below) to
// a rounded maximum, time on x from the range asked for. Each <svg> carries
// data-points (how many non-null points it drew), which the browser test reads.
import { esc } from "./util.js";

const W = 320, H = 120, L = 56, R = 6, T = 8, B = 18;

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function timeLabel(ms, spanMs) {
  const d = new Date(ms);
  if (spanMs > 2 * 86400000) return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

/// series: [{name, points: [[t_ms, v|null], ...]}]; fmt: value -> label.
/// opts: {max} fixes the top of the axis (e.g. 100 for a percentage).
export function lineChart(title, series, fromMs, toMs, fmt, opts) {
  opts = opts || {};
  let lo = 0, hi = 0, count = 0, last = null;
  for (const s of series) for (const [, v] of s.points) {
    if (v == null) continue;
    count++; if (v > hi) hi = v; if (v < lo) lo = v;
  }
  for (const s of series) for (let i = s.points.length - 1; i >= 0; i--) {
    if (s.points[i][1] != null) { if (last == null) last = s.points[i][1]; break; }
  }
  const top = opts.max != null ? Math.max(opts.max, hi) : niceMax(hi);
  const span = Math.max(1, toMs - fromMs);
  const x = (t) => L + ((t - fromMs) / span) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (top - lo || 1)) * (H - T - B);
  const parts = [];
  for (const f of [0, 0.5, 1]) {
    const v = lo + (top - lo) * f, yy = y(v).toFixed(1);
    parts.push('<line class="grid" x1="' + L + '" x2="' + (W - R) + '" y1="' + yy + '" y2="' + yy + '"/>');
    parts.push('<text x="' + (L - 4) + '" y="' + (Number(yy) + 3) + '" text-anchor="end">' + esc(fmt(v)) + "</text>");
  }
  parts.push('<line class="axis" x1="' + L + '" x2="' + (W - R) + '" y1="' + (H - B) + '" y2="' + (H - B) + '"/>');
  for (const [f, anchor] of [[0, "start"], [0.5, "middle"], [1, "end"]]) {
    const t = fromMs + span * f;
    parts.push('<text x="' + x(t).toFixed(1) + '" y="' + (H - 4) + '" text-anchor="' + anchor + '">' + esc(timeLabel(t, span)) + "</text>");
  }
  series.forEach((s, i) => {
    let d = "", pen = false;
    for (const [t, v] of s.points) {
      if (v == null || t < fromMs || t > toMs) { pen = false; continue; }
      d += (pen ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
    }
    // A lone point between gaps still shows: a zero-length segment with round caps.
    d = d.replace(/M([\d.]+) ([\d.]+)(?=M|$)/g, "M$1 $2h0.01");
    if (d) parts.push('<path class="line l' + (i % 2) + '" stroke-linecap="round" d="' + d + '"><title>' + esc(s.name) + "</title></path>");
  });
  if (!count) parts.push('<text class="empty" x="' + (W / 2) + '" y="' + (H / 2) + '" text-anchor="middle">no data in this range</text>');
  const legend = series.length > 1 ? series.map((s, i) => '<span class="key l' + (i % 2) + '">' + esc(s.name) + "</span>").join(" ") : "";
  return '<div class="chart"><div class="title"><span>' + esc(title) + " " + legend + '</span><span class="last">' +
    (last == null ? "" : "now " + esc(fmt(last))) + "</span></div>" +
    '<svg viewBox="0 0 ' + W + " " + H + '" role="img" aria-label="' + esc(title) + '" data-points="' + count + '">' + parts.join("") + "</svg></div>";
}
