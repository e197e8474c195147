// Records (PROTOCOL.md section 4): AES-256-GCM, nonce = iv XOR u64 sequence number,
// AAD = the header byte 0x17. One RecordLayer per direction; any failure breaks it.

import { buffer, concat } from "./bytes.js";
import { MAX_BYTES_PER_KEY, MAX_ENVELOPE_BYTES, MAX_RECORD_LEN, MIN_RECORD_LEN } from "./limits.js";

export const RECORD_HEADER = 0x17;
const AAD = Uint8Array.of(RECORD_HEADER);
const MAX_SEQUENCE = 2n ** 64n - 1n;

export class RecordFailure extends Error {
  constructor(message) {
    super(message);
    this.name = "RecordFailure";
  }
}

/** The nonce of record `sequence` (a BigInt) under `iv` (12 bytes). */
export function nonceFor(iv, sequence) {
  const nonce = iv.slice();
  let seq = BigInt(sequence);
  for (let i = 11; i >= 4; i--) {
    nonce[i] ^= Number(seq & 0xffn);
    seq >>= 8n;
  }
  return nonce;
}

export class RecordLayer {
  /** `await RecordLayer.create(key, iv)`: one direction's key (32 bytes) and IV (12). */
  static async create(key, iv) {
    const cryptoKey = await globalThis.crypto.subtle.importKey("raw", buffer(key), "AES-GCM", false, [
      "encrypt",
      "decrypt",
    ]);
    return new RecordLayer(cryptoKey, iv);
  }

  constructor(cryptoKey, iv) {
    this.key = cryptoKey;
    this.iv = iv.slice();
    this.sequence = 0n;
    this.bytes = 0;
    this.broken = false;
  }

  /**
   * Seal one plaintext. The sequence number is taken before the first await, so calls
   * made in order get consecutive numbers; send the results in the same order.
   */
  async seal(plaintext) {
    if (this.broken) throw new RecordFailure("the channel already failed");
    if (plaintext.length > MAX_ENVELOPE_BYTES) throw new RecordFailure("plaintext too large");
    if (this.sequence > MAX_SEQUENCE || this.bytes + plaintext.length > MAX_BYTES_PER_KEY) {
      throw new RecordFailure("session key limit reached; reconnect");
    }
    const nonce = nonceFor(this.iv, this.sequence);
    this.sequence += 1n;
    this.bytes += plaintext.length;
    const sealed = await globalThis.crypto.subtle.encrypt(
      { name: "AES-GCM", iv: buffer(nonce), additionalData: buffer(AAD), tagLength: 128 },
      this.key,
      buffer(plaintext),
    );
    return concat(AAD, new Uint8Array(sealed));
  }

  /**
   * Seal `plaintext` as record `sequence` without using the number up. Only for a record
   * kept in memory in case it is needed (connection.js: the quit sent when the page
   * goes away): at most one record with a given number may ever be sent.
   */
  async sealAhead(plaintext, sequence) {
    const sealed = await globalThis.crypto.subtle.encrypt(
      { name: "AES-GCM", iv: buffer(nonceFor(this.iv, sequence)), additionalData: buffer(AAD), tagLength: 128 },
      this.key,
      buffer(plaintext),
    );
    return concat(AAD, new Uint8Array(sealed));
  }

  /** Open the next record; call one at a time, in arrival order. */
  async open(record) {
    if (this.broken) throw new RecordFailure("the channel already failed");
    try {
      if (record.length < MIN_RECORD_LEN || record.length > MAX_RECORD_LEN) throw new Error("bad record size");
      if (record[0] !== RECORD_HEADER) throw new Error("bad record header");
      if (this.sequence > MAX_SEQUENCE || this.bytes + record.length - MIN_RECORD_LEN > MAX_BYTES_PER_KEY) {
        throw new Error("key usage limit reached");
      }
      const plain = await globalThis.crypto.subtle.decrypt(
        { name: "AES-GCM", iv: buffer(nonceFor(this.iv, this.sequence)), additionalData: buffer(AAD), tagLength: 128 },
        this.key,
        buffer(record.subarray(1)),
      );
      this.sequence += 1n;
      this.bytes += plain.byteLength;
      return new Uint8Array(plain);
    } catch (error) {
      this.broken = true;
      throw new RecordFailure(error instanceof Error && error.message ? error.message : "record did not open");
    }
  }
}
