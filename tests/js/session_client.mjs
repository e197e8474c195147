// The page's session (chat/web/session.js: login, reconnect, resume) without a DOM, for
// tests/test_js_protocol.py: `node --experimental-websocket session_client.mjs URL PEM NAME`.
// stdin lines go through commands.js as if typed; shown lines go to stdout as JSON strings.

import { readFileSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { createInterface } from "node:readline";
import { importServerKey, pemToSpki } from "../../chat/web/handshake.js";
import { ChatSession } from "../../chat/web/session.js";
import { Transfers } from "../../chat/web/files.js";
import { parse } from "../../chat/web/commands.js";
import { renderEvent } from "../../chat/web/render.js";

const [url, pemPath, name, downloads = "."] = process.argv.slice(2);
const say = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const serverKey = await importServerKey(pemToSpki(readFileSync(pemPath, "utf8")));
const files = new Transfers({
  line: say,
  progress: (label) => {
    say(`PROGRESS ${label}`);
    return { update() {}, done() {} };
  },
  // The page offers the checked file as a download; here it is written to `downloads`.
  download: async (blob, fileName) => {
    writeFileSync(join(downloads, fileName), new Uint8Array(await blob.arrayBuffer()));
    say(`SAVED ${fileName}`);
  },
});
const ui = {
  event: (e) => renderEvent(e).forEach(say),
  line: say,
  online() {},
  joined() {},
  exited() {},
  groups() {},
  state() {},
  loggedIn() {},
  sent() {},
  quit: () => {
    say("QUIT");
    process.exit(0);
  },
  files,
};
const session = new ChatSession({ url, serverKey, ui });
files.session = session;
const result = await session.login(name);
if (!result.welcome) {
  say("LOGIN FAILED");
  process.exit(2);
}
for await (const line of createInterface({ input: process.stdin })) {
  if (line.startsWith("!sendfile ")) {
    // What the Send file picker hands the page: a File, sent to a user or #group.
    const [, target, path] = line.split(" ");
    const file = new File([readFileSync(path)], basename(path));
    files.send(file, target.replace(/^#/, ""), target.startsWith("#"));
    continue;
  }
  if (line === "!leave") {
    // What the page does on pagehide: the quit sealed in advance, sent at once.
    say(session.connection.quitNow() ? "LEFT" : "NOT LEFT");
    setTimeout(() => process.exit(0), 200);
    continue;
  }
  const parsed = parse(line);
  if (parsed?.kind === "send") session.send(parsed.type, parsed.fields);
  else if (parsed?.kind === "action" && parsed.action === "quit") session.quit();
  else if (parsed?.kind === "show") parsed.lines.forEach(say);
}
