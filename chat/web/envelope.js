// Envelopes (PROTOCOL.md section 6): u32 header length, UTF-8 JSON header, body.
// Requests are encoded compactly with `type` first; events are decoded, checked against
// the types the page uses, and reduced to the fields it knows (section 6.6).

import { concat, decodeStrict, readU32, u32, utf8 } from "./bytes.js";
import { MAX_ENVELOPE_BYTES, MAX_HEADER_BYTES } from "./limits.js";

export class EnvelopeError extends Error {
  constructor(message) {
    super(message);
    this.name = "EnvelopeError";
  }
}

/** `{type, ...fields}` (+ optional body bytes) as envelope bytes. */
export function encodeEnvelope(envelope, body = new Uint8Array(0)) {
  const { type, ...fields } = envelope;
  const header = utf8.encode(JSON.stringify({ type, ...fields }));
  if (header.length > MAX_HEADER_BYTES || 4 + header.length + body.length > MAX_ENVELOPE_BYTES) {
    throw new EnvelopeError("envelope too large");
  }
  return concat(u32(header.length), header, body);
}

/** Envelope bytes as {header (with type), body}; throws EnvelopeError if malformed. */
export function decodeEnvelope(data) {
  if (data.length < 4) throw new EnvelopeError("short envelope");
  const length = readU32(data, 0);
  if (length > MAX_HEADER_BYTES || length > data.length - 4) throw new EnvelopeError("bad header length");
  let header;
  let text;
  try {
    text = decodeStrict(data.subarray(4, 4 + length));
    header = JSON.parse(text);
  } catch {
    throw new EnvelopeError("header is not UTF-8 JSON");
  }
  const problem = jsonProblem(text);
  if (problem) throw new EnvelopeError(problem);
  if (header === null || typeof header !== "object" || Array.isArray(header) || typeof header.type !== "string") {
    throw new EnvelopeError("header is not an object with a type");
  }
  if (!wellFormed(header)) throw new EnvelopeError("lone surrogate in a string");
  return { header, body: data.slice(4 + length) };
}

/**
 * What JSON.parse lets through and section 6 forbids: a key twice in one object, and
 * numbers that are not integers (`1.0`, `1e3`). `text` is already known to be valid JSON.
 */
export function jsonProblem(text) {
  const objects = []; // per open object or array: a Set of its keys, or null for an array
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (expectKey) {
        const keys = objects[objects.length - 1];
        const key = JSON.parse(text.slice(i, j + 1));
        if (keys.has(key)) return `duplicate key ${JSON.stringify(key)}`;
        keys.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === "{") {
      objects.push(new Set());
      expectKey = true;
    } else if (c === "[") {
      objects.push(null);
    } else if (c === "}" || c === "]") {
      objects.pop();
    } else if (c === ",") {
      expectKey = objects[objects.length - 1] instanceof Set;
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      const match = /^-?[0-9]+([.eE][-+0-9.eE]*)?/.exec(text.slice(i, i + 400));
      if (match[1]) return "a number that is not an integer";
      i += match[0].length - 1;
    }
  }
  return null;
}

function wellFormed(value) {
  if (typeof value === "string") {
    return typeof value.isWellFormed === "function"
      ? value.isWellFormed()
      : !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(value);
  }
  if (Array.isArray(value)) return value.every(wellFormed);
  if (value && typeof value === "object") return Object.entries(value).every(([k, v]) => wellFormed(k) && wellFormed(v));
  return true;
}

// --- what the page knows of each event (section 6.2-6.8, 7) ---------------------------
// s: string, i: integer, b: boolean, S: list of strings, O: list of objects.

