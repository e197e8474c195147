// The chat wire protocol (PROTOCOL.md) for browsers and Node 20, with WebCrypto only:
// handshake, records, envelopes, limits, close codes and resume, one module each.

export * from "./limits.js";
export * from "./handshake.js";
export * from "./records.js";
export * from "./envelope.js";
export * from "./closecodes.js";
export * from "./resume.js";
export * from "./connection.js";
export { toHex as hex, fromHex, concat, base64NoPad } from "./bytes.js";
