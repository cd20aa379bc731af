// Type declarations for envelope.js (channels_tuning/wire/proto/envelope.proto).

export declare const Kind: Readonly<{
  DATA: 1; PING: 2; PONG: 3; ACK: 4; ERROR: 5; SUBSCRIBED: 6; PRESENCE: 7;
  SUBSCRIBE: 8; UNSUBSCRIBE: 9; UNSUBSCRIBED: 10; REQUEST: 11; REPLY: 12; PUSH: 13;
}>;
export type KindName =
  | "data" | "ping" | "pong" | "ack" | "error" | "subscribed" | "presence"
  | "subscribe" | "unsubscribe" | "unsubscribed" | "request" | "reply" | "push";

export interface EnvelopeFields {
  kind?: KindName | number;
  seq?: number | bigint;
  topic?: string;
  payload?: Uint8Array;
  typeUrl?: string;
  sentAtMs?: number | bigint;
  errorCode?: number;
  error?: string;
  offset?: number | bigint;
  epoch?: string;
  recovered?: boolean;
  detail?: string;
}

export interface Envelope {
  kind: KindName;
  /** A number when it is a safe integer, else a bigint. */
  seq: number | bigint;
  topic: string;
  payload: Uint8Array;
  typeUrl: string;
  sentAtMs: number | bigint;
  errorCode: number;
  error: string;
  /** Place in the topic's history (groups with HISTORY), 0 when unused. */
  offset: number | bigint;
  epoch: string;
  /** kind "subscribed": whether what the client missed follows. */
  recovered: boolean;
  /** kind "reply": the error's message. */
  detail: string;
}

export declare class EnvelopeDecodeError extends Error {}

/** Never empty: `kind` is always written (default "data"). */
export declare function encodeEnvelope(fields?: EnvelopeFields): Uint8Array;
/** Throws EnvelopeDecodeError for bytes that are not an envelope. */
export declare function decodeEnvelope(data: ArrayBuffer | Uint8Array): Envelope;
