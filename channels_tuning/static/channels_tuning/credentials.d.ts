// Type declarations for credentials.js.

/** "ct-token.": the subprotocol prefix that carries a token in the handshake. */
export declare const TOKEN_PROTOCOL_PREFIX: string;
/** The close code of an expired token. */
export declare const TOKEN_EXPIRED: 4005;
export type TokenSource = string | (() => string | Promise<string>);
export declare function tokenProtocols(token?: string | null): string[];
export declare function currentToken(source?: TokenSource): Promise<string | undefined>;
/** Expiry (Unix s) of a ct.token / ct.refreshed frame, NaN if unreadable, null if not one. */
export declare function tokenAnnouncement(data: unknown): number | null;
export declare function refreshDelay(exp: number, marginMs: number, now?: number): number;
export declare function refreshFrame(token: string): string;
