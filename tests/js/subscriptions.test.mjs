// Topics in the browser client, with a scripted WebSocket (node --test). The real
// browser, server and Redis are exercised in tests/e2e/test_topics.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ChannelsTuningClient, decodeEnvelope, encodeEnvelope, RequestFailed, SubscriptionRefused,
} from "../../channels_tuning/static/channels_tuning/client.js";
import { fakeSocketClass } from "./fake_socket.mjs";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const fast = { initialDelay: 5, factor: 2, maxDelay: 20, stableAfter: 1000, tryLaterDelay: 10 };

test("subscribe resolves on subscribed, rejects with the reason, routes the topic's messages", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const client = new ChannelsTuningClient("ws://x/ws/dash/", { ...fast, codec: "json", WebSocket: FakeWebSocket });
  const messages = [];
  client.addEventListener("message", (e) => messages.push([e.topic, e.detail]));
  const seen = [];
  client.start();
  const ticker = client.subscribe("ticker", { onMessage: (detail, where) => seen.push([where.topic, detail]) });
  const secret = client.subscribe("user.8", { params: { why: 1 } });
  await sleep(1);
  const [first, second] = sockets[0].requests();
  assert.deepEqual(first, { type: "ct.subscribe", topic: "ticker", id: 1 });
  assert.deepEqual(second, { type: "ct.subscribe", topic: "user.8", params: { why: 1 }, id: 2 });
  sockets[0].receive(JSON.stringify({ kind: "subscribed", topic: "ticker", id: 1 }));
  sockets[0].receive(JSON.stringify({ kind: "error", topic: "user.8", id: 2, error: "forbidden" }));
  assert.equal((await ticker).state, "subscribed");
  await assert.rejects(secret, (error) => error instanceof SubscriptionRefused && error.reason === "forbidden");
  sockets[0].receive(JSON.stringify({ kind: "data", topic: "ticker", data: { px: 1 } }));
  sockets[0].receive(JSON.stringify({ kind: "data", topic: "ticker", offset: 3, epoch: "ab", data: { px: 2 } }));
  assert.deepEqual(messages, [["ticker", { px: 1 }], ["ticker", { px: 2 }]]); // answers are no messages
  assert.deepEqual(seen, messages);
  assert.deepEqual([...client.subscriptions.held.keys()], ["ticker"]);
  client.close();
});

test("held topics are asked for again after a reconnect, with the position the client has", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const client = new ChannelsTuningClient("ws://x/ws/dash/", { ...fast, codec: "json", WebSocket: FakeWebSocket });
  const ended = [];
  client.addEventListener("unsubscribed", (e) => ended.push(e.detail));
  client.start();
  const news = client.subscribe("news.world");
  const desk = client.subscribe("desk.ops");
  await sleep(1);
  sockets[0].receive(JSON.stringify({ kind: "subscribed", topic: "news.world", id: 1, offset: 3, epoch: "ab", recovered: true }));
  sockets[0].receive(JSON.stringify({ kind: "subscribed", topic: "desk.ops", id: 2 }));
  await news;
  await desk;
  sockets[0].receive(JSON.stringify({ kind: "data", topic: "news.world", offset: 4, epoch: "ab", data: 4 }));
  sockets[0].serverClose(1012);
  await sleep(40);
  const again = sockets[1].requests();
  assert.deepEqual(again, [
    { type: "ct.subscribe", topic: "news.world", since: { epoch: "ab", offset: 4 }, id: 3 },
    { type: "ct.subscribe", topic: "desk.ops", id: 4 },
  ]);
  sockets[1].receive(JSON.stringify({ kind: "subscribed", topic: "news.world", id: 3, offset: 5, epoch: "ab", recovered: true }));
  // Refused now (a permission revoked while away): ended, and said so.
  sockets[1].receive(JSON.stringify({ kind: "error", topic: "desk.ops", id: 4, error: "forbidden" }));
  await sleep(1);
  assert.deepEqual(ended, [{ topic: "desk.ops", reason: "forbidden" }]);
  // The server's own unsubscribed (no id): ended too.
  sockets[1].receive(JSON.stringify({ kind: "unsubscribed", topic: "news.world", reason: "revoked" }));
  assert.deepEqual(ended.at(-1), { topic: "news.world", reason: "revoked" });
  assert.equal(client.subscriptions.held.size, 0);
  client.close();
});

