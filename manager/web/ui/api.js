// The manager's API as the page uses it: the session cookie (HttpOnly, set by
// POST /v1/session) authenticates every call; the CSRF value from the session answer is
// kept in memory only and sent as X-Armada-CSRF on every request that is not a GET.
// Nothing is written to the browser's Web Storage.
let csrf = null;
let onLoggedOut = () => {};

export class ApiError extends Error {
  constructor(status, body, path) {
    super((body && body.error) || "HTTP " + status + " on " + path);
    this.status = status; this.code = body && body.code; this.path = path;
  }
}

export function setLoggedOutHandler(f) { onLoggedOut = f; }

export async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (method !== "GET") {
    if (csrf) headers["X-Armada-CSRF"] = csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 204) return null;
  let data = null;
  const text = await r.text();
  if (text) { try { data = JSON.parse(text); } catch (_) { data = { error: text.slice(0, 200) }; } }
  if (r.status === 401 && path !== "/v1/session") { csrf = null; onLoggedOut(); }
  if (!r.ok) throw new ApiError(r.status, data, path);
  return data;
}
export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body === undefined ? {} : body);
export const del = (path) => api("DELETE", path);

/// GET /v1/session: true when the browser already holds a live session cookie.
export async function resume() {
  try { const s = await api("GET", "/v1/session"); csrf = s.csrf; return true; }
  catch (e) { if (e.status === 401 || e.status === 404) return false; throw e; }
}
export async function login(token) {
  const s = await api("POST", "/v1/session", { token });
  csrf = s.csrf;
}
export async function logout() {
  try { await api("DELETE", "/v1/session"); } finally { csrf = null; }
}