const N = { mid: "i", seq: "i" };
const EVENTS = {
  ok: [{}, N],
  error: [{ code: "s" }, { name: "s", group: "s", user: "s", users: "S", detail: "s", limit: "i" }],
  notice: [{ code: "s" }, { detail: "s" }],
  welcome: [{ name: "s" }, { offline: "i", features: "S", head: "i", token: "s" }],
  user_joined: [{ names: "S" }, {}],
  user_exited: [{ names: "S" }, {}],
  user_list: [{ users: "S" }, { more: "i", registered: "S" }],
  broadcast: [{ sender: "s", text: "s" }, { ...N, sent_at: "i" }],
  private: [{ sender: "s", text: "s" }, { sent_at: "i", id: "i", to: "s", ...N }],
  unread: [{ groups: "O" }, {}],
  replayed: [{ count: "i" }, { lost: "i", more: "b" }],
  offline_page: [{ upto: "i", more: "i" }, {}],
  missed: [{ count: "i" }, {}],
  private_queued: [{ to: "s", text: "s" }, N],
  registered: [{ name: "s" }, {}],
  password_changed: [{}, {}],
  group_history: [{ group: "s", messages: "O" }, { more: "i", before: "i" }],
  history: [{ target: "s", messages: "O" }, { more: "i", before: "i" }],
  search_results: [{ words: "s", results: "O" }, { before: "i" }],
  group_invite_only: [{ group: "s", on: "b" }, {}],
  private_sent: [{ to: "s", text: "s" }, N],
  group_created: [{ group: "s" }, {}],
  group_added: [{ group: "s" }, {}],
  group_joined: [{ group: "s" }, {}],
  group_list: [{ groups: "S" }, { more: "i" }],
  group_members: [{ groups: "O" }, { more: "i" }],
  group_message: [{ group: "s", sender: "s", text: "s" }, { ...N, sent_at: "i" }],
  group_left: [{ group: "s" }, {}],
  group_deleted: [{ group: "s" }, {}],
  group_delete_done: [{ group: "s" }, {}],
  group_removed: [{ group: "s" }, {}],
  member_joined: [{ group: "s", name: "s" }, {}],
  member_left: [{ group: "s", name: "s" }, {}],
  member_added: [{ group: "s", name: "s" }, {}],
  member_removed: [{ group: "s", name: "s" }, {}],
  file_offered: [{ id: "s", recipients: "S" }, {}],
  file_incoming: [{ id: "s", sender: "s", name: "s", size: "i" }, { group: "s" }],
  file_go: [{ id: "s", window: "i" }, {}],
  file_chunk: [{ id: "s", offset: "i" }, {}],
  file_ack: [{ id: "s", received: "i" }, {}],
  file_end: [{ id: "s", sha256: "s" }, {}],
  file_result: [{ id: "s", delivered: "S", failed: "O" }, {}],
  file_aborted: [{ id: "s", detail: "s" }, {}],
};

function fits(kind, value) {
  switch (kind) {
    case "s":
      return typeof value === "string";
    case "i":
      return Number.isSafeInteger(value) && value >= 0;
    case "b":
      return typeof value === "boolean";
    case "S":
      return Array.isArray(value) && value.every((v) => typeof v === "string");
    case "O":
      return Array.isArray(value) && value.every((v) => v !== null && typeof v === "object" && !Array.isArray(v));
    default:
      return false;
  }
}

/**
 * A decoded event as the page keeps it: `{type, ...known fields, re?, body?}`.
 * An unknown type keeps only `re`; a known type with a missing or mistyped field is
 * refused (EnvelopeError: the client drops it).
 */
export function checkEvent(header, body) {
  const event = { type: header.type };
  if (Number.isSafeInteger(header.re)) event.re = header.re;
  const schema = EVENTS[header.type];
  if (!schema) {
    event.unknown = true;
    return event;
  }
  const [required, optional] = schema;
  for (const [name, kind] of Object.entries(required)) {
    if (!fits(kind, header[name])) throw new EnvelopeError(`${header.type}: bad or missing ${name}`);
    event[name] = header[name];
  }
  for (const [name, kind] of Object.entries(optional)) {
    if (header[name] === undefined) continue;
    if (!fits(kind, header[name])) throw new EnvelopeError(`${header.type}: bad ${name}`);
    event[name] = header[name];
  }
  if (header.type === "file_chunk") event.body = body;
  return event;
}

/** Envelope bytes straight to a checked event. */
export function decodeEvent(data) {
  const { header, body } = decodeEnvelope(data);
  return checkEvent(header, body);
}
