// The API client: JSON over same-origin fetch with the session cookie.
// Errors are RFC 9457 problem details; a 401 anywhere means "show the login form".

export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail || "";
  }
}

let onUnauthorized = () => {};

/** Called with no arguments whenever a request answers 401 (except the login itself). */
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

/** A URL under /api/v1 with query parameters; arrays repeat the key, empty values are left out. */
export function apiUrl(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") query.append(key, String(item));
    }
  }
  const text = query.toString();
  return `/api/v1${path}${text ? `?${text}` : ""}`;
}

/** The JSON answer of a request (null for 204); throws ApiError for any error status. */
export async function api(path, { method = "GET", params, body } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(apiUrl(path, params), init);
  } catch (error) {
    throw new ApiError(0, "network", String(error));
  }
  if (response.status === 401 && path !== "/login") onUnauthorized();
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const problem = typeof data === "object" && data !== null ? data : {};
    throw new ApiError(response.status, problem.title || response.statusText, problem.detail);
  }
  return data;
}

/** Every item of a paginated list (for lists that are small: stations, open alerts). */
export async function allPages(path, params = {}, perPage = 500) {
  const items = [];
  for (let page = 1; ; page += 1) {
    const answer = await api(path, { params: { ...params, page, per_page: perPage } });
    items.push(...answer.items);
    if (answer.items.length === 0 || items.length >= answer.total) return items;
  }
}
