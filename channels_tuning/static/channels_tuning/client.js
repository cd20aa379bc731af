// channels-tuning browser client: a WebSocket that stays connected, politely.
//
//   import { ChannelsTuningClient } from "/static/channels_tuning/client.js";
//   const client = new ChannelsTuningClient("wss://example.org/ws/chat/lobby/", { codec: "json" });
//   client.addEventListener("message", (e) => show(e.detail));
//   client.addEventListener("reconnecting", (e) => status(`reconnecting in ${e.detail.delay} ms`));
//   client.start();
//   client.send({ message: "hello" });
//
// - Offers the "channels-tuning.v1" subprotocol (before any of `protocols`): a tuned
//   consumer then sends it heartbeats, history envelopes, "subscribed" and "presence"
//   frames; a plain page that does not offer it gets only what its consumer sends.
// - Answers the server's heartbeat pings ({"type":"ct.ping"} and the binary 00 09),
//   and protobuf envelopes of kind "ping".
// - Treats the server as dead when no frame arrived for `deadAfter` ms, and reconnects.
// - Reconnects with exponential backoff and full jitter: attempt n waits a random time
//   in [0, min(maxDelay, initialDelay * factor ** n)]; the attempt count goes back to 0
//   after a connection stayed open `stableAfter` ms.
// - Close codes: 1000, 1003, 1007, 1009 stop the client (the session is over, or the
//   client sends what the server never accepts); 1008 and 1013 wait `tryLaterDelay`
//   plus the backoff; 1001 reconnects at once (random delay up to `initialDelay`);
//   everything else, and lost connections, use the backoff.
// - While the browser is offline it waits (state "offline") and reconnects on `online`.
//   With `reconnectOnVisible`, a page coming back into view reconnects at once.
// - Messages sent while disconnected wait in a queue of `maxQueue`; when it is full
//   the oldest is dropped (counted in `dropped`).
// - Recovery (groups with HISTORY on the server): the client keeps the last offset and
//   epoch of each topic it gets numbered messages for, asks for what it missed when it
//   reconnects (`?ct_recover=topic:epoch:offset` in the URL), and drops a message it
//   already has. A "subscribed" message with `recovered: false` (also a "recovery"
//   event) means messages were lost for good: reload the state. Off with `recover: false`.
// - Tokens (`token`, `refreshMargin`): offered in the handshake and refreshed before
//   they expire; see credentials.js.
// - Topics: `await client.subscribe(topic)` resolves once subscribed, rejects with
//   SubscriptionRefused (its `reason`), is asked again after every reconnect; an
//   "unsubscribed" event when the server ends one; see subscriptions.js.
// - Requests: `await client.request(method, params)` resolves with the result of the
//   consumer's @rpc method or rejects with RequestFailed; `client.onRequest(method,
//   handler)` answers the consumer's request_client(); a send_with_ack() push is a
//   "message" event, acknowledged after its listeners; see requests.js.
// Events: "open", "message" (detail: the message; with codec "json", a numbered
// message of a group with history is unwrapped: detail is its data, and the event's
// `topic`, `offset` and `epoch` say where it stands), "subscribed" and "recovery"
// (detail: {topic, recovered, offset, epoch}), "presence" (detail: {topic, joined,
// left}), "unsubscribed" (detail: {topic, reason}), "reconnecting" (detail: {delay,
// attempt, code}), "close" (detail: {code, reason, willReconnect}), "state".

import { decodeEnvelope, encodeEnvelope, EnvelopeDecodeError } from "./envelope.js";
import { ABNORMAL, DEFAULT_RECONNECT, RECONNECT_POLICY } from "./reconnect_policy.js";
import { currentToken, refreshDelay, refreshFrame, TOKEN_EXPIRED, tokenAnnouncement, tokenProtocols } from "./credentials.js";
import { RequestFailed, Requests } from "./requests.js";
import { SubscriptionRefused, Subscriptions } from "./subscriptions.js";

