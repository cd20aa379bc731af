// Topics a ChannelsTuningClient subscribes to (channels_tuning/wire/topics.py):
//
//   const ticker = await client.subscribe("ticker");          // resolves on "subscribed"
//   try { await client.subscribe("user.8"); }
//   catch (e) { if (e instanceof SubscriptionRefused) console.log(e.reason); }   // "forbidden"
//   client.addEventListener("message", (e) => e.topic === "ticker" && show(e.detail));
//   client.addEventListener("unsubscribed", (e) => console.log(e.detail));     // {topic, reason}
//
// - Requests go out when the socket is open; each held subscription is asked for again
//   after every reconnect, with the position the client has of the topic (topics with
//   history: what was missed is replayed, in order, once).
// - The answers to the client's own requests are not "message" events; the server's
//   own "unsubscribed" (a permission revoked) ends the subscription and is an
//   "unsubscribed" event. A topic's messages are "message" events with `topic` set
//   (codec "json": the detail is the message's data), and go to the subscription's
//   `onMessage` too.

import { encodeEnvelope } from "./envelope.js";

export class SubscriptionRefused extends Error {
  constructor(topic, reason) {
    super(`${topic}: ${reason}`);
    this.name = "SubscriptionRefused";
    this.topic = topic;
    this.reason = reason;
  }
}

const encoder = new TextEncoder();

export class Subscriptions {
  constructor(client) {
    this.client = client;
    this.held = new Map(); // topic -> {topic, params, onMessage, state}
    this.pending = new Map(); // id -> {topic, resolve, reject, sentOn}
    this.nextId = 1;
  }

  subscribe(topic, { params = undefined, onMessage = undefined, timeout = 10000 } = {}) {
    if (this.held.has(topic)) return Promise.reject(new Error(`already subscribed to ${topic}`));
    const subscription = { topic, params, onMessage, state: "subscribing" };
    this.held.set(topic, subscription);
    return this._ask(subscription, timeout).then(
      () => {
        subscription.state = "subscribed";
        return subscription;
      },
      (error) => {
        if (this.held.get(topic) === subscription) this.held.delete(topic);
        throw error;
      },
    );
  }

  unsubscribe(topic, { timeout = 10000 } = {}) {
    const subscription = this.held.get(topic);
    if (!subscription) return Promise.reject(new Error(`not subscribed to ${topic}`));
    this.held.delete(topic);
    subscription.state = "unsubscribed";
    if (this.client.state !== "open") return Promise.resolve();
    return this._request({ type: "ct.unsubscribe", topic }, timeout).catch((error) => {
      if (!(error instanceof SubscriptionRefused)) throw error; // not_subscribed: gone anyway
    });
  }

  /** The socket opened: send what waits, ask again for what was held. */
  opened(ws) {
    for (const entry of this.pending.values()) {
      if (entry.sentOn !== ws) this._send(ws, entry);
    }
    for (const subscription of this.held.values()) {
      if (subscription.state !== "subscribed") continue;
      subscription.state = "subscribing";
      this._ask(subscription, 10000).then(
        () => { subscription.state = "subscribed"; },
        (error) => {
          if (error instanceof SubscriptionRefused) this._ended(subscription.topic, error.reason);
        },
      );
    }
  }

  /** True if `message` (a decoded JSON object or envelope) was an answer handled here. */
  answer(message) {
    if (message === null || typeof message !== "object") return false;
    const { kind, topic } = message;
    if (kind !== "subscribed" && kind !== "error" && kind !== "unsubscribed") return false;
    const id = Number(message.id ?? message.seq ?? 0);
    const entry = id ? this.pending.get(id) : undefined;
    if (entry && entry.topic === topic) {
      this.pending.delete(id);
      if (kind === "error") entry.reject(new SubscriptionRefused(topic, message.error));
      else entry.resolve(message);
      return true;
    }
    if (kind === "unsubscribed" && !id) {
      this._ended(topic, message.reason ?? message.error ?? "");
      return true;
    }
    return false;
  }

  /** The subscription a message of `topic` belongs to, if it has an onMessage. */
  handler(topic) {
    return typeof topic === "string" ? this.held.get(topic)?.onMessage : undefined;
  }

  _ended(topic, reason) {
    const subscription = this.held.get(topic);
    if (subscription) {
      this.held.delete(topic);
      subscription.state = "unsubscribed";
    }
    this.client._emit("unsubscribed", { topic, reason });
  }

  _ask(subscription, timeout) {
    const request = { type: "ct.subscribe", topic: subscription.topic };
    if (subscription.params) request.params = subscription.params;
    const position = this.client.positions.get(subscription.topic);
    if (position) request.since = { epoch: position.epoch, offset: Number(position.offset) };
    return this._request(request, timeout);
  }

  _request(request, timeout) {
    const id = this.nextId++;
    request.id = id;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no answer to ${request.type} ${request.topic} in ${timeout} ms`));
      }, timeout);
      const entry = {
        topic: request.topic,
        request,
        sentOn: null,
        resolve: (value) => { clearTimeout(timer); resolve(value); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      };
      this.pending.set(id, entry);
      const ws = this.client._ws;
      if (ws && this.client.state === "open") this._send(ws, entry);
    });
  }

  _send(ws, entry) {
    entry.sentOn = ws;
    ws.send(this._encode(entry.request));
  }

  _encode(request) {
    if (this.client.options.codec !== "protobuf") return JSON.stringify(request);
    const fields = {
      kind: request.type === "ct.subscribe" ? "subscribe" : "unsubscribe",
      seq: request.id,
      topic: request.topic,
    };
    if (request.since) Object.assign(fields, request.since);
    if (request.params) fields.payload = encoder.encode(JSON.stringify(request.params));
    return encodeEnvelope(fields);
  }
}
