// The client side of the handshake (PROTOCOL.md sections 2 and 3): ClientHello with
// RSA-OAEP and X25519, ServerHello checks, HKDF key schedule, key confirmation and
// HandshakeError. WebCrypto only, so it runs unchanged in browsers and in Node 20.

import {
  base64NoPad, buffer, concat, decodeLenient, fromBase64, readU16, toHex, u16, utf8,
} from "./bytes.js";
import { MAX_HANDSHAKE_BYTES, PROTOCOL_VERSION, SUITE_ID } from "./limits.js";

const subtle = () => {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) throw new Error("WebCrypto (crypto.subtle) is not available");
  return s;
};

export const CLIENT_HELLO = 0x01;
export const SERVER_HELLO = 0x02;
export const CLIENT_FINISHED = 0x03;
export const HANDSHAKE_ERROR = 0x0f;
export const SERVER_HELLO_LEN = 101;
export const SERVER_HELLO_HEAD_LEN = 69;
export const KEY_EXPANSION_INFO = utf8.encode("chat/1 key expansion");

export const ERROR_NAMES = {
  1: "MALFORMED",
  2: "VERSION_MISMATCH",
  3: "UNSUPPORTED_SUITE",
  4: "UNKNOWN_SERVER_KEY",
  5: "DECRYPT_FAILED",
  6: "CONFIRMATION_FAILED",
  7: "TIMEOUT",
  8: "SERVER_BUSY",
};
export const ERROR_CODES = Object.fromEntries(Object.entries(ERROR_NAMES).map(([k, v]) => [v, Number(k)]));

export const ERROR_MEANINGS = {
  MALFORMED: "a message had the wrong type, length or layout",
  VERSION_MISMATCH: "the protocol versions differ",
  UNSUPPORTED_SUITE: "the suite is not supported",
  UNKNOWN_SERVER_KEY: "the server does not hold the key this page trusts",
  DECRYPT_FAILED: "the server could not decrypt the key exchange",
  CONFIRMATION_FAILED: "the server could not prove it holds the trusted key",
  TIMEOUT: "the handshake did not complete in time",
  SERVER_BUSY: "the server refuses new connections for now",
};

/** The handshake failed: `code` is a HandshakeError name; `remote` when the server said so. */
export class HandshakeFailure extends Error {
  constructor(code, reason, { remote = false, peerVersion = null } = {}) {
    super(`${code}: ${reason}`);
    this.name = "HandshakeFailure";
    this.code = code;
    this.reason = reason;
    this.remote = remote;
    this.peerVersion = peerVersion;
  }
}

// --- the server key -----------------------------------------------------------------

/** DER SPKI out of a PEM `PUBLIC KEY` block. */
export function pemToSpki(pem) {
  const match = /-----BEGIN PUBLIC KEY-----([A-Za-z0-9+/=\s]+)-----END PUBLIC KEY-----/.exec(pem);
  if (!match) throw new Error("not a PEM public key");
  return fromBase64(match[1]);
}

/** SHA-256 of the DER SPKI: the 32 bytes the ClientHello carries. */
export async function fingerprintBytes(spki) {
  return new Uint8Array(await subtle().digest("SHA-256", buffer(spki)));
}

/** `SHA256:` + base64 without padding (PROTOCOL.md 2.1). */
export async function fingerprintText(spki) {
  return "SHA256:" + base64NoPad(await fingerprintBytes(spki));
}

/** The server key, ready for RSA-OAEP: {spki, key, k (modulus bytes), fingerprint}. */
export async function importServerKey(spki) {
  const key = await subtle().importKey("spki", buffer(spki), { name: "RSA-OAEP", hash: "SHA-256" }, false, [
    "encrypt",
  ]);
  const bits = key.algorithm.modulusLength;
  if (bits < 2048 || bits > 8192) throw new Error(`RSA key of ${bits} bits (2,048 to 8,192 allowed)`);
  return { spki, key, k: Math.ceil(bits / 8), fingerprint: await fingerprintBytes(spki) };
}

// --- primitives ---------------------------------------------------------------------

export async function sha256(data) {
  return new Uint8Array(await subtle().digest("SHA-256", buffer(data)));
}

async function hmacKey(key, usage) {
  return subtle().importKey("raw", buffer(key), { name: "HMAC", hash: "SHA-256" }, false, [usage]);
}

export async function hmacSha256(key, data) {
  return new Uint8Array(await subtle().sign("HMAC", await hmacKey(key, "sign"), buffer(data)));
}

/** Constant-time check of an HMAC-SHA256 tag (WebCrypto's verify). */
export async function hmacVerify(key, data, tag) {
  if (tag.length !== 32) return false;
  return subtle().verify("HMAC", await hmacKey(key, "verify"), buffer(tag), buffer(data));
}

const PKCS8_X25519_PREFIX = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
]);

/** An X25519 private key from its 32 raw bytes (clamped by X25519 itself, RFC 7748). */
export async function x25519PrivateKey(raw) {
  if (raw.length !== 32) throw new Error("X25519 private key must be 32 bytes");
  return subtle().importKey("pkcs8", buffer(concat(PKCS8_X25519_PREFIX, raw)), { name: "X25519" }, true, [
    "deriveBits",
  ]);
}

/** The 32-byte public key of an X25519 private key. */
export async function x25519PublicOf(privateKey) {
  const jwk = await subtle().exportKey("jwk", privateKey);
  return fromBase64(jwk.x);
}

