// The API client: the bearer token, where it is kept, and JSON requests.

const KEY = "tally.token";

/** HTTPError is a non-2xx answer; status 0 means the node was unreachable. */
export class HTTPError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * takeTokenFromURL moves a ?token= from the address bar into session
 * storage and removes it from the URL (and so from the history), so it is
 * not left in the address bar, bookmarks or screenshots.
 */
export function takeTokenFromURL() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token === null) return false;
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  if (token.trim()) saveToken(token.trim(), false);
  return true;
}

/**
 * takeLinkFromURL removes a ?link= (a sign-in link token) from the
 * address bar and the history and answers it ("" when there is none). The
 * link token is no credential: it only opens a session, once.
 */
export function takeLinkFromURL() {
  const url = new URL(location.href);
  const link = url.searchParams.get("link");
  if (link === null) return "";
  url.searchParams.delete("link");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  return link.trim();
}

/**
 * exchangeLink opens a session with a sign-in link token (POST
 * api/v1/session): it answers {token, expires, subject, role} or throws
 * HTTPError (401: expired, used already or not a link).
 */
export async function exchangeLink(link) {
  let resp;
  try {
    resp = await fetch("api/v1/session", { method: "POST", headers: { Authorization: "Bearer " + link }, cache: "no-store" });
  } catch (e) {
    throw new HTTPError(0, "node unreachable");
  }
  if (!resp.ok) {
    let msg = resp.statusText;
    try {
      msg = (await resp.json()).error || msg;
    } catch (_) { /* not JSON */ }
    throw new HTTPError(resp.status, msg);
  }
  return resp.json();
}

/** saveToken keeps the token for this tab, or on this device if remember. */
export function saveToken(token, remember) {
  clearToken();
  (remember ? localStorage : sessionStorage).setItem(KEY, token);
}

/** loadToken returns the kept token or "". */
export function loadToken() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
}

/** clearToken forgets the token everywhere. */
export function clearToken() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

/** Client calls /api/v1 with the token. */
export class Client {
  constructor(token) {
    this.token = token;
  }

  headers() {
    return { Authorization: "Bearer " + this.token };
  }

  /** fetch answers the Response of GET /api/v1/<path>, or throws HTTPError. */
  async fetch(path, params, signal) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== "" && v !== null) q.set(k, v);
    const qs = q.toString();
    let resp;
    try {
      resp = await fetch("api/v1/" + path + (qs ? "?" + qs : ""), { headers: this.headers(), cache: "no-store", signal });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new HTTPError(0, "node unreachable");
    }
    if (!resp.ok) {
      let msg = resp.statusText;
      try {
        msg = (await resp.json()).error || msg;
      } catch (_) { /* not JSON */ }
      throw new HTTPError(resp.status, msg);
    }
    return resp;
  }

  /** get answers the decoded JSON of GET /api/v1/<path>. */
  async get(path, params, signal) {
    return (await this.fetch(path, params, signal)).json();
  }
}

/** filenameOf reads the file name from a Content-Disposition header. */
export function filenameOf(disposition, fallback) {
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition || "");
  return m ? decodeURIComponent(m[1]) : fallback;
}
