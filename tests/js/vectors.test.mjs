// The test vectors of PROTOCOL.md section 9 (tests/vectors/handshake.json), recomputed
// with the browser client's protocol modules (chat/web/*.js) under Node's WebCrypto.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as P from "../../chat/web/protocol.js";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const V = JSON.parse(readFileSync(here("../vectors/handshake.json"), "utf8"));
const PRIVATE_PEM = readFileSync(here("../vectors/server_private.pem"), "utf8");
const H = V.handshake;
const I = V.inputs;
const bytes = (hex) => P.fromHex(hex);

function fixedRandom(...chunks) {
  const queue = chunks.map(bytes);
  return (n) => {
    const chunk = queue.shift();
    assert.equal(chunk.length, n, `asked for ${n} bytes`);
    return chunk;
  };
}

async function serverKey() {
  return P.importServerKey(bytes(H.server_spki_der));
}

async function finishedHandshake() {
  const hs = new P.ClientHandshake(await serverKey(), {
    random: fixedRandom(I.client_random, I.client_x25519_private, I.rsa_secret),
    wrap: async () => bytes(I.rsa_wrapped_secret),
  });
  const hello = await hs.hello();
  const finished = await hs.receiveServerHello(bytes(H.server_hello));
  return { hs, hello, finished };
}

test("fingerprint of the test key, raw and as text", async () => {
  const spki = bytes(H.server_spki_der);
  assert.equal(P.hex(await P.fingerprintBytes(spki)), H.server_fingerprint);
  assert.equal(await P.fingerprintText(spki), H.server_fingerprint_text);
  const pem = `-----BEGIN PUBLIC KEY-----\n${btoa(String.fromCharCode(...spki)).replace(/.{64}/g, "$&\n")}\n-----END PUBLIC KEY-----\n`;
  assert.equal(P.hex(P.pemToSpki(pem)), H.server_spki_der);
  const key = await serverKey();
  assert.equal(key.k, 256);
});

test("the wrapped secret is a real RSA-OAEP encryption of rsa_secret", async () => {
  const der = Uint8Array.from(atob(PRIVATE_PEM.replace(/-----[^-]+-----|\s/g, "")), (c) => c.charCodeAt(0));
  const key = await crypto.subtle.importKey("pkcs8", der, { name: "RSA-OAEP", hash: "SHA-256" }, false, ["decrypt"]);
  const secret = await crypto.subtle.decrypt({ name: "RSA-OAEP" }, key, bytes(I.rsa_wrapped_secret));
  assert.equal(P.hex(new Uint8Array(secret)), I.rsa_secret);
  // And a fresh wrap by the page's own code decrypts too (k bytes long).
  const hs = new P.ClientHandshake(await serverKey());
  const hello = await hs.hello();
  assert.equal(hello.length, 103 + 256);
  const wrapped = hello.slice(103);
  assert.equal(new Uint8Array(await crypto.subtle.decrypt({ name: "RSA-OAEP" }, key, wrapped)).length, 32);
});

test("X25519 public keys and the shared secret", async () => {
  const client = await P.x25519PrivateKey(bytes(I.client_x25519_private));
  const server = await P.x25519PrivateKey(bytes(I.server_x25519_private));
  assert.equal(P.hex(await P.x25519PublicOf(client)), H.client_x25519_public);
  assert.equal(P.hex(await P.x25519PublicOf(server)), H.server_x25519_public);
  assert.equal(P.hex(await P.x25519(client, bytes(H.server_x25519_public))), H.x25519_shared);
  assert.equal(P.hex(await P.x25519(server, bytes(H.client_x25519_public))), H.x25519_shared);
});

test("a low-order X25519 point fails MALFORMED", async () => {
  const client = await P.x25519PrivateKey(bytes(I.client_x25519_private));
  await assert.rejects(P.x25519(client, new Uint8Array(32)), (e) => e instanceof P.HandshakeFailure && e.code === "MALFORMED");
});

