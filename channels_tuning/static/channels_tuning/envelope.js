// The channels-tuning envelope (channels_tuning/wire/proto/envelope.proto), encoded and
// decoded by hand: twelve fields do not need a protobuf runtime in the browser.
// Output is byte-identical to Python's protobuf for the same field values (fields in
// number order, defaults omitted), and `kind` is always written, so a frame is never
// empty and never starts with 0x00 (the heartbeat frames 00 09 / 00 0a).

export const Kind = Object.freeze({
  DATA: 1, PING: 2, PONG: 3, ACK: 4, ERROR: 5, SUBSCRIBED: 6, PRESENCE: 7,
  SUBSCRIBE: 8, UNSUBSCRIBE: 9, UNSUBSCRIBED: 10, REQUEST: 11, REPLY: 12, PUSH: 13,
});
const KIND_NAMES = new Map(Object.entries(Kind).map(([name, n]) => [n, name.toLowerCase()]));

export class EnvelopeDecodeError extends Error {
  constructor(message) {
    super(message);
    this.name = "EnvelopeDecodeError";
  }
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

// Field numbers and wire types, as in envelope.proto.
const FIELDS = [
  // [number, name, type]
  [1, "kind", "enum"],
  [2, "seq", "uint64"],
  [3, "topic", "string"],
  [4, "payload", "bytes"],
  [5, "typeUrl", "string"],
  [6, "sentAtMs", "int64"],
  [7, "errorCode", "uint32"],
  [8, "error", "string"],
  [9, "offset", "uint64"],
  [10, "epoch", "string"],
  [11, "recovered", "bool"],
  [12, "detail", "string"],
];

/**
 * Encode an envelope. `kind` is a name ("data", "ping", ...) or a number; `payload`
 * a Uint8Array (the user's message, already serialized); `seq` and `sentAtMs`
 * numbers or BigInts.
 */
export function encodeEnvelope(fields = {}) {
  const kind = typeof fields.kind === "string" ? Kind[fields.kind.toUpperCase()] : fields.kind ?? Kind.DATA;
  if (!KIND_NAMES.has(kind)) throw new RangeError(`unknown kind ${fields.kind}`);
  const out = [];
  for (const [number, name, type] of FIELDS) {
    const value = name === "kind" ? kind : fields[name];
    if (value === undefined || value === null) continue;
    if (type === "string" || type === "bytes") {
      const bytes = type === "string" ? utf8Encoder.encode(value) : value;
      if (bytes.length === 0) continue;
      writeVarint(out, BigInt((number << 3) | 2));
      writeVarint(out, BigInt(bytes.length));
      for (const b of bytes) out.push(b);
    } else {
      let n = type === "bool" ? (value ? 1n : 0n) : BigInt(value);
      if (n === 0n) continue;
      if (type === "int64") n = BigInt.asUintN(64, n);
      else if (n < 0n) throw new RangeError(`${name} must not be negative`);
      writeVarint(out, BigInt(number << 3));
      writeVarint(out, n);
    }
  }
  return Uint8Array.from(out);
}

/** Decode an envelope; throws EnvelopeDecodeError for anything that is not one. */
export function decodeEnvelope(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  const envelope = {
    kind: "data", seq: 0, topic: "", payload: new Uint8Array(0), typeUrl: "",
    sentAtMs: 0, errorCode: 0, error: "", offset: 0, epoch: "", recovered: false, detail: "",
  };
  let kindNumber = 0;
  const reader = { bytes, pos: 0 };
  while (reader.pos < bytes.length) {
    const tag = readVarint(reader);
    const number = Number(tag >> 3n);
    const wireType = Number(tag & 7n);
    if (number === 0) throw new EnvelopeDecodeError("field number 0");
    const field = FIELDS.find(([n]) => n === number);
    if (wireType === 0) {
      const value = readVarint(reader);
      if (!field) continue;
      const [, name, type] = field;
      if (type === "string" || type === "bytes") throw new EnvelopeDecodeError(`wrong wire type for ${name}`);
      if (name === "kind") kindNumber = Number(BigInt.asUintN(32, value));
      else if (type === "int64") envelope[name] = toNumber(BigInt.asIntN(64, value));
      else if (type === "uint32") envelope[name] = Number(BigInt.asUintN(32, value));
      else if (type === "bool") envelope[name] = value !== 0n;
      else envelope[name] = toNumber(value);
    } else if (wireType === 2) {
      const length = Number(readVarint(reader));
      if (length > bytes.length - reader.pos) throw new EnvelopeDecodeError("truncated field");
      const chunk = bytes.subarray(reader.pos, reader.pos + length);
      reader.pos += length;
      if (!field) continue;
      const [, name, type] = field;
      if (type === "bytes") envelope[name] = chunk.slice();
      else if (type === "string") {
        try {
          envelope[name] = utf8Decoder.decode(chunk);
        } catch {
          throw new EnvelopeDecodeError(`invalid UTF-8 in ${name}`);
        }
      } else throw new EnvelopeDecodeError(`wrong wire type for ${name}`);
    } else if (wireType === 1 || wireType === 5) {
      const size = wireType === 1 ? 8 : 4;
      if (size > bytes.length - reader.pos) throw new EnvelopeDecodeError("truncated field");
      if (field) throw new EnvelopeDecodeError(`wrong wire type for ${field[1]}`);
      reader.pos += size;
    } else {
      throw new EnvelopeDecodeError(`unsupported wire type ${wireType}`);
    }
  }
  const kind = KIND_NAMES.get(kindNumber);
  if (!kind) throw new EnvelopeDecodeError(`unknown envelope kind ${kindNumber}`);
  envelope.kind = kind;
  return envelope;
}

function writeVarint(out, n) {
  while (n > 0x7fn) {
    out.push(Number(n & 0x7fn) | 0x80);
    n >>= 7n;
  }
  out.push(Number(n));
}

function readVarint(reader) {
  let result = 0n;
  for (let shift = 0n; shift < 70n; shift += 7n) {
    if (reader.pos >= reader.bytes.length) throw new EnvelopeDecodeError("truncated varint");
    const byte = reader.bytes[reader.pos++];
    result |= BigInt(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return BigInt.asUintN(64, result);
  }
  throw new EnvelopeDecodeError("varint too long");
}

function toNumber(n) {
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}
