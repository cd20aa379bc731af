// Requests to a consumer's declared methods (channels_tuning/wire/rpc.py):
//
//   const result = await client.request("cart.save", { items: [3, 4] }, { timeout: 10000 });
//
// Resolves with the method's result; rejects with RequestFailed (`code`, `message`:
// "unknown_method", "timeout", "internal" or the method's own). A request is sent once,
// on an open connection; if the connection drops before the answer it rejects (the
// method may or may not have run: the application decides whether to ask again).
// With codec "protobuf" requests and replies are envelopes (kinds "request", "reply";
// params and results as JSON in the payload), both ways.
//
// The server asks too (a consumer's request_client() and send_with_ack()):
//
//   client.onRequest("page.state", (params) => ({ visible: !document.hidden }));
//
// A handler returns the result (or a promise of it); throwing an error with a string
// `code` (a RequestFailed, say) answers that code, anything else "internal"; a method
// without a handler answers "unknown_method". A push is a "message" event, acknowledged
// once its listeners returned (with codec "protobuf": its envelope, of kind "push").

import { encodeEnvelope } from "./envelope.js";

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();
const jsonBytes = (value) => (value === undefined || value === null ? new Uint8Array(0) : utf8.encode(JSON.stringify(value)));
const fromJsonBytes = (bytes) => (bytes.length ? JSON.parse(fromUtf8.decode(bytes)) : null);

export class RequestFailed extends Error {
  constructor(method, code, message = "") {
    super(`${method}: ${code}${message ? ` (${message})` : ""}`);
    this.name = "RequestFailed";
    this.method = method;
    this.code = code;
    this.detail = message;
  }
}

export class Requests {
  constructor(client) {
    this.client = client;
    this.pending = new Map(); // id -> {method, resolve, reject, timer}
    this.nextId = 1;
    this.handlers = new Map(); // the server's requests this client answers: method -> fn
  }

  onRequest(method, handler) {
    this.handlers.set(method, handler);
  }

  /** True if `message` was the server's request (answered when its handler settles)
   * or a push (handed to `deliver`, then acknowledged), on the socket `ws`. */
  asked(ws, message, deliver) {
    if (message === null || typeof message !== "object") return false;
    if (this._protobuf() && message.kind === "request" && message.seq) {
      message = { kind: "request", id: Number(message.seq), method: message.topic, params: fromJsonBytes(message.payload) };
    } else if (this._protobuf() && message.kind === "push" && message.seq) {
      message = { kind: "push", id: Number(message.seq), data: message }; // the envelope, as data's
    }
    if (!Number.isInteger(message.id)) return false;
    const answer = (fields) => {
      // Only on the connection that asked: a reconnected socket is a new conversation.
      if (this.client._ws !== ws || this.client.state !== "open") return;
      if (!this._protobuf()) {
        ws.send(JSON.stringify({ type: "ct.reply", id: message.id, ...fields }));
        return;
      }
      const envelope = { kind: "reply", seq: message.id };
      if (fields.error !== undefined) Object.assign(envelope, { error: fields.error, detail: fields.message });
      else envelope.payload = jsonBytes(fields.result);
      ws.send(encodeEnvelope(envelope));
    };
    if (message.kind === "push") {
      deliver(message.data);
      answer({});
      return true;
    }
    if (message.kind !== "request") return false;
    const handler = this.handlers.get(message.method);
    Promise.resolve()
      .then(() => {
        if (!handler) throw new RequestFailed(message.method, "unknown_method", String(message.method));
        return handler(message.params);
      })
      .then(
        (result) => answer({ result: result ?? null }),
        (error) => {
          if (typeof error?.code === "string") {
            answer({ error: error.code, message: String(error.detail ?? error.message ?? "") });
          } else {
            console.error("channels-tuning: handler for the server's request failed", error);
            answer({ error: "internal", message: "" });
          }
        },
      );
    return true;
  }

  request(method, params = undefined, { timeout = 10000 } = {}) {
    const ws = this.client._ws;
    if (!ws || this.client.state !== "open") return Promise.reject(new Error("not connected"));
    const id = this.nextId++;
    const request = { type: "ct.request", id, method };
    if (params !== undefined) request.params = params;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no answer to ${method} in ${timeout} ms`));
      }, timeout);
      this.pending.set(id, { method, resolve, reject, timer });
      ws.send(this._protobuf()
        ? encodeEnvelope({ kind: "request", seq: id, topic: method, payload: jsonBytes(params) })
        : JSON.stringify(request));
    });
  }

  /** True if `message` (a decoded JSON object) answered a request. */
  answer(message) {
    if (message === null || typeof message !== "object" || message.kind !== "reply") return false;
    if (this._protobuf() && message.seq) {
      const { seq, error, detail, payload } = message;
      message = error ? { id: Number(seq), error, message: detail } : { id: Number(seq), result: fromJsonBytes(payload) };
    }
    const entry = this.pending.get(message.id);
    if (entry) {
      this.pending.delete(message.id);
      clearTimeout(entry.timer);
      if ("error" in message) entry.reject(new RequestFailed(entry.method, message.error, message.message ?? ""));
      else entry.resolve(message.result);
    }
    return true;
  }

  _protobuf() {
    return this.client.options.codec === "protobuf";
  }

  /** The connection ended: what waits for an answer will not get one. */
  closed() {
    for (const [id, entry] of this.pending) {
      clearTimeout(entry.timer);
      entry.reject(new Error(`connection closed before the answer to ${entry.method}`));
      this.pending.delete(id);
    }
  }
}