test("ClientHello bytes given the fixed randomness", async () => {
  const { hello } = await finishedHandshake();
  assert.equal(P.hex(hello), H.client_hello);
});

test("key derivation: TH1, HKDF extract and expand, the split", async () => {
  const th1 = await P.sha256(P.concat(bytes(H.client_hello), bytes(H.server_hello).slice(0, 69)));
  assert.equal(P.hex(th1), H.transcript_hash_1);
  const ikm = P.concat(bytes(H.x25519_shared), bytes(I.rsa_secret));
  assert.equal(P.hex(ikm), H.hkdf_ikm);
  assert.equal(P.hex(await P.hmacSha256(th1, ikm)), H.hkdf_prk);
  const keys = await P.deriveKeys(bytes(H.x25519_shared), bytes(I.rsa_secret), th1);
  assert.equal(P.hex(keys.expansion), H.key_expansion);
  assert.equal(P.hex(keys.c2sKey), H.c2s_key);
  assert.equal(P.hex(keys.s2cKey), H.s2c_key);
  assert.equal(P.hex(keys.c2sIv), H.c2s_iv);
  assert.equal(P.hex(keys.s2cIv), H.s2c_iv);
  assert.equal(P.hex(keys.serverConfirmKey), H.server_confirm_key);
  assert.equal(P.hex(keys.clientConfirmKey), H.client_confirm_key);
  assert.equal(P.hex(await P.hmacSha256(keys.serverConfirmKey, th1)), H.server_confirm);
  assert.equal(P.hex(P.KEY_EXPANSION_INFO), "636861742f31206b657920657870616e73696f6e");
});

test("ServerHello accepted, ClientFinished and TH2 as in the vectors", async () => {
  const { hs, finished } = await finishedHandshake();
  assert.equal(P.hex(finished), H.client_finished);
  assert.equal(P.hex(hs.keys.th2), H.transcript_hash_2);
  assert.equal(P.hex(hs.keys.sendKey), H.c2s_key);
  assert.equal(P.hex(hs.keys.recvIv), H.s2c_iv);
});

async function failureOf(serverHello) {
  const hs = new P.ClientHandshake(await serverKey(), {
    random: fixedRandom(I.client_random, I.client_x25519_private, I.rsa_secret),
    wrap: async () => bytes(I.rsa_wrapped_secret),
  });
  await hs.hello();
  try {
    await hs.receiveServerHello(serverHello);
  } catch (error) {
    assert.ok(error instanceof P.HandshakeFailure, String(error));
    return error;
  }
  assert.fail("the ServerHello was accepted");
}

test("ServerHello checks fail with the documented codes", async () => {
  const good = bytes(H.server_hello);
  const flip = (offset) => {
    const copy = good.slice();
    copy[offset] ^= 1;
    return copy;
  };
  assert.equal((await failureOf(flip(100))).code, "CONFIRMATION_FAILED");
  assert.equal((await failureOf(flip(10))).code, "CONFIRMATION_FAILED"); // server_random
  assert.equal((await failureOf(flip(2))).code, "VERSION_MISMATCH");
  assert.equal((await failureOf(flip(2))).peerVersion, 0);
  assert.equal((await failureOf(flip(4))).code, "UNSUPPORTED_SUITE");
  assert.equal((await failureOf(good.slice(0, 100))).code, "MALFORMED");
  assert.equal((await failureOf(P.concat(good, new Uint8Array(1)))).code, "MALFORMED");
  assert.equal((await failureOf(new Uint8Array(2049))).code, "MALFORMED");
  const zeroShare = good.slice();
  zeroShare.fill(0, 37, 69);
  assert.equal((await failureOf(zeroShare)).code, "MALFORMED");
  const busy = P.encodeHandshakeError(8, "busy");
  const failure = await failureOf(busy);
  assert.deepEqual([failure.code, failure.reason, failure.remote], ["SERVER_BUSY", "busy", true]);
});

