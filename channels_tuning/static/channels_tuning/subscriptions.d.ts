// Type declarations for subscriptions.js.

import type { ChannelsTuningClient } from "./client.js";

/** The server refused a subscribe request: `reason` is "unknown_topic", "forbidden",
 * "too_many_subscriptions", "already_subscribed", "unavailable", or the consumer's own. */
export declare class SubscriptionRefused extends Error {
  readonly topic: string;
  readonly reason: string;
}

/** Where a topic's message stands (offset and epoch: topics with history). */
export interface TopicPosition { topic: string; offset?: number; epoch?: string }

export interface SubscribeOptions {
  /** Parameters for the consumer's can_subscribe (a JSON object). */
  params?: Record<string, unknown>;
  /** Called with each message of the topic (codec "json": its data). */
  onMessage?: (detail: unknown, where: TopicPosition) => void;
  /** Milliseconds to wait for the answer. Default 10000. */
  timeout?: number;
}

export interface Subscription {
  readonly topic: string;
  readonly params?: Record<string, unknown>;
  readonly state: "subscribing" | "subscribed" | "unsubscribed";
}

export interface UnsubscribedDetail { topic: string; reason: string }

export declare class Subscriptions {
  constructor(client: ChannelsTuningClient);
  /** Topics held or being asked for. */
  readonly held: ReadonlyMap<string, Subscription>;
  subscribe(topic: string, options?: SubscribeOptions): Promise<Subscription>;
  unsubscribe(topic: string, options?: { timeout?: number }): Promise<void>;
}