/** X25519(private, peer public); fails MALFORMED on a bad or low-order peer key. */
export async function x25519(privateKey, peerPublic) {
  let shared;
  try {
    const peer = await subtle().importKey("raw", buffer(peerPublic), { name: "X25519" }, false, []);
    shared = new Uint8Array(await subtle().deriveBits({ name: "X25519", public: peer }, privateKey, 256));
  } catch {
    throw new HandshakeFailure("MALFORMED", "invalid X25519 public key");
  }
  if (shared.every((b) => b === 0)) throw new HandshakeFailure("MALFORMED", "X25519 gave an all-zero shared secret");
  return shared;
}

/** HKDF-SHA256(salt=TH1, IKM=x25519_shared||rsa_secret, info, 152) split as in section 3. */
export async function deriveKeys(x25519Shared, rsaSecret, th1) {
  const ikm = await subtle().importKey("raw", buffer(concat(x25519Shared, rsaSecret)), "HKDF", false, [
    "deriveBits",
  ]);
  const okm = new Uint8Array(
    await subtle().deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: buffer(th1), info: buffer(KEY_EXPANSION_INFO) },
      ikm,
      152 * 8,
    ),
  );
  return {
    expansion: okm,
    c2sKey: okm.slice(0, 32),
    s2cKey: okm.slice(32, 64),
    c2sIv: okm.slice(64, 76),
    s2cIv: okm.slice(76, 88),
    serverConfirmKey: okm.slice(88, 120),
    clientConfirmKey: okm.slice(120, 152),
  };
}

export function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

// --- HandshakeError -----------------------------------------------------------------

export function encodeHandshakeError(code, reason) {
  let data = utf8.encode(reason);
  if (data.length > 512) data = data.slice(0, 512);
  return concat(Uint8Array.of(HANDSHAKE_ERROR, code), u16(PROTOCOL_VERSION), u16(data.length), data);
}

/** A HandshakeError message as a HandshakeFailure (lenient, PROTOCOL.md 2.6). */
export function parseHandshakeError(message) {
  if (message.length < 6) return new HandshakeFailure("MALFORMED", "short HandshakeError", { remote: true });
  const name = ERROR_NAMES[message[1]];
  const peerVersion = readU16(message, 2);
  const reason = decodeLenient(message.slice(6, 6 + readU16(message, 4)));
  return new HandshakeFailure(name || "MALFORMED", reason, { remote: true, peerVersion });
}

// --- the client state machine -------------------------------------------------------

/**
 * `await hello()` gives the ClientHello; `await receiveServerHello(msg)` checks the
 * ServerHello and gives the ClientFinished; then `keys` holds the record keys.
 * Tests pass `random(n)` and `wrap(secret)` to reproduce the vectors.
 */
export class ClientHandshake {
  constructor(serverKey, { random = randomBytes, wrap = null } = {}) {
    this.serverKey = serverKey;
    this.random = random;
    this.wrap =
      wrap ||
      (async (secret) => new Uint8Array(await subtle().encrypt({ name: "RSA-OAEP" }, serverKey.key, buffer(secret))));
    this.clientHello = null;
    this.keys = null;
    this._private = null;
    this._rsaSecret = null;
  }

  async hello() {
    const clientRandom = this.random(32);
    const ephemeral = this.random(32);
    this._rsaSecret = this.random(32);
    this._private = await x25519PrivateKey(ephemeral);
    const wrapped = await this.wrap(this._rsaSecret);
    if (wrapped.length !== this.serverKey.k) throw new Error("wrapped secret must be as long as the modulus");
    this.clientHello = concat(
      Uint8Array.of(CLIENT_HELLO),
      u16(PROTOCOL_VERSION),
      u16(SUITE_ID),
      clientRandom,
      await x25519PublicOf(this._private),
      this.serverKey.fingerprint,
      u16(wrapped.length),
      wrapped,
    );
    return this.clientHello;
  }

  async receiveServerHello(message) {
    if (!this._private) throw new HandshakeFailure("MALFORMED", "no ClientHello was sent");
    if (message.length > MAX_HANDSHAKE_BYTES) throw new HandshakeFailure("MALFORMED", "handshake message too large");
    if (message[0] === HANDSHAKE_ERROR) throw parseHandshakeError(message);
    if (message.length !== SERVER_HELLO_LEN || message[0] !== SERVER_HELLO) {
      throw new HandshakeFailure("MALFORMED", "not a ServerHello");
    }
    const version = readU16(message, 1);
    if (version !== PROTOCOL_VERSION) {
      throw new HandshakeFailure("VERSION_MISMATCH", `the server speaks version ${version}`, { peerVersion: version });
    }
    const suite = readU16(message, 3);
    if (suite !== SUITE_ID) throw new HandshakeFailure("UNSUPPORTED_SUITE", `the server chose suite ${suite}`);
    const shared = await x25519(this._private, message.slice(37, 69));
    const th1 = await sha256(concat(this.clientHello, message.slice(0, SERVER_HELLO_HEAD_LEN)));
    const keys = await deriveKeys(shared, this._rsaSecret, th1);
    if (!(await hmacVerify(keys.serverConfirmKey, th1, message.slice(SERVER_HELLO_HEAD_LEN)))) {
      throw new HandshakeFailure("CONFIRMATION_FAILED", "the server did not prove it holds the private key");
    }
    const th2 = await sha256(concat(this.clientHello, message));
    const finished = concat(Uint8Array.of(CLIENT_FINISHED), await hmacSha256(keys.clientConfirmKey, th2));
    this.keys = {
      sendKey: keys.c2sKey,
      sendIv: keys.c2sIv,
      recvKey: keys.s2cKey,
      recvIv: keys.s2cIv,
      th1,
      th2,
    };
    this._private = null;
    this._rsaSecret = null;
    return finished;
  }
}

export { toHex };
