// One connection to a chat server over a WebSocket: the handshake, then envelopes in
// records both ways, in order. Works with any WHATWG WebSocket (browsers, Node 20+).

import { ClientHandshake, HANDSHAKE_ERROR, HandshakeFailure, parseHandshakeError } from "./handshake.js";
import { RecordLayer, RecordFailure } from "./records.js";
import { decodeEvent, encodeEnvelope, EnvelopeError } from "./envelope.js";
import { MAX_FRAME_BYTES, MAX_REQUEST_ID } from "./limits.js";
import { buffer } from "./bytes.js";

/** The connection closed or failed before or during the handshake. */
export class ConnectFailure extends Error {
  constructor(message, { code = null, reason = "", handshake = null } = {}) {
    super(message);
    this.name = "ConnectFailure";
    this.code = code;
    this.reason = reason;
    this.handshake = handshake;
  }
}

/**
 * Open `url`, run the handshake with `serverKey` (from importServerKey) and resolve to a
 * Connection. Rejects with HandshakeFailure or ConnectFailure.
 */
export function connect({ url, serverKey, WebSocketImpl = globalThis.WebSocket, timeoutMs = 10000, random }) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocketImpl(url);
    } catch (error) {
      reject(new ConnectFailure(`Cannot open ${url}: ${error.message}`));
      return;
    }
    ws.binaryType = "arraybuffer";
    const handshake = new ClientHandshake(serverKey, random ? { random } : {});
    let stage = "open";
    let done = false;
    const early = [];
    const timer = setTimeout(() => fail(new ConnectFailure("The server did not answer in time")), timeoutMs);

    function fail(error) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        ws.close();
      } catch {
        /* already closed */
      }
      reject(error);
    }

    ws.onopen = async () => {
      try {
        stage = "hello";
        ws.send(buffer(await handshake.hello()));
      } catch (error) {
        fail(error);
      }
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      if (done) return;
      const reason = event.reason || "";
      fail(
        new ConnectFailure(
          stage === "open" ? `Cannot connect to ${url}` : `The server closed the connection${reason ? `: ${reason}` : ""}`,
          { code: event.code, reason },
        ),
      );
    };
    ws.onmessage = async (event) => {
      if (done) {
        early.push(event);
        return;
      }
      if (stage !== "hello") return;
      stage = "finishing";
      if (typeof event.data === "string") {
        fail(new HandshakeFailure("MALFORMED", "text message during the handshake"));
        return;
      }
      // Later messages (records) queue until the Connection takes over.
      ws.onmessage = (later) => early.push(later);
      try {
        const finished = await handshake.receiveServerHello(new Uint8Array(event.data));
        const send = await RecordLayer.create(handshake.keys.sendKey, handshake.keys.sendIv);
        const receive = await RecordLayer.create(handshake.keys.recvKey, handshake.keys.recvIv);
        ws.send(buffer(finished));
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(new Connection(ws, send, receive, early));
      } catch (error) {
        fail(error);
      }
    };
  });
}

export class Connection {
  constructor(ws, send, receive, early = []) {
    this.ws = ws;
    this.sendLayer = send;
    this.receiveLayer = receive;
    this.nextRid = 1;
    this.pending = new Map();
    this.onEvent = () => {};
    this.onClose = () => {};
    this.closed = false;
    this.firstMessage = true;
    this._inbound = Promise.resolve();
    this._outbound = Promise.resolve();
    this._failure = null;
    this._sealing = 0;
    this._quit = null;
    this._armQuit();
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => this._closed(event.code, event.reason || "");
    for (const event of early) this._receive(event.data);
  }

  /** Send `{type, ...fields}` (+ body) without waiting for a reply. */
  send(envelope, body) {
    if (this.closed) return Promise.reject(new Error("not connected"));
    const sealed = this.sendLayer.seal(encodeEnvelope(envelope, body));
    this._sealing += 1;
    const sending = this._outbound.then(async () => {
      try {
        const record = await sealed;
        if (!this.closed) this.ws.send(buffer(record));
      } finally {
        this._sealing -= 1;
      }
    });
    this._outbound = sending.catch(() => {});
    this._outbound.then(() => this._armQuit());
    return sending;
  }

