// A line-mode client built from the page's own modules (protocol, commands, render), for
// tests/test_js_protocol.py: `node --experimental-websocket interop_client.mjs URL PEM NAME`.
// Each line read on stdin is typed into the "Message field"; every line the page would
// show is written to stdout as one JSON string per line. Not a test file by itself.

import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { connect, importServerKey, pemToSpki, fingerprintText, RESUMING, ResumeState } from "../../chat/web/protocol.js";
import { parse } from "../../chat/web/commands.js";
import { OWN, helpLines, renderEvent } from "../../chat/web/render.js";

const [url, pemPath, name] = process.argv.slice(2);
const say = (line) => process.stdout.write(JSON.stringify(line) + "\n");

if (typeof globalThis.WebSocket !== "function") {
  say("NO_WEBSOCKET");
  process.exit(3);
}

const spki = pemToSpki(readFileSync(pemPath, "utf8"));
const key = await importServerKey(spki);
const connection = await connect({ url, serverKey: key });
say(OWN.connected(url, await fingerprintText(spki)));
const resume = new ResumeState();
connection.onEvent = (event) => {
  if (event.type === "welcome") resume.welcome(event);
  for (const shown of resume.received(event)) for (const line of renderEvent(shown)) say(line);
};
connection.onClose = ({ code, reason }) => {
  say(`CLOSED ${code}`);
  process.exit(0);
};
const { reply } = connection.request({ type: "login", name, features: RESUMING });
const welcome = await reply;
if (welcome.type !== "welcome") {
  say("LOGIN FAILED");
  process.exit(2);
}
say("READY");

for await (const line of createInterface({ input: process.stdin })) {
  const parsed = parse(line);
  if (parsed === null) continue;
  if (parsed.kind === "show") parsed.lines.forEach(say);
  else if (parsed.kind === "send") {
    const fields = resume.numbered(parsed.type, parsed.fields);
    const { rid } = connection.request({ type: parsed.type, ...fields });
    resume.sent(rid, parsed.type, fields);
  } else if (parsed.kind === "action" && parsed.action === "help") helpLines().forEach(say);
  else if (parsed.kind === "action" && parsed.action === "quit") connection.request({ type: "quit" });
}