export { decodeEnvelope, encodeEnvelope, EnvelopeDecodeError };
export { ABNORMAL, DEFAULT_RECONNECT, RECONNECT_POLICY };
export { RequestFailed, SubscriptionRefused };

export const PING_TEXT = '{"type":"ct.ping"}';
export const PONG_TEXT = '{"type":"ct.pong"}';
/** Topics one reconnect may ask to recover (channels_tuning.wire.offsets). */
export const MAX_RECOVER_REQUESTS = 32;
/** The subprotocol that asks a tuned consumer for heartbeats and envelopes. */
export const SUBPROTOCOL = "channels-tuning.v1";

/** What the client offers in the handshake: SUBPROTOCOL, then the application's own. */
export function offeredProtocols(protocols) {
  const own = protocols === undefined ? [] : [].concat(protocols);
  return [SUBPROTOCOL, ...own.filter((p) => p !== SUBPROTOCOL)];
}

/** What the client does after close `code`: "stop", "now", "later" or "backoff"
 * (the table is generated from channels_tuning/wire/reconnect.py). */
export function reconnectAction(code) {
  return RECONNECT_POLICY[String(code)] ?? DEFAULT_RECONNECT;
}

export const DEFAULTS = Object.freeze({
  // "raw" (strings and ArrayBuffers), "json" (JSON values), "json-envelope"
  // ({"kind":"data","topic":…,"seq":…,"data":…}, the server's JsonCodec) or "protobuf".
  codec: "raw",
  initialDelay: 500,
  factor: 2,
  maxDelay: 20000,
  maxAttempts: Infinity,
  stableAfter: 10000,
  tryLaterDelay: 10000,
  deadAfter: 60000,
  maxQueue: 100,
  reconnectOnVisible: false,
  recover: true,
  protocols: undefined,
  token: undefined,
  refreshMargin: 30000,
});

/** `url` with one ct_recover parameter per topic position (replacing any there). */
export function recoverUrl(url, positions) {
  const [base, hash = ""] = url.split("#", 2);
  const [path, query = ""] = base.split("?", 2);
  const params = query.split("&").filter((p) => p && !p.startsWith("ct_recover="));
  for (const [topic, { epoch, offset }] of positions) {
    params.push(`ct_recover=${encodeURIComponent(`${topic}:${epoch}:${offset}`)}`);
  }
  return path + (params.length ? `?${params.join("&")}` : "") + (hash ? `#${hash}` : "");
}

/** The recovery fields of a decoded message, or null (JSON objects and envelopes). */
export function positionOf(message) {
  if (message === null || typeof message !== "object") return null;
  const { kind, topic, offset, epoch } = message;
  if ((kind !== "data" && kind !== "subscribed") || typeof topic !== "string" || !topic) return null;
  if (typeof epoch !== "string" || !epoch || (typeof offset !== "number" && typeof offset !== "bigint")) return null;
  return { kind, topic, offset: Number(offset), epoch, recovered: message.recovered === true };
}

/** The upper bound of attempt n's delay (ms). */
export function backoffCap(attempt, { initialDelay, factor, maxDelay } = DEFAULTS) {
  return Math.min(maxDelay, initialDelay * factor ** Math.min(attempt, 64));
}

/** Full jitter: uniform in [0, backoffCap(attempt)]. */
export function backoffDelay(attempt, options = DEFAULTS, random = Math.random) {
  return random() * backoffCap(attempt, options);
}

/** Delay (ms) before reconnecting after close `code`, or null: do not reconnect. */
export function reconnectDelay(code, attempt, options = DEFAULTS, random = Math.random) {
  const action = reconnectAction(code);
  if (action === "stop") return null;
  if (action === "now") return random() * options.initialDelay;
  if (action === "later") return options.tryLaterDelay + backoffDelay(attempt, options, random);
  return backoffDelay(attempt, options, random);
}

function emit(target, type, detail, extra = undefined) {
  const event = new Event(type);
  event.detail = detail; // CustomEvent is not global in every runtime (Node 18)
  if (extra) Object.assign(event, extra);
  target.dispatchEvent(event);
}