test("records: seal in both directions byte for byte, open what the other side sealed", async () => {
  const layers = {
    c2s: [await P.RecordLayer.create(bytes(H.c2s_key), bytes(H.c2s_iv)), await P.RecordLayer.create(bytes(H.c2s_key), bytes(H.c2s_iv))],
    s2c: [await P.RecordLayer.create(bytes(H.s2c_key), bytes(H.s2c_iv)), await P.RecordLayer.create(bytes(H.s2c_key), bytes(H.s2c_iv))],
  };
  for (const record of V.records) {
    const [sender, receiver] = layers[record.direction];
    const plaintext = P.encodeEnvelope(record.envelope);
    assert.equal(P.hex(plaintext), record.plaintext, record.name);
    assert.equal(new TextDecoder().decode(plaintext.slice(4)), record.header);
    assert.equal(P.hex(P.nonceFor(bytes(H[`${record.direction}_iv`]), BigInt(record.sequence))), record.nonce);
    assert.equal(P.hex(await sender.seal(plaintext)), record.record, record.name);
    const opened = await receiver.open(bytes(record.record));
    assert.equal(P.hex(opened), record.plaintext);
    const { header } = P.decodeEnvelope(opened);
    assert.deepEqual(header, record.envelope);
  }
});

test("the client's session opens the server's records as events", async () => {
  const { hs } = await finishedHandshake();
  const receive = await P.RecordLayer.create(hs.keys.recvKey, hs.keys.recvIv);
  const s2c = V.records.filter((r) => r.direction === "s2c");
  const events = [];
  for (const r of s2c) events.push(P.decodeEvent(await receive.open(bytes(r.record))));
  assert.deepEqual(events, [
    { type: "welcome", name: "alice", re: 1 },
    { type: "ok", re: 2 },
  ]);
});

test("a record sealed ahead is the record sealed later with that number", async () => {
  const ahead = await P.RecordLayer.create(bytes(H.c2s_key), bytes(H.c2s_iv));
  const plain = V.records.filter((r) => r.direction === "c2s").map((r) => bytes(r.plaintext));
  assert.equal(P.hex(await ahead.sealAhead(plain[1], 1n)), V.records[1].record);
  assert.equal(ahead.sequence, 0n); // the number is not used up
  assert.equal(P.hex(await ahead.seal(plain[0])), V.records[0].record);
});

test("a record that was altered, replayed or reordered ends the channel", async () => {
  const s2c = V.records.filter((r) => r.direction === "s2c").map((r) => bytes(r.record));
  const fresh = () => P.RecordLayer.create(bytes(H.s2c_key), bytes(H.s2c_iv));
  let layer = await fresh();
  const altered = s2c[0].slice();
  altered[5] ^= 0x80;
  await assert.rejects(layer.open(altered), P.RecordFailure);
  await assert.rejects(layer.open(s2c[0]), P.RecordFailure); // broken: even a good one fails
  layer = await fresh();
  await assert.rejects(layer.open(s2c[1]), P.RecordFailure); // out of order
  layer = await fresh();
  await layer.open(s2c[0]);
  await assert.rejects(layer.open(s2c[0]), P.RecordFailure); // replayed
  layer = await fresh();
  const header = s2c[0].slice();
  header[0] = 0x18;
  await assert.rejects(layer.open(header), P.RecordFailure);
  layer = await fresh();
  await assert.rejects(layer.open(new Uint8Array(16)), P.RecordFailure);
});

