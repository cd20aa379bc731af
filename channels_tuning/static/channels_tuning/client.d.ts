// Type declarations for client.js.

import type { Envelope, EnvelopeFields } from "./envelope.js";
export { decodeEnvelope, encodeEnvelope, EnvelopeDecodeError } from "./envelope.js";
export type { Envelope, EnvelopeFields } from "./envelope.js";
import type { SubscribeOptions, Subscription, Subscriptions, UnsubscribedDetail } from "./subscriptions.js";
export { SubscriptionRefused } from "./subscriptions.js";
import type { RequestOptions } from "./requests.js";
export { RequestFailed } from "./requests.js";
export type { RequestOptions } from "./requests.js";
export type { SubscribeOptions, Subscription, UnsubscribedDetail } from "./subscriptions.js";

export declare const PING_TEXT: string;
export declare const PONG_TEXT: string;
/** Topics whose positions the client keeps (the newest): what one reconnect may ask for. */
export declare const MAX_RECOVER_REQUESTS: 32;
/** "channels-tuning.v1": offered first in every handshake. */
export declare const SUBPROTOCOL: string;
/** SUBPROTOCOL followed by the application's own subprotocols. */
export declare function offeredProtocols(protocols?: string | string[]): string[];
export type ReconnectAction = "stop" | "now" | "later" | "backoff";
/** Close code -> action, generated from channels_tuning/wire/reconnect.py. */
export declare const RECONNECT_POLICY: Readonly<Record<string, ReconnectAction>>;
export declare const DEFAULT_RECONNECT: ReconnectAction;
export declare function reconnectAction(code: number): ReconnectAction;
export declare const ABNORMAL: 1006;

export type Codec = "raw" | "json" | "json-envelope" | "protobuf";
export type ClientState = "idle" | "connecting" | "open" | "reconnecting" | "offline" | "closed";

export interface ClientOptions {
  /** "raw": strings and ArrayBuffers; "json": JSON values; "json-envelope": the server's JsonCodec
   * ({"kind":"data","data":…}); "protobuf": binary envelopes. Default "raw". */
  codec?: Codec;
  /** First backoff cap, ms. Default 500. */
  initialDelay?: number;
  /** Growth of the cap per attempt. Default 2. */
  factor?: number;
  /** Largest cap, ms. Default 20000. */
  maxDelay?: number;
  /** Failed attempts in a row before giving up. Default Infinity. */
  maxAttempts?: number;
  /** A connection open this long (ms) resets the backoff. Default 10000. */
  stableAfter?: number;
  /** Added to the backoff after 1008 and 1013, ms. Default 10000. */
  tryLaterDelay?: number;
  /** No frame for this long (ms) means the server is gone. Default 60000. */
  deadAfter?: number;
  /** Messages kept while disconnected; beyond, the oldest is dropped. Default 100. */
  maxQueue?: number;
  /** Reconnect at once when the page becomes visible again. Default false. */
  reconnectOnVisible?: boolean;
  /** Keep each topic's last offset and ask for what was missed on reconnect. Default true. */
  recover?: boolean;
  /** The application's own subprotocols, offered after "channels-tuning.v1". */
  protocols?: string | string[];
  /** A token (offered as the subprotocol "ct-token.<token>"), or a function giving a fresh
   * one at every connection and before each expiry (credentials.js). Default none. */
  token?: string | (() => string | Promise<string>);
  /** Refresh the token this long (ms) before it expires (or at 2/3 of its life). Default 30000. */
  refreshMargin?: number;
  /** WebSocket implementation (tests, Node). Default globalThis.WebSocket. */
  WebSocket?: typeof WebSocket;
  /** Source of online/visibilitychange events. Default window. */
  window?: Window;
}

export interface ReconnectingDetail { delay: number; attempt: number; code: number }
export interface CloseDetail { code: number; reason: string; willReconnect: boolean }
export interface RecoveryDetail { topic: string; recovered: boolean; offset: number; epoch: string }
export interface PresenceDetail { topic: string; joined: string[]; left: string[] }
/** A "message" event; for a numbered message (codec "json"), where it stands. */
export interface MessageEvent_ extends ClientEvent<unknown> { topic?: string; offset?: number; epoch?: string }
export interface StreamPosition { epoch: string; offset: number }
/** `url` with one ct_recover parameter per topic (replacing those there). */
export declare function recoverUrl(url: string, positions: Map<string, StreamPosition>): string;

export interface ClientEvent<T> extends Event { detail: T }

export interface ChannelsTuningClientEventMap {
  open: ClientEvent<{ connections: number }>;
  message: MessageEvent_;
  subscribed: ClientEvent<RecoveryDetail>;
  recovery: ClientEvent<RecoveryDetail>;
  presence: ClientEvent<PresenceDetail>;
  unsubscribed: ClientEvent<UnsubscribedDetail>;
  reconnecting: ClientEvent<ReconnectingDetail>;
  close: ClientEvent<CloseDetail>;
  state: ClientEvent<ClientState>;
}

export declare const DEFAULTS: Readonly<Required<Omit<ClientOptions, "WebSocket" | "window" | "protocols">>>;

export declare function backoffCap(attempt: number, options?: ClientOptions): number;
export declare function backoffDelay(attempt: number, options?: ClientOptions, random?: () => number): number;
export declare function reconnectDelay(
  code: number, attempt: number, options?: ClientOptions, random?: () => number,
): number | null;

export declare class ChannelsTuningClient extends EventTarget {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly state: ClientState;
  readonly attempt: number;
  readonly connections: number;
  /** Messages dropped from the full queue while disconnected. */
  readonly dropped: number;
  /** Numbered messages received twice (dropped, not emitted). */
  readonly duplicates: number;
  /** Times numbered messages were lost for good (recovered: false after having some). */
  readonly gaps: number;
  /** Token refreshes sent, and refreshes whose token function failed. */
  readonly refreshes: number;
  readonly refreshFailures: number;
  /** What the client has of each topic with history. */
  readonly positions: ReadonlyMap<string, StreamPosition>;
  readonly outbox: ReadonlyArray<string | ArrayBuffer | Uint8Array>;
  /** Epoch ms of the next attempt while reconnecting, else null. */
  readonly nextRetryAt: number | null;
  start(): this;
  /** Sends now (true) or queues until connected (false). For "protobuf", `message` is the serialized payload. */
  send(message: unknown, envelope?: Omit<EnvelopeFields, "payload">): boolean;
  close(code?: number, reason?: string): void;
  /** Topics held or being asked for. */
  readonly subscriptions: Subscriptions;
  /** Resolves once the server said "subscribed"; rejects with SubscriptionRefused. Asked
   * again, with the client's position, after every reconnect. */
  subscribe(topic: string, options?: SubscribeOptions): Promise<Subscription>;
  unsubscribe(topic: string, options?: { timeout?: number }): Promise<void>;
  /** Calls the consumer's @rpc method: resolves with its result, rejects with RequestFailed. */
  request(method: string, params?: unknown, options?: RequestOptions): Promise<unknown>;
  /** Answers the server's requests for `method` (a consumer's request_client()) with
   * the handler's result; throw an error with a string `code` to answer that code. */
  onRequest(method: string, handler: (params: unknown) => unknown): void;
  addEventListener<K extends keyof ChannelsTuningClientEventMap>(
    type: K, listener: (event: ChannelsTuningClientEventMap[K]) => void, options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

export type Message = Envelope | unknown;
