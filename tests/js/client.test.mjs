// The browser client's behaviour with a scripted WebSocket (node --test). The real
// browser and server are exercised in tests/e2e/test_browser.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ChannelsTuningClient, encodeEnvelope, decodeEnvelope } from "../../channels_tuning/static/channels_tuning/client.js";
import { fakeSocketClass } from "./fake_socket.mjs";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const fast = { initialDelay: 5, factor: 2, maxDelay: 40, stableAfter: 1000, tryLaterDelay: 30 };

test("answers heartbeat pings in every form and swallows them", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass((ws) => ws.open());
  const client = new ChannelsTuningClient("ws://x/", { ...fast, codec: "protobuf", WebSocket: FakeWebSocket });
  const messages = [];
  client.addEventListener("message", (e) => messages.push(e.detail));
  client.start();
  await sleep(1);
  const ws = sockets[0];
  ws.receive('{"type":"ct.ping"}');
  ws.receive(Uint8Array.of(0, 9).buffer);
  ws.receive(encodeEnvelope({ kind: "ping", seq: 4 }).buffer);
  ws.receive(encodeEnvelope({ kind: "data", payload: Uint8Array.of(1, 2) }).buffer);
  assert.equal(ws.sent[0], '{"type":"ct.pong"}');
  assert.deepEqual([...ws.sent[1]], [0, 10]);
  assert.deepEqual(decodeEnvelope(ws.sent[2]), { ...decodeEnvelope(encodeEnvelope({ kind: "pong", seq: 4 })) });
  assert.equal(messages.length, 1);
  assert.deepEqual([...messages[0].payload], [1, 2]);
  client.close();
});

test("reconnects with growing caps, resets after a stable connection, stops on 1003", async () => {
  const { FakeWebSocket } = fakeSocketClass((ws, i) => {
    if (i < 3) ws.serverClose(1006); // refused
    else if (i === 3) { ws.open(); setTimeout(() => ws.serverClose(1012), 60); } // stable
    else if (i === 4) ws.serverClose(1006);
    else ws.serverClose(1003, "fix the client");
  });
  const client = new ChannelsTuningClient("ws://x/", { ...fast, stableAfter: 50, WebSocket: FakeWebSocket });
  const attempts = [];
  const closes = [];
  client.addEventListener("reconnecting", (e) => attempts.push(e.detail));
  client.addEventListener("close", (e) => closes.push(e.detail));
  client.start();
  while (client.state !== "closed") await sleep(5);
  assert.deepEqual(attempts.map((a) => a.attempt), [1, 2, 3, 1, 2]);
  for (const a of attempts) assert.ok(a.delay <= Math.min(40, 5 * 2 ** (a.attempt - 1)));
  assert.deepEqual(closes.at(-1), { code: 1003, reason: "fix the client", willReconnect: false });
});

test("try-again-later codes wait tryLaterDelay more; maxAttempts gives up", async () => {
  const { FakeWebSocket } = fakeSocketClass((ws) => ws.serverClose(1013));
  const client = new ChannelsTuningClient("ws://x/", { ...fast, maxAttempts: 2, WebSocket: FakeWebSocket });
  const delays = [];
  client.addEventListener("reconnecting", (e) => delays.push(e.detail.delay));
  client.start();
  while (client.state !== "closed") await sleep(5);
  assert.equal(delays.length, 2);
  for (const delay of delays) assert.ok(delay >= 30 && delay <= 30 + 10);
});

test("the outbox is bounded, drops the oldest, and is flushed in order on open", async () => {
  let openFirst;
  const { FakeWebSocket, sockets } = fakeSocketClass((ws) => { openFirst = () => ws.open(); });
  const client = new ChannelsTuningClient("ws://x/", { ...fast, maxQueue: 3, codec: "json", WebSocket: FakeWebSocket });
  client.start();
  for (let i = 0; i < 5; i++) client.send({ n: i });
  assert.equal(client.dropped, 2);
  await sleep(1);
  openFirst();
  assert.deepEqual(sockets[0].sent, ['{"n":2}', '{"n":3}', '{"n":4}']);
  assert.equal(client.send({ n: 5 }), true);
  client.close();
});

test("a silent server is abandoned after deadAfter", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass((ws, i) => { if (i === 0) ws.open(); });
  const client = new ChannelsTuningClient("ws://x/", { ...fast, deadAfter: 30, WebSocket: FakeWebSocket });
  const closes = [];
  client.addEventListener("close", (e) => closes.push(e.detail));
  client.start();
  await sleep(80);
  assert.equal(closes[0].code, 1006);
  assert.deepEqual(sockets[0].closed, { code: 4000, reason: "no heartbeat" });
  assert.ok(sockets.length >= 2); // it tried again
  client.close();
});