test("a request made while disconnected waits for the socket; unsubscribe is answered", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const client = new ChannelsTuningClient("ws://x/ws/dash/", { ...fast, codec: "json", WebSocket: FakeWebSocket });
  const ticker = client.subscribe("ticker");
  client.start();
  await sleep(1);
  assert.deepEqual(sockets[0].requests(), [{ type: "ct.subscribe", topic: "ticker", id: 1 }]);
  sockets[0].receive(JSON.stringify({ kind: "subscribed", topic: "ticker", id: 1 }));
  await ticker;
  const leaving = client.unsubscribe("ticker");
  assert.deepEqual(sockets[0].requests().at(-1), { type: "ct.unsubscribe", topic: "ticker", id: 2 });
  sockets[0].receive(JSON.stringify({ kind: "unsubscribed", topic: "ticker", id: 2, reason: "client" }));
  await leaving;
  client.close();
});

test("protobuf: requests and answers are envelopes", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const client = new ChannelsTuningClient("ws://x/ws/dash/", { ...fast, codec: "protobuf", WebSocket: FakeWebSocket });
  client.start();
  await sleep(1);
  const ticker = client.subscribe("ticker", { params: { a: 1 } });
  const request = decodeEnvelope(sockets[0].sent[0]);
  assert.equal(request.kind, "subscribe");
  assert.equal(request.seq, 1);
  assert.equal(request.topic, "ticker");
  assert.deepEqual(JSON.parse(new TextDecoder().decode(request.payload)), { a: 1 });
  sockets[0].receive(encodeEnvelope({ kind: "error", seq: 1, topic: "ticker", error: "too_many_subscriptions" }).buffer);
  await assert.rejects(ticker, (error) => error.reason === "too_many_subscriptions");
  client.close();
});

test("requests: resolved with the result, rejected with the error, failed when the socket drops", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const client = new ChannelsTuningClient("ws://x/ws/cart/", { ...fast, codec: "json", WebSocket: FakeWebSocket });
  await assert.rejects(client.request("cart.save"), /not connected/);
  client.start();
  await sleep(1);
  const saved = client.request("cart.save", { items: [3] });
  const missing = client.request("cart.load", 7);
  const messages = [];
  client.addEventListener("message", (e) => messages.push(e.detail));
  assert.deepEqual(sockets[0].requests(), [
    { type: "ct.request", id: 1, method: "cart.save", params: { items: [3] } },
    { type: "ct.request", id: 2, method: "cart.load", params: 7 },
  ]);
  sockets[0].receive(JSON.stringify({ kind: "reply", id: 1, result: { saved: 9 } }));
  sockets[0].receive(JSON.stringify({ kind: "reply", id: 2, error: "not_found", message: "no cart 7" }));
  assert.deepEqual(await saved, { saved: 9 });
  await assert.rejects(missing, (e) => e instanceof RequestFailed && e.code === "not_found" && e.detail === "no cart 7");
  const lost = client.request("cart.save", {});
  sockets[0].serverClose(1012);
  await assert.rejects(lost, /closed before the answer/);
  assert.deepEqual(messages, []); // replies are no messages
  client.close();
});

