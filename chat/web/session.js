// The chat session of the page: connect, log in, send what the Message field parsed,
// hand each event to the UI, and after a lost connection reconnect with backoff and
// resume (PROTOCOL.md 6.8): the name, password and resume token stay in memory only.

import { connect, ConnectFailure } from "./connection.js";
import { HandshakeFailure, ERROR_MEANINGS } from "./handshake.js";
import { RESUMING, ResumeState } from "./resume.js";
import { describeClose, worthRetrying } from "./closecodes.js";
import { OWN } from "./render.js";

/** Handshake failures that mean the server does not hold the trusted key. */
const KEY_PROBLEMS = new Set(["UNKNOWN_SERVER_KEY", "DECRYPT_FAILED", "CONFIRMATION_FAILED"]);
const FILE_EVENTS = new Set(["file_incoming", "file_go", "file_chunk", "file_ack", "file_end", "file_result", "file_aborted"]);

/** Why a connection attempt failed, in words for the user. */
export function failureText(error) {
  if (error instanceof HandshakeFailure) {
    if (error.code === "VERSION_MISMATCH" && error.peerVersion !== null) return OWN.versionMismatch(error.peerVersion);
    if (error.code === "CONFIRMATION_FAILED" && !error.remote) return OWN.wrongKeyProof;
    return OWN.handshakeFailed(error.code, ERROR_MEANINGS[error.code] || "", error.reason);
  }
  if (error instanceof ConnectFailure) {
    return error.code ? `${error.message} (${describeClose(error.code, "")})` : error.message;
  }
  return String(error && error.message ? error.message : error);
}

export class ChatSession {
  /**
   * ui: {event(e), line(text), online(users), joined(names), exited(names), groups(list),
   *      state(online), files (a Transfers), loggedIn(name), quit()}
   */
  constructor({ url, serverKey, ui }) {
    this.url = url;
    this.serverKey = serverKey;
    this.ui = ui;
    this.connection = null;
    this.name = null;
    this.password = null;
    this.loggedIn = false;
    this.quitting = false;
    this.resume = new ResumeState();
    this.silent = new Set();
    this.held = [];
    this.loginRid = null;
    this.attempt = 0;
  }

  async _open() {
    const connection = await connect({ url: this.url, serverKey: this.serverKey });
    connection.onEvent = (event) => this._event(event);
    connection.onClose = (close) => this._closed(connection, close);
    this.connection = connection;
    return connection;
  }

  /**
   * Log in (first time). Resolves to {welcome} or {error} (an error event: the name is
   * refused, or a password is required) or rejects when the connection cannot be made.
   */
  async login(name, password = null) {
    if (!this.connection || this.connection.closed) await this._open();
    const fields = { type: "login", name, features: RESUMING };
    if (password !== null) fields.password = password;
    const { rid, reply } = this.connection.request(fields);
    this.loginRid = rid;
    const event = await reply;
    this.loginRid = null;
    if (event.type !== "welcome") return { error: event };
    this.name = event.name;
    this.password = password;
    this.loggedIn = true;
    this.resume.welcome(event);
    this.ui.loggedIn(event.name);
    this.ui.event(event);
    this._afterLogin();
    return { welcome: event };
  }

  _afterLogin() {
    this.silentRequest({ type: "list" });
    this.silentRequest({ type: "group_members" });
  }

  /** A request whose reply updates the page but is not shown in the log. */
  silentRequest(envelope) {
    if (!this.connection || this.connection.closed) return;
    const { rid } = this.connection.request(envelope);
    this.silent.add(rid);
  }

  /** Send a parsed request as the user asked for it (its reply is shown). */
  send(type, fields = {}) {
    if (!this.online) {
      this.held.push({ type, fields });
      this.ui.line(OWN.held);
      return null;
    }
    const numbered = this.resume.numbered(type, fields);
    const { rid, reply } = this.connection.request({ type, ...numbered });
    this.resume.sent(rid, type, numbered);
    if (type === "broadcast" || type === "group_message") {
      // The sender's own message: the server answers only `ok`; show what others see.
      reply.then((event) => event.type === "ok" && this.ui.sent(type, fields, this.name)).catch(() => {});
    }
    return reply;
  }

  /** A request for the file transfers: resolves to its reply. */
  request(envelope, body) {
    if (!this.online) return Promise.reject(new Error("not connected"));
    return this.connection.request(envelope, body).reply;
  }