test("waits while offline and reconnects on the online event", async () => {
  const win = new EventTarget();
  win.navigator = { onLine: false };
  const { FakeWebSocket, sockets } = fakeSocketClass((ws, i) => { if (i === 0) ws.serverClose(1006); else ws.open(); });
  const client = new ChannelsTuningClient("ws://x/", { ...fast, window: win, WebSocket: FakeWebSocket });
  client.start();
  await sleep(50);
  assert.equal(client.state, "offline");
  assert.equal(sockets.length, 1); // no attempts while offline
  win.navigator.onLine = true;
  win.dispatchEvent(new Event("online"));
  await sleep(1);
  assert.equal(client.state, "open");
  client.close();
});

test("json envelopes: data wrapped, pings answered, pongs swallowed", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass((ws) => ws.open());
  const client = new ChannelsTuningClient("ws://x/", { ...fast, codec: "json-envelope", WebSocket: FakeWebSocket });
  const messages = [];
  client.addEventListener("message", (e) => messages.push(e.detail));
  client.start();
  await sleep(1);
  const ws = sockets[0];
  client.send({ text: "hi" }, { topic: "room", seq: 2 });
  ws.receive('{"kind":"ping","seq":9}');
  ws.receive('{"kind":"pong"}');
  ws.receive('{"kind":"data","topic":"room","data":{"text":"yo"}}');
  assert.deepEqual(JSON.parse(ws.sent[0]), { kind: "data", topic: "room", seq: 2, data: { text: "hi" } });
  assert.deepEqual(JSON.parse(ws.sent[1]), { kind: "pong", seq: 9 });
  assert.deepEqual(messages, [{ kind: "data", seq: 0, topic: "room", data: { text: "yo" } }]);
  client.close();
});

test("recovery: keeps each topic's position, asks for it on reconnect, drops duplicates", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass((ws) => ws.open());
  const client = new ChannelsTuningClient("ws://x/ws/chat/a/?room=1&ct_recover=old:e:1", {
    ...fast, codec: "json", WebSocket: FakeWebSocket,
  });
  const messages = [];
  const recoveries = [];
  const subscribed = [];
  // Numbered messages arrive unwrapped: the detail is the data, the event says where.
  client.addEventListener("message", (e) => messages.push({ detail: e.detail, offset: e.offset }));
  client.addEventListener("recovery", (e) => recoveries.push(e.detail));
  client.addEventListener("subscribed", (e) => subscribed.push(e.detail.offset));
  client.start();
  await sleep(1);
  const data = (offset) => JSON.stringify({ kind: "data", topic: "chat.a", offset, epoch: "ab", data: offset });
  sockets[0].receive(JSON.stringify({ kind: "subscribed", topic: "chat.a", offset: 4, epoch: "ab", recovered: false }));
  sockets[0].receive(data(5));
  sockets[0].receive(data(6));
  sockets[0].receive(data(6)); // a duplicate: dropped
  sockets[0].receive('{"plain":true}'); // not numbered: passed on as it is
  assert.deepEqual(messages, [
    { detail: 5, offset: 5 },
    { detail: 6, offset: 6 },
    { detail: { plain: true }, offset: undefined },
  ]);
  assert.deepEqual(subscribed, [4]); // a subscribed frame is no message
  assert.equal(client.duplicates, 1);
  assert.deepEqual(client.positions.get("chat.a"), { epoch: "ab", offset: 6 });
  sockets[0].serverClose(1012);
  await sleep(30);
  // The reconnect asks for what it missed (and drops the stale parameter it was given).
  assert.equal(sockets[1].url, "ws://x/ws/chat/a/?room=1&ct_recover=chat.a%3Aab%3A6");
  sockets[1].receive(JSON.stringify({ kind: "subscribed", topic: "chat.a", offset: 8, epoch: "ab", recovered: true }));
  sockets[1].receive(data(7));
  sockets[1].receive(data(8));
  assert.equal(client.gaps, 0);
  // History lost: told, and counted as a gap; the position starts again.
  sockets[1].receive(JSON.stringify({ kind: "subscribed", topic: "chat.a", offset: 0, epoch: "cd", recovered: false }));
  assert.equal(client.gaps, 1);
  assert.deepEqual(recoveries.map((r) => r.recovered), [false, true, false]);
  assert.deepEqual(client.positions.get("chat.a"), { epoch: "cd", offset: 0 });
  client.close();
});

test("offers the channels-tuning subprotocol first, then the application's own", async () => {
  const offered = [];
  class Recording {
    constructor(url, protocols) { offered.push(protocols); queueMicrotask(() => this.onopen?.()); }
    send() {}
    close() {}
  }
  for (const protocols of [undefined, "chat.v2", ["a", "channels-tuning.v1", "b"]]) {
    const client = new ChannelsTuningClient("ws://x/", { ...fast, protocols, WebSocket: Recording });
    client.start();
    client.close();
  }
  assert.deepEqual(offered, [
    ["channels-tuning.v1"],
    ["channels-tuning.v1", "chat.v2"],
    ["channels-tuning.v1", "a", "b"],
  ]);
});

