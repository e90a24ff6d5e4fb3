// Talking to the server. Every path is relative to the page (so a server behind a path prefix
// works), every request carries the saved token, and every error becomes an ApiError with the
// server's own message, the field it names and the wait it asks for.

const TOKEN_KEY = "imagine.token";

export function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, message, { field = null, waitS = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0: the server could not be reached
    this.field = field; // as the server names it: "input.width", "version", ...
    this.waitS = waitS; // Retry-After (429) or estimated_time (503), in seconds
  }
}

// A URL the server gave (a result file) as a path on this page's server: the page never
// fetches from another origin, even when the server named itself by another host name.
export function local(url) {
  const parsed = new URL(url, document.baseURI);
  return parsed.origin === location.origin ? parsed.href : parsed.pathname.slice(1) + parsed.search;
}

export async function request(path, { method = "GET", body, signal, accept } = {}) {
  const headers = { accept: accept || "application/json" };
  const saved = token();
  if (saved) headers.authorization = `Bearer ${saved}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `Cannot reach the server (${err.message}).`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function json(path, options) {
  return (await request(path, options)).json();
}

async function errorOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: the status line says enough
  }
  // Problem details (the job routes: detail, invalid_fields) or the HF shape (error).
  const message =
    body.detail ||
    (typeof body.error === "string" ? body.error : body.error?.message) ||
    `HTTP ${response.status} ${response.statusText}`.trim();
  const field = body.invalid_fields?.[0]?.field ?? null;
  const retry = Number(response.headers.get("retry-after"));
  let waitS = null;
  if (Number.isFinite(retry) && retry > 0) waitS = retry;
  else if (typeof body.estimated_time === "number")
    waitS = Math.max(1, Math.ceil(body.estimated_time));
  return new ApiError(response.status, message, { field, waitS });
}

// The events of a server-sent event stream, read with fetch (EventSource cannot send the
// token): yields {type, data} until the server ends the stream.
export async function* events(path, signal) {
  const response = await request(path, { signal, accept: "text/event-stream" });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  let type = "message";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      for (;;) {
        const end = buffer.search(/[\r\n]/);
        // A lone \r at the end may be the first half of \r\n: wait for the next chunk.
        if (end < 0 || (buffer[end] === "\r" && end === buffer.length - 1)) break;
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
        if (line === "") {
          if (data.length) yield { type, data: data.join("\n") };
          data = [];
          type = "message";
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (name === "event") type = text;
          else if (name === "data") data.push(text);
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
