// A scripted WebSocket for the client's Node tests: script(socket, index) decides what
// each new connection does (by default it opens).
export function fakeSocketClass(script = (ws) => ws.open()) {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.sent = [];
      this.closed = null;
      sockets.push(this);
      queueMicrotask(() => script(this, sockets.length - 1));
    }
    send(data) { this.sent.push(data); }
    close(code, reason) { this.closed = { code, reason }; }
    open() { this.onopen?.(); }
    receive(data) { this.onmessage?.({ data }); }
    serverClose(code, reason = "") { this.onclose?.({ code, reason }); }
    /** The JSON frames sent, decoded. */
    requests() { return this.sent.map((frame) => JSON.parse(frame)); }
  }
  return { FakeWebSocket, sockets };
}
