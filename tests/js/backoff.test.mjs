// Backoff schedule and close-code policy of the browser client (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffCap, backoffDelay, DEFAULTS, reconnectDelay } from "../../channels_tuning/static/channels_tuning/client.js";

test("caps grow by the factor up to maxDelay", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map((n) => backoffCap(n)), [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000]);
  assert.equal(backoffCap(10000), 20000);
});

test("full jitter stays in [0, cap] and spreads uniformly", () => {
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let attempt = 0; attempt < 10; attempt++) {
    const cap = backoffCap(attempt);
    const delays = Array.from({ length: 5000 }, () => backoffDelay(attempt, DEFAULTS, random));
    assert.ok(Math.min(...delays) >= 0 && Math.max(...delays) <= cap);
    const mean = delays.reduce((a, b) => a + b) / delays.length;
    assert.ok(Math.abs(mean - cap / 2) < cap * 0.05, `mean ${mean} for cap ${cap}`);
    const deciles = new Set(delays.map((d) => Math.floor((10 * d) / cap)));
    for (let i = 0; i < 10; i++) assert.ok(deciles.has(i));
  }
});

test("close codes: stop, later, at once, backoff", () => {
  const max = () => 1;
  for (const code of [1000, 1003, 1007, 1009]) assert.equal(reconnectDelay(code, 0), null);
  assert.equal(reconnectDelay(1001, 5, DEFAULTS, max), 500);
  assert.equal(reconnectDelay(1013, 2, DEFAULTS, max), 12000);
  assert.equal(reconnectDelay(1008, 0, DEFAULTS, () => 0), 10000);
  for (const code of [1006, 1011, 1012, 4000, 4001]) assert.equal(reconnectDelay(code, 3, DEFAULTS, max), 4000);
});
