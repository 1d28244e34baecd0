// Formatting helpers shared by the views. Every string from the API goes through esc()
// before it is put into markup: hostnames, labels and messages come from nodes.
export const $ = (id) => document.getElementById(id);

const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export function esc(s) { return String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ESC[c]); }

export function bytes(n) {
  if (n == null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}
export function pct(r) { return r == null ? "–" : (r * 100).toFixed(0) + " %"; }
export function num(v, digits) { return v == null ? "–" : Number(v).toFixed(digits); }

export function ago(ms) {
  if (ms == null) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
export function duration(s) {
  if (s == null) return "–";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? d + " d " + h + " h" : h ? h + " h " + m + " min" : m + " min";
}
export function when(ms) {
  if (ms == null) return "–";
  const d = new Date(ms);
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + d.toLocaleTimeString();
}

// Service colours: one of 12 classes (c0..c11) by the service's rank among all service
// ids, so up to 12 services never share one and a service keeps its colour across
// views. Classes, not style attributes: the page's CSP forbids inline style.
export function colours(services) {
  const ids = services.map((s) => s.id).sort();
  const m = new Map(ids.map((id, i) => [id, "c" + (i % 12)]));
  return (id) => m.get(id) || "c11";
}

// A status word as a badge; the class is derived from the word but only [a-z_] kept.
export function badge(word, title) {
  if (word == null) return "";
  const cls = "s-" + String(word).toLowerCase().replace(/[^a-z_]/g, "");
  return '<span class="badge ' + cls + '"' + (title ? ' title="' + esc(title) + '"' : "") + ">" + esc(word) + "</span>";
}

export function flash(text, bad) {
  const box = $("flash");
  const div = document.createElement("div");
  div.className = "msg" + (bad ? " bad" : "");
  div.textContent = text;
  box.prepend(div);
  while (box.children.length > 3) box.lastChild.remove();
  setTimeout(() => div.remove(), 8000);
}
