// Requests to a consumer's declared methods (channels_tuning/wire/rpc.py):
//
//   const result = await client.request("cart.save", { items: [3, 4] }, { timeout: 10000 });
//
// Resolves with the method's result; rejects with RequestFailed (`code`, `message`:
// "unknown_method", "timeout", "internal" or the method's own). A request is sent once,
// on an open connection; if the connection drops before the answer it rejects (the
// method may or may not have run: the application decides whether to ask again).
// JSON text only (codec "json" or "raw").

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
      ws.send(JSON.stringify(request));
    });
  }

  /** True if `message` (a decoded JSON object) answered a request. */
  answer(message) {
    if (message === null || typeof message !== "object" || message.kind !== "reply") return false;
    const entry = this.pending.get(message.id);
    if (entry) {
      this.pending.delete(message.id);
      clearTimeout(entry.timer);
      if ("error" in message) entry.reject(new RequestFailed(entry.method, message.error, message.message ?? ""));
      else entry.resolve(message.result);
    }
    return true;
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
