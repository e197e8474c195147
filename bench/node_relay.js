// Plaintext relay on Node's `ws` 8: the broadcast relay a Node user would write (the
// broadcast example of the `ws` README), a target of the broadcast benchmark beside the
// Python baseline (bench/baseline.py). No encryption, no envelopes, no compression.
//
// Usage: node bench/node_relay.js [--host 127.0.0.1] [--port 0] [--max-payload BYTES]
// `ws` is found through NODE_PATH: the benchmark installs it into its results directory
// (bench/noderelay.py), never into the repository.
"use strict";

const { WebSocket, WebSocketServer } = require("ws");

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const host = option("--host", "127.0.0.1");
const port = Number(option("--port", "0"));
const maxPayload = Number(option("--max-payload", String(1024 * 1024)));

const wss = new WebSocketServer({ host, port, maxPayload, perMessageDeflate: false });

wss.on("connection", (ws) => {
  ws.on("error", () => {});
  ws.on("message", (data, isBinary) => {
    // Every other open client gets the message.
    for (const client of wss.clients) {
      if (client !== ws && client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
});

wss.on("listening", () => {
  const bound = wss.address().port;
  // bench/common.py reads the port from this line.
  console.log(`Node ws ${require("ws/package.json").version} relay listening on ws://${host}:${bound}`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    for (const client of wss.clients) client.terminate();
    wss.close(() => process.exit(0));
  });
}
