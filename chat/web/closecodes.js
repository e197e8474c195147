// WebSocket close codes the server uses (PROTOCOL.md section 6.4) and what the page does.

export const CLOSE_MEANINGS = {
  1000: "the session ended",
  1001: "the server is going away",
  1003: "the server refused a text message",
  1006: "the connection was lost",
  1008: "the server ended the session (policy)",
  1009: "a message was too large",
  1011: "the server hit an internal error",
  1013: "the server is full; try again later",
};

/** A short line for a close: the server's reason when it gave one, else the code's meaning. */
export function describeClose(code, reason) {
  const meaning = CLOSE_MEANINGS[code] || `closed with code ${code}`;
  return reason ? `${reason} (${code})` : meaning;
}

/** Whether a reconnect may help: not after our own quit (1000) or a policy refusal of
 * this client's behaviour; yes after a lost connection, shutdown, key limit or a full server. */
export function worthRetrying(code) {
  return code !== 1000 && code !== 1003 && code !== 1009;
}