export class ChannelsTuningClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.window = options.window ?? (typeof window === "undefined" ? undefined : window);
    this.state = "idle";
    this.attempt = 0;
    this.connections = 0;
    this.dropped = 0;
    this.duplicates = 0; // numbered messages received twice (dropped)
    this.gaps = 0; // numbered messages missing (the server said recovered: false, or a jump)
    this.refreshes = 0; // token refreshes sent
    this.refreshFailures = 0; // refreshes whose token function failed
    this.positions = new Map(); // topic -> {epoch, offset}: what the client has
    this.subscriptions = new Subscriptions(this); // topics asked for (subscriptions.js)
    this.requests = new Requests(this); // requests waiting for their reply (requests.js)
    this.outbox = [];
    this.nextRetryAt = null; // epoch ms of the next attempt while reconnecting
    this._ws = null;
    this._timer = null;
    this._deadTimer = null;
    this._refreshTimer = null;
    this._openedAt = 0;
    this._stopped = false;
    this._onOnline = () => this._reconnectNow();
    this._onVisible = () => {
      if (this.window?.document?.visibilityState === "visible") this._reconnectNow();
    };
  }

  start() {
    this._stopped = false;
    this.window?.addEventListener?.("online", this._onOnline);
    if (this.options.reconnectOnVisible) this.window?.document?.addEventListener?.("visibilitychange", this._onVisible);
    this._connect();
    return this;
  }

  /** Send now, or queue until the connection is open. */
  send(message, envelope = {}) {
    const frame = this._encode(message, envelope);
    if (this._ws && this.state === "open") {
      this._ws.send(frame);
      return true;
    }
    if (this.outbox.length >= this.options.maxQueue) {
      this.outbox.shift();
      this.dropped += 1;
    }
    this.outbox.push(frame);
    return false;
  }

  /** Subscribe to `topic`: resolves once the server said "subscribed", rejects with
   * SubscriptionRefused. Options: params, onMessage(detail, event), timeout (ms). */
  subscribe(topic, options = {}) {
    return this.subscriptions.subscribe(topic, options);
  }

  /** End the subscription to `topic`. */
  unsubscribe(topic, options = {}) {
    return this.subscriptions.unsubscribe(topic, options);
  }

  /** Call the consumer's declared method `method`: resolves with its result, rejects
   * with RequestFailed. Options: timeout (ms). */
  request(method, params = undefined, options = {}) {
    return this.requests.request(method, params, options);
  }

  /** Answer the server's requests for `method` (a consumer's request_client()) with
   * `handler(params)`: its result, or a promise of it. */
  onRequest(method, handler) {
    this.requests.onRequest(method, handler);
  }

  /** Close and stop reconnecting. */
  close(code = 1000, reason = "") {
    this._stopped = true;
    clearTimeout(this._timer);
    clearTimeout(this._deadTimer);
    clearTimeout(this._refreshTimer);
    this.window?.removeEventListener?.("online", this._onOnline);
    this.window?.document?.removeEventListener?.("visibilitychange", this._onVisible);
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close(code, reason);
    }
    this._setState("closed");
    emit(this, "close", { code, reason, willReconnect: false });
  }

  // ------------------------------------------------------------ internals

  _setState(state) {
    if (this.state !== state) {
      this.state = state;
      emit(this, "state", state);
    }
  }

  _connect() {
    if (this._stopped) return;
    clearTimeout(this._timer);
    this._timer = null;
    this.nextRetryAt = null;
    this._setState(this.connections ? "reconnecting" : "connecting");
    const source = this.options.token;
    if (typeof source !== "function") {
      this._open(source);
      return;
    }
    currentToken(source).then(
      (token) => this._open(token),
      (error) => this._handleClose(ABNORMAL, `no token: ${error}`),
    );
  }

  _open(token) {
    if (this._stopped) return;
    let ws;
    try {
      const url = this.options.recover && this.positions.size ? recoverUrl(this.url, this.positions) : this.url;
      ws = new this.WebSocket(url, [...offeredProtocols(this.options.protocols), ...tokenProtocols(token)]);
    } catch (error) {
      this._handleClose(ABNORMAL, String(error));
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    ws.onopen = () => {
      this.connections += 1;
      this._openedAt = Date.now();
      this._setState("open");
      this._armDeadTimer();
      while (this.outbox.length && this._ws === ws) ws.send(this.outbox.shift());
      this.subscriptions.opened(ws);
      emit(this, "open", { connections: this.connections });
    };
    ws.onmessage = (event) => {
      this._armDeadTimer();
      this._receive(ws, event.data);
    };
    ws.onclose = (event) => {
      if (this._ws === ws) this._handleClose(event.code, event.reason);
    };
  }

  _armDeadTimer() {
    clearTimeout(this._deadTimer);
    const ws = this._ws;
    this._deadTimer = setTimeout(() => {
      if (this._ws !== ws) return;
      // No frame, not even a ping: the server or the path to it is gone. Do not wait
      // for a closing handshake that will never complete.
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(4000, "no heartbeat");
      } catch {
        /* already closing */
      }
      this._handleClose(ABNORMAL, "no heartbeat from the server");
    }, this.options.deadAfter);
  }

  _receive(ws, data) {
    if (typeof data === "string") {
      if (data === PING_TEXT) {
        ws.send(PONG_TEXT);
        return;
      }
      const expires = tokenAnnouncement(data);
      if (expires !== null) {
        this._scheduleRefresh(ws, expires);
        return;
      }
    } else {
      const bytes = new Uint8Array(data);
      if (bytes.length === 2 && bytes[0] === 0) {
        if (bytes[1] === 0x09) ws.send(Uint8Array.of(0x00, 0x0a));
        return; // 00 09 ping, 00 0a pong: heartbeat frames, never messages
      }
    }
    let message;
    try {
      message = this._decode(data);
    } catch (error) {
      console.warn("channels-tuning: undecodable frame dropped", error);
      return;
    }
    const codec = this.options.codec;
    if (codec === "protobuf" || codec === "json-envelope") {
      if (message.kind === "ping") {
        ws.send(this._encode(undefined, { kind: "pong", seq: message.seq }));
        return;
      }
      if (message.kind === "pong") return;
    }
    if (this.requests.answer(message)) return;
    if (this.requests.asked(ws, message, (data) => emit(this, "message", data))) return;
    if (this.subscriptions.answer(message)) {
      // An answer to the client's own request; a position comes with "subscribed".
      const position = positionOf(message);
      if (position !== null && this.options.recover) this._track(position);
      return;
    }
    if (message !== null && typeof message === "object" && message.kind === "presence") {
      const { joined = [], left = [] } = message.data ?? message;
      emit(this, "presence", { topic: message.topic, joined, left });
      return;
    }
    const position = positionOf(message);
    if (position !== null) {
      if (this.options.recover && !this._track(position)) return;
      const { kind, topic, offset, epoch, recovered } = position;
      if (kind === "subscribed") {
        emit(this, "subscribed", { topic, recovered, offset, epoch });
        return;
      }
      if (codec === "json") {
        this._topicMessage(message.data, { topic, offset, epoch });
        return;
      }
    } else if (codec === "json" && message?.kind === "data" && this.subscriptions.held.has(message.topic)) {
      this._topicMessage(message.data, { topic: message.topic }); // a topic without history
      return;
    }
    const handler = this.subscriptions.handler(message?.topic);
    if (handler) handler(message, { topic: message.topic });
    emit(this, "message", message);
  }

  _topicMessage(detail, where) {
    this.subscriptions.handler(where.topic)?.(detail, where);
    emit(this, "message", detail, where);
  }

  _emit(type, detail, extra = undefined) {
    emit(this, type, detail, extra);
  }

  /** Remember a topic's position, most recent last; at most MAX_RECOVER_REQUESTS
   * topics (what a server accepts in one URL): the oldest is forgotten. */
  _keep(topic, position) {
    this.positions.delete(topic);
    this.positions.set(topic, position);
    while (this.positions.size > MAX_RECOVER_REQUESTS) this.positions.delete(this.positions.keys().next().value);
  }

  /** Keep the topic's position; false for a message the client already has. */
  _track(position) {
    const { kind, topic, offset, epoch } = position;
    const known = this.positions.get(topic);
    if (kind === "subscribed") {
      // recovered: the missed messages follow, from our offset; else start from here.
      if (!position.recovered || !known || known.epoch !== epoch) {
        if (known) this.gaps += 1;
        this._keep(topic, { epoch, offset });
      }
      emit(this, "recovery", { topic, recovered: position.recovered, offset, epoch });
      return true;
    }
    if (known && known.epoch === epoch) {
      if (offset <= known.offset) {
        this.duplicates += 1;
        return false;
      }
      if (offset > known.offset + 1) this.gaps += 1;
    }
    this._keep(topic, { epoch, offset });
    return true;
  }

  _scheduleRefresh(ws, expires) {
    clearTimeout(this._refreshTimer);
    const source = this.options.token;
    if (typeof source !== "function" || !Number.isFinite(expires)) return;
    this._refreshTimer = setTimeout(async () => {
      try {
        const token = await source();
        if (this._ws === ws) {
          ws.send(refreshFrame(token));
          this.refreshes += 1;
        }
      } catch (error) {
        this.refreshFailures += 1;
        console.warn("channels-tuning: token refresh failed", error);
      }
    }, refreshDelay(expires, this.options.refreshMargin));
  }

  _handleClose(code, reason) {
    this.requests.closed();
    clearTimeout(this._deadTimer);
    clearTimeout(this._refreshTimer);
    this._ws = null;
    if (this._openedAt && Date.now() - this._openedAt >= this.options.stableAfter) this.attempt = 0;
    this._openedAt = 0;
    // A fixed token that expired would be refused again.
    const expiredForGood = code === TOKEN_EXPIRED && typeof this.options.token !== "function";
    const delay = this._stopped || expiredForGood ? null : reconnectDelay(code, this.attempt, this.options);
    this.attempt += 1;
    const willReconnect = delay !== null && this.attempt <= this.options.maxAttempts;
    emit(this, "close", { code, reason, willReconnect });
    if (!willReconnect) {
      this._stopped = true;
      this._setState("closed");
      return;
    }
    if (this.window?.navigator?.onLine === false) {
      this._setState("offline"); // the "online" event reconnects
      return;
    }
    this._setState("reconnecting");
    this.nextRetryAt = Date.now() + delay;
    emit(this, "reconnecting", { delay, attempt: this.attempt, code });
    this._timer = setTimeout(() => this._connect(), delay);
  }

  _reconnectNow() {
    if (this._stopped || this._ws) return;
    if (this.state === "reconnecting" || this.state === "offline") this._connect();
  }

  _encode(message, envelope) {
    switch (this.options.codec) {
      case "json":
        return JSON.stringify(message);
      case "json-envelope": {
        const out = { kind: "data", ...envelope };
        for (const key of Object.keys(out)) if (!out[key]) delete out[key];
        if (message !== undefined) out.data = message;
        return JSON.stringify({ kind: out.kind ?? "data", ...out });
      }
      case "protobuf":
        return encodeEnvelope({ kind: "data", ...envelope, payload: message });
      default:
        return message;
    }
  }

  _decode(data) {
    switch (this.options.codec) {
      case "json":
        return JSON.parse(data);
      case "json-envelope": {
        const envelope = JSON.parse(data);
        if (envelope === null || typeof envelope !== "object") throw new SyntaxError("not an envelope");
        return { kind: "data", seq: 0, topic: "", ...envelope };
      }
      case "protobuf":
        if (typeof data === "string") throw new EnvelopeDecodeError("text frame");
        return decodeEnvelope(data);
      default:
        return data;
    }
  }
}
