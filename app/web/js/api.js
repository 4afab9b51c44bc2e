// The public /v1 API, called from the page's own origin with the key in the Authorization
// header only (never in a URL). The key lives in sessionStorage: gone when the tab closes.

const KEY = "labelwise.key";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }

  // Worth trying again later: the network, a timeout, a server in trouble.
  get transient() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

let unauthorized = () => {};

export function onUnauthorized(handler) {
  unauthorized = handler;
}

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY);
}

function url(path, query) {
  // Relative to the page: works behind a proxy that mounts the service under a prefix.
  const target = new URL(path, document.baseURI);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null) target.searchParams.set(name, String(value));
  }
  return target;
}

export async function api(method, path, { body, query, keepalive = false } = {}) {
  const headers = { Authorization: `Bearer ${getKey() || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      keepalive,
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, { title: "Offline", detail: "The server could not be reached." });
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new ApiError(response.status, data || {});
    if (response.status === 401) unauthorized(error);
    throw error;
  }
  return data;
}

export const get = (path, query) => api("GET", path, { query });
export const post = (path, body, options = {}) => api("POST", path, { body, ...options });
export const del = (path, options = {}) => api("DELETE", path, options);

// Every item of a paged list ({items, next_cursor}), up to `max` items.
export async function all(path, query = {}, max = 20000) {
  const found = [];
  let cursor = null;
  do {
    const page = await get(path, { ...query, limit: 1000, cursor });
    found.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && found.length < max);
  return { items: found, complete: !cursor };
}
