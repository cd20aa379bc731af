// Helper for tests/project/test_js.py: reads JSON lines {"encode": fields} or {"decode": hex}
// on stdin and prints one JSON line each (BigInts as strings).
import { createInterface } from "node:readline";

import { decodeEnvelope, encodeEnvelope } from "../../channels_tuning/static/channels_tuning/envelope.js";

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const request = JSON.parse(line);
  if (request.encode) {
    const fields = { ...request.encode, payload: Buffer.from(request.encode.payload ?? "", "hex") };
    for (const key of ["seq", "sentAtMs", "offset"]) if (key in fields) fields[key] = BigInt(fields[key]);
    console.log(JSON.stringify(Buffer.from(encodeEnvelope(fields)).toString("hex")));
  } else {
    const envelope = decodeEnvelope(Buffer.from(request.decode, "hex"));
    envelope.payload = Buffer.from(envelope.payload).toString("hex");
    console.log(JSON.stringify(envelope, (_, v) => (typeof v === "bigint" ? v.toString() : v)));
  }
}
