// Type declarations for requests.js.

/** The server answered a request with an error: `code` is "unknown_method", "timeout",
 * "internal" or the method's own (RequestError); `detail` its message. */
export declare class RequestFailed extends Error {
  readonly method: string;
  readonly code: string;
  readonly detail: string;
}

export interface RequestOptions {
  /** Milliseconds to wait for the answer. Default 10000. */
  timeout?: number;
}
