// A token that authenticates the client, refreshed before it expires (the server's
// channels_tuning.auth.TokenAuthMiddleware; the Python client's
// channels_tuning/client/credentials.py does the same).
//
// `token` is a string, or a function returning one (or a promise of one), called at
// every connection and before each expiry. It is offered as the subprotocol
// "ct-token.<token>" (not in the URL: not in access logs). After the accept the server
// says when it expires ({"type":"ct.token","exp":<unix s>}); `refreshMargin` ms before
// (or at two thirds of what is left, if sooner) the client sends
// {"type":"ct.refresh","token":…} and learns the next expiry from the answer
// ({"type":"ct.refreshed",…}). These frames are never "message" events. After 4005
// (expired) a client with a token function reconnects with a new token; with a fixed
// string it stops.

export const TOKEN_PROTOCOL_PREFIX = "ct-token.";
export const TOKEN_EXPIRED = 4005;
const ANNOUNCEMENTS = ['{"type":"ct.token"', '{"type":"ct.refreshed"'];

/** The subprotocols that carry `token` (none without one). */
export function tokenProtocols(token) {
  return token === undefined || token === null ? [] : [TOKEN_PROTOCOL_PREFIX + token];
}

/** The token now: the string, or what the function gives (a promise). */
export async function currentToken(source) {
  return typeof source === "function" ? await source() : source;
}

/** The expiry (Unix s) a ct.token or ct.refreshed frame announces; NaN for an
 * unreadable one; null when `data` is not such a frame. */
export function tokenAnnouncement(data) {
  if (typeof data !== "string" || !ANNOUNCEMENTS.some((prefix) => data.startsWith(prefix))) return null;
  try {
    return Number(JSON.parse(data).exp);
  } catch {
    return NaN;
  }
}

/** Milliseconds from `now` until a token expiring at `exp` (Unix s) is refreshed. */
export function refreshDelay(exp, marginMs, now = Date.now()) {
  const left = exp * 1000 - now;
  return Math.max(0, Math.min(left - marginMs, (left * 2) / 3));
}

export function refreshFrame(token) {
  return JSON.stringify({ type: "ct.refresh", token });
}
