// Byte helpers shared by the protocol modules: hex, UTF-8, big-endian integers, base64.

export const utf8 = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const lenientDecoder = new TextDecoder("utf-8");

/** Bytes as lowercase hex. */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Hex (whitespace ignored) as bytes. */
export function fromHex(hex) {
  const clean = hex.replace(/\s+/g, "");
  if (clean.length % 2 || /[^0-9a-fA-F]/.test(clean)) throw new TypeError("not hex");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export function u16(value) {
  return new Uint8Array([(value >>> 8) & 0xff, value & 0xff]);
}

export function u32(value) {
  return new Uint8Array([(value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff]);
}

export function readU16(bytes, offset) {
  return (bytes[offset] << 8) | bytes[offset + 1];
}

export function readU32(bytes, offset) {
  return ((bytes[offset] << 24) >>> 0) + ((bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) | bytes[offset + 3]);
}

/** UTF-8 that must be valid (envelopes). Throws on invalid bytes. */
export function decodeStrict(bytes) {
  return strictDecoder.decode(bytes);
}

/** UTF-8 with invalid bytes as U+FFFD (HandshakeError reasons). */
export function decodeLenient(bytes) {
  return lenientDecoder.decode(bytes);
}

/** Standard base64 without padding (fingerprints, PROTOCOL.md 2.1). */
export function base64NoPad(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/=+$/, "");
}

export function fromBase64(text) {
  const binary = atob(text.replace(/\s+/g, "").replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** Bytes as an ArrayBuffer of exactly their length (for WebCrypto and WebSocket). */
export function buffer(bytes) {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
    ? bytes.buffer
    : bytes.slice().buffer;
}