test("HandshakeError: the sample bytes, parsing, lenient and short", () => {
  const he = V.handshake_error;
  assert.equal(P.hex(P.encodeHandshakeError(he.code, he.reason)), he.message);
  const parsed = P.parseHandshakeError(bytes(he.message));
  assert.deepEqual([parsed.code, parsed.reason, parsed.peerVersion, parsed.remote], ["VERSION_MISMATCH", he.reason, 1, true]);
  assert.equal(P.parseHandshakeError(bytes("0f0200")).code, "MALFORMED");
  assert.equal(P.parseHandshakeError(bytes("0f6300010000")).code, "MALFORMED"); // unknown code
  const cut = P.parseHandshakeError(bytes("0f01000100ff41c3")); // reason_len 255, two bytes present
  assert.deepEqual([cut.code, cut.reason], ["MALFORMED", "A\ufffd"]);
  assert.equal(P.encodeHandshakeError(1, "x".repeat(600)).length, 6 + 512);
});

test("envelopes: limits, unknown types and fields, malformed headers", () => {
  const ev = (header, body = new Uint8Array(0)) => P.decodeEvent(P.concat(P.encodeEnvelope(header), body));
  assert.deepEqual(ev({ type: "broadcast", sender: "bob", text: "hi", extra: 1 }), { type: "broadcast", sender: "bob", text: "hi" });
  assert.deepEqual(ev({ type: "brand_new", re: 7, x: 1 }), { type: "brand_new", re: 7, unknown: true });
  assert.throws(() => ev({ type: "broadcast", sender: "bob" }), P.EnvelopeError);
  assert.throws(() => ev({ type: "ok", seq: "1" }), P.EnvelopeError);
  const chunk = ev({ type: "file_chunk", id: "ab", offset: 0 }, Uint8Array.of(1, 2, 3));
  assert.deepEqual([...chunk.body], [1, 2, 3]);
  assert.throws(() => P.decodeEnvelope(Uint8Array.of(0, 0, 0)), P.EnvelopeError);
  assert.throws(() => P.decodeEnvelope(P.fromHex("0000000a7b7d")), P.EnvelopeError);
  assert.throws(() => P.decodeEnvelope(P.concat(P.fromHex("00000002"), new TextEncoder().encode("[]"))), P.EnvelopeError);
  const lone = new TextEncoder().encode('{"type":"x","a":"\\ud800"}');
  assert.throws(() => P.decodeEnvelope(P.concat(P.fromHex("00000019"), lone)), P.EnvelopeError);
  assert.throws(() => P.encodeEnvelope({ type: "broadcast", text: "x".repeat(P.MAX_HEADER_BYTES) }), P.EnvelopeError);
  const raw = (json) => {
    const header = new TextEncoder().encode(json);
    return P.concat(P.fromHex(header.length.toString(16).padStart(8, "0")), header);
  };
  assert.throws(() => P.decodeEnvelope(raw('{"type":"ok","type":"ok"}')), /duplicate key/);
  assert.throws(() => P.decodeEnvelope(raw('{"type":"x","a":{"b":1,"b":2}}')), /duplicate key/);
  assert.throws(() => P.decodeEnvelope(raw('{"type":"ok","seq":1.0}')), /not an integer/);
  assert.throws(() => P.decodeEnvelope(raw('{"type":"ok","seq":1e3}')), /not an integer/);
  const fine = P.decodeEnvelope(raw('{ "type" : "x", "a" : [ {"b":-1}, {"b":2} ], "s":"\\"{,}\\\\", "t":"b" }'));
  assert.deepEqual(fine.header, { type: "x", a: [{ b: -1 }, { b: 2 }], s: '"{,}\\', t: "b" });
  assert.equal(P.MAX_RECORD_LEN, 1048593);
  assert.equal(P.MAX_FRAME_BYTES, 1048640);
});

test("close codes are described, and which ones to retry", () => {
  assert.equal(P.describeClose(1013, ""), "the server is full; try again later");
  assert.equal(P.describeClose(1008, "too many pings"), "too many pings (1008)");
  assert.equal(P.worthRetrying(1000), false);
  assert.equal(P.worthRetrying(1006), true);
  assert.equal(P.worthRetrying(1001), true);
});