test("the server's requests: answered by handlers, unknown methods and failures answered too; pushes acknowledged", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const client = new ChannelsTuningClient("ws://x/ws/page/", { ...fast, codec: "json", WebSocket: FakeWebSocket });
  const messages = [];
  client.addEventListener("message", (e) => messages.push(e.detail));
  client.onRequest("page.state", (params) => ({ visible: true, asked: params }));
  client.onRequest("page.later", async () => { await sleep(5); return 7; });
  client.onRequest("page.save", () => { throw new RequestFailed("page.save", "read_only", "a viewer"); });
  client.onRequest("page.broken", () => { throw new TypeError("a bug"); });
  client.start();
  await sleep(1);
  const ws = sockets[0];
  const broken = console.error;
  console.error = () => {}; // the "internal" answer is logged in the page
  try {
    ws.receive(JSON.stringify({ kind: "request", id: 1, method: "page.state", params: { full: true } }));
    ws.receive(JSON.stringify({ kind: "request", id: 2, method: "page.later" }));
    ws.receive(JSON.stringify({ kind: "request", id: 3, method: "page.save" }));
    ws.receive(JSON.stringify({ kind: "request", id: 4, method: "page.broken" }));
    ws.receive(JSON.stringify({ kind: "request", id: 5, method: "page.unknown" }));
    ws.receive(JSON.stringify({ kind: "push", id: 6, data: { shipped: 7 } }));
    // An acknowledged broadcast's push: one id for all clients, from 2**40 up.
    ws.receive(`{"kind":"push","id":${2 ** 52 + 3},"data":"drill"}`);
    await sleep(20);
  } finally {
    console.error = broken;
  }
  const replies = ws.requests().sort((a, b) => a.id - b.id);
  assert.deepEqual(replies, [
    { type: "ct.reply", id: 1, result: { visible: true, asked: { full: true } } },
    { type: "ct.reply", id: 2, result: 7 },
    { type: "ct.reply", id: 3, error: "read_only", message: "a viewer" },
    { type: "ct.reply", id: 4, error: "internal", message: "" },
    { type: "ct.reply", id: 5, error: "unknown_method", message: "page.unknown" },
    { type: "ct.reply", id: 6 },
    { type: "ct.reply", id: 2 ** 52 + 3 },
  ]);
  assert.ok(ws.sent.some((f) => f === `{"type":"ct.reply","id":4503599627370499}`)); // exact
  assert.deepEqual(messages, [{ shipped: 7 }, "drill"]); // pushes are messages; requests not
  // An answer that settles after the socket dropped is not written to its successor.
  client.onRequest("page.slow", async () => { await sleep(30); return 1; });
  ws.receive(JSON.stringify({ kind: "request", id: 7, method: "page.slow" }));
  ws.serverClose(1012);
  await sleep(50);
  assert.equal(ws.sent.length, 7);
  assert.ok(sockets.length === 1 || sockets[1].sent.every((f) => !f.includes('"id":7')));
  client.close();
});

test("protobuf: requests, replies and the server's requests are envelopes with JSON payloads", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass();
  const client = new ChannelsTuningClient("ws://x/ws/dash/", { ...fast, codec: "protobuf", WebSocket: FakeWebSocket });
  client.onRequest("page.state", (params) => ({ asked: params }));
  client.start();
  await sleep(1);
  const ws = sockets[0];
  const json = (bytes) => JSON.parse(new TextDecoder().decode(bytes));
  const saved = client.request("cart.save", { items: [3] });
  const failed = client.request("cart.load");
  const [first, second] = ws.sent.map((frame) => decodeEnvelope(frame));
  assert.deepEqual([first.kind, first.seq, first.topic, json(first.payload)], ["request", 1, "cart.save", { items: [3] }]);
  assert.deepEqual([second.kind, second.seq, second.topic, second.payload.length], ["request", 2, "cart.load", 0]);
  ws.receive(encodeEnvelope({ kind: "reply", seq: 1, payload: new TextEncoder().encode('{"saved":9}') }).buffer);
  ws.receive(encodeEnvelope({ kind: "reply", seq: 2, error: "not_found", detail: "no cart" }).buffer);
  assert.deepEqual(await saved, { saved: 9 });
  await assert.rejects(failed, (e) => e instanceof RequestFailed && e.code === "not_found" && e.detail === "no cart");
  ws.receive(encodeEnvelope({ kind: "request", seq: 5, topic: "page.state", payload: new TextEncoder().encode("[1]") }).buffer);
  ws.receive(encodeEnvelope({ kind: "request", seq: 6, topic: "page.unknown" }).buffer);
  await sleep(5);
  const replies = ws.sent.slice(2).map((frame) => decodeEnvelope(frame));
  assert.deepEqual(replies.map((r) => [r.kind, r.seq]), [["reply", 5], ["reply", 6]]);
  assert.deepEqual(json(replies[0].payload), { asked: [1] });
  assert.deepEqual([replies[1].error, replies[1].detail], ["unknown_method", "page.unknown"]);
  // A push: the envelope is a "message" event, then acknowledged by a reply.
  const pushed = [];
  client.addEventListener("message", (e) => pushed.push(e.detail));
  ws.receive(encodeEnvelope({ kind: "push", seq: 7, payload: Uint8Array.of(1, 2, 3) }).buffer);
  await sleep(1);
  assert.deepEqual(pushed.map((e) => [e.kind, Number(e.seq), [...e.payload]]), [["push", 7, [1, 2, 3]]]);
  const ack = decodeEnvelope(ws.sent.at(-1));
  assert.deepEqual([ack.kind, ack.seq, ack.payload.length, ack.error], ["reply", 7, 0, ""]);
  client.close();
});
