// What the page keeps so that a lost connection loses nothing (PROTOCOL.md section 6.8):
// cursors per conversation, the first welcome's head, the latest token, the messages
// sent but not answered (with their cmid), and live messages held during a replay.
// Everything here stays in memory: nothing is written to browser storage.

import { base64NoPad, fromBase64 } from "./bytes.js";

export const SENDS = ["broadcast", "private", "group_message"];
const STORED = SENDS;

export const FEATURES = ["offline_pages", "missed", "unread"];
export const RESUMING = [...FEATURES, "resume"];

const fold = (text) => String(text).toLowerCase();

/** The conversation of a stored message event, as a cursor names it. */
export function targetOf(event) {
  if (event.type === "broadcast") return "*";
  if (event.type === "private") return "@" + fold(event.sender);
  if (event.type === "group_message") return fold(event.group);
  return null;
}

function targetOfSend(kind, fields) {
  if (kind === "broadcast") return "*";
  if (kind === "private") return "@" + fold(fields.to);
  return fold(fields.group);
}

export function newCmid() {
  return base64NoPad(globalThis.crypto.getRandomValues(new Uint8Array(12))).replace(/\+/g, "-").replace(/\//g, "_");
}

export class ResumeState {
  constructor() {
    this.cursors = new Map();
    this.head = null;
    this.token = null;
    this.replaying = false;
    this._waiting = [];
    this._unacknowledged = new Map();
  }

  /** The fields to send: a message gets a client message id (kept if it has one). */
  numbered(kind, fields) {
    return SENDS.includes(kind) && !("cmid" in fields) ? { ...fields, cmid: newCmid() } : fields;
  }

  sent(rid, kind, fields) {
    if (SENDS.includes(kind)) this._unacknowledged.set(rid, { kind, fields });
  }

  /** Messages never answered, oldest first; forgotten here (sent again, they are numbered anew). */
  toResend() {
    const pending = [...this._unacknowledged.values()];
    this._unacknowledged.clear();
    return pending;
  }

  welcome(event) {
    if (this.head === null && event.head !== undefined) this.head = event.head;
    if (event.token !== undefined) this.token = event.token;
  }

  /** What a login after a lost connection carries to resume. */
  loginFields() {
    if (this.token === null) return {};
    const fields = { token: this.token };
    if (this.head !== null) {
      Object.assign(fields, this.replayFields());
      this.replaying = true;
    }
    return fields;
  }

  replayFields() {
    return {
      since: this.head || 0,
      cursors: [...this.cursors].map(([target, seq]) => ({ target, seq })),
    };
  }

  /** The events to show for `event`: none, it, or it and those that waited. */
  received(event) {
    if (event.re !== undefined) {
      const request = this._unacknowledged.get(event.re);
      this._unacknowledged.delete(event.re);
      if (request && event.seq !== undefined) {
        const target = targetOfSend(request.kind, request.fields);
        this.cursors.set(target, Math.max(this.cursors.get(target) || 0, event.seq));
      }
      return [event];
    }
    if (event.type === "replayed") {
      if (event.more) return [event];
      this.replaying = false;
      const waiting = this._waiting;
      this._waiting = [];
      return [event, ...waiting.flatMap((live) => this._once(live))];
    }
    if (this.replaying && STORED.includes(event.type) && event.sent_at === undefined) {
      this._waiting.push(event);
      return [];
    }
    return this._once(event);
  }

  _once(event) {
    const target = targetOf(event);
    if (target === null || event.seq === undefined) return [event];
    if (event.seq <= (this.cursors.get(target) || 0)) return [];
    this.cursors.set(target, event.seq);
    return [event];
  }
}

export { fromBase64 };
