// File transfers of the page (PROTOCOL.md section 7): send a File in 256 KiB chunks within
// the window the server grants, with progress and cancel; receive into memory, check size
// and SHA-256, then offer the file as a download. Lines in the terminal's words (render.js).

import { FILES, OWN } from "./render.js";
import { MAX_CHUNK_BYTES } from "./limits.js";
import { toHex } from "./bytes.js";

/** Largest file the page accepts (kept in memory until checked). */
export const MAX_RECEIVE_BYTES = 512 * 1024 * 1024;
/** Bytes queued in the WebSocket before the sender waits. */
const MAX_BUFFERED = 4 * 1024 * 1024;

/** A received file's name made safe to save (PROTOCOL.md 7: last path component only). */
export function safeName(name) {
  let base = String(name).split(/[/\\]/).pop() || "";
  base = base.replace(/[\u0000-\u001f\u007f:]/g, "_").replace(/^\.+/, "");
  if (/^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$/i.test(base)) base = "_" + base;
  return base || "file";
}

async function sha256Hex(blob) {
  return toHex(new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", await blob.arrayBuffer())));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Transfers {
  /**
   * session: ChatSession (request, post, connection); ui: {line(text), progress(label,
   * total, onCancel) -> {update(done), done()}, download(blob, name)}
   */
  constructor(ui) {
    this.ui = ui;
    this.session = null;
    this.outgoing = new Map();
    this.incoming = new Map();
  }

  /** Send `file` to a user (`group` false) or a group. */
  async send(file, target, group) {
    const session = this.session;
    const name = file.name;
    const offer = { type: "file_offer", name, size: file.size, ...(group ? { group: target } : { to: target }) };
    let reply;
    try {
      reply = await session.request(offer);
    } catch (error) {
      this.ui.line(FILES.cannotSend(name, error.message || String(error)));
      return;
    }
    if (reply.type !== "file_offered") {
      this.ui.line(FILES.offerError(name, reply));
      return;
    }
    const out = { id: reply.id, file, name, target, group, acked: 0, sent: 0, window: 0, cancelled: false, wake: null };
    out.bar = this.ui.progress(FILES.sending(name, target, group), file.size, () => this.cancel(out));
    this.outgoing.set(out.id, out);
    out.hash = sha256Hex(file);
  }

  cancel(out) {
    if (out.cancelled) return;
    out.cancelled = true;
    this.session.request({ type: "file_cancel", id: out.id, detail: FILES.cancelledBySender }).catch(() => {});
    out.bar.done();
    this.outgoing.delete(out.id);
    this.ui.line(FILES.notSent(out.name, FILES.cancelledBySender));
    this._wake(out);
  }

  _wake(out) {
    if (out.wake) {
      const wake = out.wake;
      out.wake = null;
      wake();
    }
  }

  async _stream(out) {
    const session = this.session;
    try {
      while (out.sent < out.file.size && !out.cancelled) {
        const room = out.acked + out.window - out.sent;
        if (room <= 0 || session.connection.bufferedAmount > MAX_BUFFERED) {
          await new Promise((resolve) => {
            out.wake = resolve;
            if (room > 0) setTimeout(() => this._wake(out), 20);
          });
          continue;
        }
        const size = Math.min(MAX_CHUNK_BYTES, room, out.file.size - out.sent);
        const data = new Uint8Array(await out.file.slice(out.sent, out.sent + size).arrayBuffer());
        if (out.cancelled) break;
        session.post({ type: "file_chunk", id: out.id, offset: out.sent }, data).catch(() => {});
        out.sent += size;
        out.bar.update(out.sent);
        await sleep(0);
      }
      if (out.cancelled) return;
      const sha256 = await out.hash;
      const reply = await session.request({ type: "file_end", id: out.id, sha256 });
      if (reply.type === "error") this.ui.line(FILES.cannotSend(out.name, reply.detail || reply.code));
    } catch (error) {
      if (!out.cancelled) this.ui.line(FILES.notSent(out.name, error.message || String(error)));
    }
  }

  async _incoming(e) {
    const name = safeName(e.name);
    if (e.size > MAX_RECEIVE_BYTES) {
      const why = `larger than your limit of ${MAX_RECEIVE_BYTES} bytes`;
      this.ui.line(FILES.refused(e.name, e.sender, why));
      this.session.request({ type: "file_decline", id: e.id, detail: `declined: ${why}` }).catch(() => {});
      return;
    }
    const inc = { id: e.id, name, sender: e.sender, group: e.group, size: e.size, chunks: [], received: 0, done: false };
    this.incoming.set(e.id, inc);
    inc.bar = this.ui.progress(FILES.receiving(name, e.sender), e.size, () => {
      this.session.request({ type: "file_cancel", id: inc.id, detail: FILES.cancelledByRecipient }).catch(() => {});
      this._dropIncoming(inc);
    });
    this.session.request({ type: "file_accept", id: e.id }).catch(() => {});
  }

  _dropIncoming(inc) {
    inc.done = true;
    inc.chunks = [];
    inc.bar.done();
    this.incoming.delete(inc.id);
  }

  async _end(inc, sha256) {
    const blob = new Blob(inc.chunks);
    const fail = (problem) => {
      this.ui.line(FILES.damaged(inc.name, inc.sender, problem));
      this.session.request({ type: "file_failed", id: inc.id, detail: problem }).catch(() => {});
      this._dropIncoming(inc);
    };
    if (inc.received !== inc.size || blob.size !== inc.size) return fail(`got ${inc.received} bytes of ${inc.size}`);
    if ((await sha256Hex(blob)) !== sha256) return fail("the SHA-256 does not match");
    this.session.request({ type: "file_done", id: inc.id }).catch(() => {});
    this._dropIncoming(inc);
    this.ui.download(blob, inc.name);
    this.ui.line(FILES.received(inc.name, inc.sender, inc.group));
  }

  /** A file event from the server. */
  event(e) {
    if (e.type === "file_incoming") {
      this._incoming(e);
      return;
    }
    const out = this.outgoing.get(e.id);
    const inc = this.incoming.get(e.id);
    if (e.type === "file_go" && out) {
      out.window = e.window;
      this._stream(out);
    } else if (e.type === "file_ack" && out) {
      out.acked = Math.max(out.acked, e.received);
      this._wake(out);
    } else if (e.type === "file_result" && out) {
      this.outgoing.delete(e.id);
      out.cancelled = true;
      this._wake(out);
      out.bar.done();
      this.ui.line(FILES.result(out.name, out.target, out.group, e.delivered, e.failed));
    } else if (e.type === "file_chunk" && inc && !inc.done) {
      const data = e.body;
      if (e.offset !== inc.received || inc.received + data.length > inc.size) {
        this.ui.line(FILES.damaged(inc.name, inc.sender, "a chunk arrived out of order"));
        this.session.request({ type: "file_failed", id: inc.id, detail: "a chunk arrived out of order" }).catch(() => {});
        this._dropIncoming(inc);
        return;
      }
      inc.chunks.push(data);
      inc.received += data.length;
      inc.bar.update(inc.received);
      this.session.post({ type: "file_ack", id: inc.id, received: inc.received }).catch(() => {});
    } else if (e.type === "file_end" && inc && !inc.done) {
      this._end(inc, e.sha256);
    } else if (e.type === "file_aborted" && inc) {
      this.ui.line(FILES.aborted(inc.name, inc.sender, e.detail));
      this._dropIncoming(inc);
    }
  }

  /** The connection is gone: every transfer with it. */
  connectionLost(reason) {
    for (const out of this.outgoing.values()) {
      out.cancelled = true;
      this._wake(out);
      out.bar.done();
      this.ui.line(FILES.notSent(out.name, reason));
    }
    this.outgoing.clear();
    for (const inc of [...this.incoming.values()]) {
      this.ui.line(FILES.aborted(inc.name, inc.sender, reason));
      this._dropIncoming(inc);
    }
  }
}

export { OWN };