test("presence frames are presence events, not messages", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass((ws) => ws.open());
  const client = new ChannelsTuningClient("ws://x/", { ...fast, codec: "json", WebSocket: FakeWebSocket });
  const messages = [];
  const presence = [];
  client.addEventListener("message", (e) => messages.push(e.detail));
  client.addEventListener("presence", (e) => presence.push(e.detail));
  client.start();
  await sleep(1);
  sockets[0].receive('{"kind":"presence","topic":"chat.a","data":{"joined":["7"],"left":["3"]}}');
  sockets[0].receive('{"type":"chat","message":"hi"}');
  assert.deepEqual(presence, [{ topic: "chat.a", joined: ["7"], left: ["3"] }]);
  assert.deepEqual(messages, [{ type: "chat", message: "hi" }]);
  client.close();
});

test("keeps at most 32 topic positions, the most recent, and asks for no more", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass((ws) => ws.open());
  const client = new ChannelsTuningClient("ws://x/", { ...fast, codec: "json", WebSocket: FakeWebSocket });
  client.start();
  await sleep(1);
  for (let i = 0; i < 40; i++) {
    sockets[0].receive(JSON.stringify({ kind: "data", topic: `t${i}`, offset: 1, epoch: "e", data: i }));
  }
  sockets[0].receive(JSON.stringify({ kind: "data", topic: "t3", offset: 2, epoch: "e", data: 0 }));
  assert.equal(client.positions.size, 32);
  assert.ok(client.positions.has("t3")); // updated: the most recent again
  assert.ok(!client.positions.has("t4"));
  sockets[0].serverClose(1012);
  await sleep(30);
  assert.equal((sockets[1].url.match(/ct_recover=/g) ?? []).length, 32);
  client.close();
});

test("offers a token, refreshes it before it expires, never emits the token frames", async () => {
  let issued = 0;
  const token = async () => `tok${++issued}`;
  const { FakeWebSocket, sockets } = fakeSocketClass((ws) => ws.open());
  const client = new ChannelsTuningClient("ws://x/", { ...fast, token, refreshMargin: 50, WebSocket: FakeWebSocket });
  const messages = [];
  client.addEventListener("message", (e) => messages.push(e.detail));
  client.start();
  await sleep(5);
  const ws = sockets[0];
  assert.deepEqual(ws.protocols, ["channels-tuning.v1", "ct-token.tok1"]);
  ws.receive(JSON.stringify({ type: "ct.token", exp: (Date.now() + 120) / 1000 }));
  await sleep(20);
  assert.deepEqual(ws.sent, []); // not yet: 70 ms before the refresh
  await sleep(100);
  assert.deepEqual(ws.sent, ['{"type":"ct.refresh","token":"tok2"}']);
  assert.equal(client.refreshes, 1);
  ws.receive(JSON.stringify({ type: "ct.refreshed", exp: Date.now() / 1000 + 3600 }));
  ws.receive("hello");
  assert.deepEqual(messages, ["hello"]);
  // Expired anyway (a refresh that came too late): reconnect with a fresh token.
  ws.serverClose(4005, "token expired");
  await sleep(60);
  assert.equal(sockets.length, 2);
  assert.deepEqual(sockets[1].protocols, ["channels-tuning.v1", `ct-token.tok${issued}`]);
  client.close();
});

test("a fixed token that expired stops the client", async () => {
  const { FakeWebSocket, sockets } = fakeSocketClass((ws) => ws.open());
  const client = new ChannelsTuningClient("ws://x/", { ...fast, token: "fixed", WebSocket: FakeWebSocket });
  const closes = [];
  client.addEventListener("close", (e) => closes.push(e.detail));
  client.start();
  await sleep(1);
  assert.deepEqual(sockets[0].protocols, ["channels-tuning.v1", "ct-token.fixed"]);
  sockets[0].receive(JSON.stringify({ type: "ct.token", exp: Date.now() / 1000 + 1 }));
  sockets[0].serverClose(4005, "token expired");
  await sleep(60);
  assert.equal(sockets.length, 1);
  assert.equal(client.state, "closed");
  assert.deepEqual(closes, [{ code: 4005, reason: "token expired", willReconnect: false }]);
  assert.deepEqual(sockets[0].sent, []); // a fixed token is never "refreshed"
});

test("a token function that fails is a failed connection attempt, retried", async () => {
  let calls = 0;
  const token = () => {
    calls += 1;
    if (calls === 1) throw new Error("auth service down");
    return "ok";
  };
  const { FakeWebSocket, sockets } = fakeSocketClass((ws) => ws.open());
  const client = new ChannelsTuningClient("ws://x/", { ...fast, token, WebSocket: FakeWebSocket });
  client.start();
  await sleep(80);
  assert.equal(sockets.length, 1);
  assert.deepEqual(sockets[0].protocols, ["channels-tuning.v1", "ct-token.ok"]);
  client.close();
});