  /** Keep a `quit` sealed with the next sequence number, for quitNow. */
  async _armQuit() {
    const sequence = this.sendLayer.sequence;
    if (this.closed || (this._quit && this._quit.sequence === sequence)) return;
    try {
      const record = await this.sendLayer.sealAhead(encodeEnvelope({ type: "quit" }), sequence);
      if (this.sendLayer.sequence === sequence) this._quit = { sequence, record };
    } catch {
      /* no quit in reserve: the session lingers on the server until it times out */
    }
  }

  /**
   * The page is going away (reload, tab closed): send a `quit` synchronously, so the
   * server ends the session now instead of keeping it for a resume. It uses the record
   * sealed in advance only when no other record took or awaits that number; afterwards
   * nothing more is sealed or sent on this connection. Returns whether it was sent.
   */
  quitNow() {
    const quit = this._quit;
    if (this.closed || this._sealing > 0 || !quit || quit.sequence !== this.sendLayer.sequence) return false;
    this.sendLayer.sequence += 1n;
    this.sendLayer.broken = true;
    this.ws.send(buffer(quit.record));
    this.closed = true;
    return true;
  }

  /** Send with a fresh `rid`; resolves to `{rid, reply}` (the event whose `re` is rid). */
  request(envelope, body) {
    const rid = this.nextRid;
    this.nextRid = this.nextRid >= MAX_REQUEST_ID ? 1 : this.nextRid + 1;
    const reply = new Promise((resolve, reject) => this.pending.set(rid, { resolve, reject }));
    reply.catch(() => {}); // a reply nobody waits for may fail quietly when the connection drops
    this.send({ ...envelope, rid }, body).catch((error) => this._rejectPending(rid, error));
    return { rid, reply };
  }

  /** Bytes handed to the WebSocket and not yet on the network. */
  get bufferedAmount() {
    return this.ws.bufferedAmount || 0;
  }

  close(code = 1000) {
    try {
      this.ws.close(code);
    } catch {
      /* already closing */
    }
  }

  _rejectPending(rid, error) {
    const waiter = this.pending.get(rid);
    if (waiter) {
      this.pending.delete(rid);
      waiter.reject(error);
    }
  }

  _receive(data) {
    this._inbound = this._inbound.then(() => this._handle(data));
  }

  async _handle(data) {
    if (this.closed || this._failure) return;
    if (typeof data === "string") {
      this._fail("the server sent a text message");
      return;
    }
    const bytes = new Uint8Array(data);
    if (bytes.length > MAX_FRAME_BYTES) {
      this._fail("message too large");
      return;
    }
    if (this.firstMessage && bytes[0] === HANDSHAKE_ERROR) {
      const failure = parseHandshakeError(bytes);
      this._fail(`${failure.code}: ${failure.reason}`, failure);
      return;
    }
    this.firstMessage = false;
    let plaintext;
    try {
      plaintext = await this.receiveLayer.open(bytes);
    } catch (error) {
      this._fail(error instanceof RecordFailure ? `a record did not open (${error.message})` : String(error));
      return;
    }
    let event;
    try {
      event = decodeEvent(plaintext);
    } catch (error) {
      if (error instanceof EnvelopeError) return; // a client drops what it cannot read
      throw error;
    }
    try {
      this.onEvent(event);
    } finally {
      if (event.re !== undefined && this.pending.has(event.re)) {
        const waiter = this.pending.get(event.re);
        this.pending.delete(event.re);
        waiter.resolve(event);
      }
    }
  }

  _fail(message, handshake = null) {
    this._failure = { message, handshake };
    try {
      this.ws.close(); // browsers allow only 1000 and 3000-4999 as codes
    } catch {
      /* already closing */
    }
    this._closed(1002, message);
  }

  _closed(code, reason) {
    if (this.closed) return;
    this.closed = true;
    const failure = this._failure;
    for (const [rid] of this.pending) this._rejectPending(rid, new Error("connection closed"));
    this.onClose({ code: failure ? 1002 : code, reason: failure ? failure.message : reason, handshake: failure?.handshake || null, local: !!failure });
  }
}
