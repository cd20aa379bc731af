// The hand-written envelope codec (node --test); byte-compatibility with Python's
// protobuf is checked from pytest (tests/project/test_js.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { decodeEnvelope, encodeEnvelope, EnvelopeDecodeError } from "../../channels_tuning/static/channels_tuning/envelope.js";

test("round trip, including 64-bit and negative values", () => {
  const fields = { kind: "error", seq: 2n ** 64n - 1n, topic: "rüm", payload: Uint8Array.of(0, 255),
    typeUrl: "t", sentAtMs: -1, errorCode: 2 ** 32 - 1, error: "e", offset: 2 ** 53 - 1, epoch: "9f",
    recovered: true, detail: "why" };
  const decoded = decodeEnvelope(encodeEnvelope(fields));
  assert.deepEqual({ ...decoded, payload: [...decoded.payload] }, { ...fields, payload: [0, 255] });
});

test("never empty, never starting with 0x00", () => {
  assert.deepEqual([...encodeEnvelope({})], [0x08, 0x01]);
  assert.deepEqual([...encodeEnvelope({ kind: "pong" })], [0x08, 0x03]);
});

test("random bytes raise only EnvelopeDecodeError", () => {
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let i = 0; i < 50000; i++) {
    const bytes = Uint8Array.from({ length: Math.floor(random() * 40) }, () => Math.floor(random() * 256));
    try {
      decodeEnvelope(bytes);
    } catch (error) {
      assert.ok(error instanceof EnvelopeDecodeError, String(error));
    }
  }
});