  /** Fire and forget (file_chunk, file_ack). */
  post(envelope, body) {
    if (!this.online) return Promise.reject(new Error("not connected"));
    return this.connection.send(envelope, body);
  }

  get online() {
    return this.loggedIn && this.connection !== null && !this.connection.closed;
  }

  quit() {
    this.quitting = true;
    if (this.online) this.connection.request({ type: "quit" });
    else this.ui.quit();
  }

  /** The page is going away: end the session at once (best effort, synchronous). */
  leave() {
    this.quitting = true;
    if (this.connection) this.connection.quitNow();
  }

  _event(event) {
    if (event.re !== undefined && event.re === this.loginRid) return; // login() handles it
    if (FILE_EVENTS.has(event.type)) {
      this.ui.files.event(event);
      return;
    }
    if (event.type === "user_joined") this.ui.joined(event.names);
    if (event.type === "user_exited") this.ui.exited(event.names);
    if (event.type === "user_list" && (event.re === undefined || this.silent.has(event.re))) this.ui.online(event.users);
    if (event.type === "group_members" && this.silent.has(event.re)) this.ui.groups((event.groups || []).map((g) => g.group));
    if (event.type === "offline_page") this.post({ type: "offline_ack", upto: event.upto }).catch(() => {});
    if (event.type === "replayed" && event.more) {
      this.silentRequest({ type: "replay", ...this.resume.replayFields() });
    }
    if (event.re !== undefined && this.silent.has(event.re)) {
      this.silent.delete(event.re);
      if (event.type !== "error") return;
    }
    for (const shown of this.resume.received(event)) this.ui.event(shown);
  }

  _closed(connection, { code, reason }) {
    if (connection !== this.connection) return;
    this.ui.files.connectionLost(reason || describeClose(code, ""));
    if (!this.loggedIn) return;
    this.ui.state(false);
    if (this.quitting || code === 1000) {
      this.loggedIn = false;
      this.ui.quit();
      return;
    }
    if (!worthRetrying(code)) {
      this.loggedIn = false;
      this.ui.line(OWN.closed(describeClose(code, reason)));
      return;
    }
    const again = this.attempt > 0; // lost again before a reconnect settled
    this._reconnect(OWN.connectionLost(describeClose(code, reason), again), !again);
  }

  _delay() {
    const base = Math.min(30, 2 ** Math.min(this.attempt, 5));
    this.attempt += 1;
    return base * (0.75 + Math.random() * 0.5);
  }

  _reconnect(what, first) {
    const delay = first ? 1 + Math.random() : this._delay();
    this.ui.line(OWN.reconnectingIn(what, delay, first));
    setTimeout(() => this._relogin(), delay * 1000);
  }

  async _relogin() {
    if (this.quitting) return;
    this.attempt = Math.max(this.attempt, 1);
    let connection;
    try {
      connection = await this._open();
    } catch (error) {
      if (error instanceof HandshakeFailure && KEY_PROBLEMS.has(error.code)) {
        // Another key answers at this address: never retry with it, say why and stop.
        this.loggedIn = false;
        this.ui.line(OWN.cannotLogBackIn(this.name, failureText(error).replace(/\.$/, "")));
        return;
      }
      this._reconnect(failureText(error).replace(/\.$/, "") + ".", false);
      return;
    }
    const fields = { type: "login", name: this.name, features: RESUMING, ...this.resume.loginFields() };
    if (this.password !== null) fields.password = this.password;
    const { rid, reply } = connection.request(fields);
    this.loginRid = rid;
    let event;
    try {
      event = await reply;
    } catch {
      return; // closed again: _closed schedules the next attempt
    } finally {
      this.loginRid = null;
    }
    if (event.type !== "welcome") {
      if (event.type === "error" && event.code === "username_taken") {
        this.ui.line(OWN.oldSessionRemains(this.name, 0.5));
        connection.onClose = () => {};
        connection.close();
        setTimeout(() => this._relogin(), 500);
        return;
      }
      this.loggedIn = false;
      this.ui.line(OWN.cannotLogBackIn(this.name, this._why(event)));
      connection.close();
      return;
    }
    this.attempt = 0;
    this.resume.welcome(event);
    this.ui.state(true);
    this.ui.line(OWN.reconnected(this.name));
    this._afterLogin();
    for (const { kind, fields: f } of this.resume.toResend()) this.send(kind, f);
    const held = this.held;
    this.held = [];
    for (const { type, fields: f } of held) this.send(type, f);
  }

  _why(event) {
    return (event.code || event.type || "refused").replace(/_/g, " ");
  }
}
