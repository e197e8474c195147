// chat/web/render.js words every event as chat/client/render.py does and makes hostile
// text harmless as chat/safe_text.py does (tests/js/render_cases.json is written from the
// Python code, and tests/test_js_protocol.py checks it still is).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { renderEvent, printable, when, helpLines, FILES, humanBytes } from "../../chat/web/render.js";
import { checkEvent } from "../../chat/web/envelope.js";

const cases = JSON.parse(readFileSync(new URL("./render_cases.json", import.meta.url), "utf8"));

test("every event is worded as in the terminal client", () => {
  assert.ok(cases.events.length > 60);
  for (const { event, lines } of cases.events) {
    assert.deepEqual(renderEvent(checkEvent(event, new Uint8Array(0))), lines, JSON.stringify(event));
  }
});

test("hostile text is shown with the same stand-ins", () => {
  for (const [text, shown] of cases.printable) assert.equal(printable(text), shown, JSON.stringify(text));
});

test("times are local YYYY-MM-DD HH:MM", () => {
  process.env.TZ = "UTC";
  assert.equal(when(0), "1970-01-01 00:00");
  assert.deepEqual(renderEvent({ type: "private", sender: "bob", text: "late", sent_at: 86400 * 365 + 3600 }), [
    "Private message from bob (sent 1971-01-01 01:00): late",
  ]);
  assert.deepEqual(
    renderEvent({ type: "history", target: "g1", messages: [{ sender: "a", text: "t", sent_at: 60 }], more: 1500 }),
    ["(1,500 earlier message(s) did not fit in one reply; ask for fewer.)", "[1970-01-01 00:01] a: t"],
  );
});

test("help and file lines", () => {
  const help = helpLines();
  assert.equal(help[0], "<message>                            send a message to everyone online");
  assert.equal(help.at(-1), "/quit                                leave the chat (also @quit)");
  assert.equal(FILES.received("a.txt", "bob", undefined), "You received file 'a.txt' from bob.");
  assert.equal(FILES.received("a.txt", "bob", "g1"), "[Receive a.txt from Group g1 bob]");
  assert.equal(FILES.result("a.txt", "bob", false, ["bob"], []), "File a.txt sent to bob successfully.");
  assert.equal(FILES.result("a.txt", "g", true, ["x"], []), "File a.txt sent to group g successfully.");
  assert.equal(
    FILES.result("a.txt", "g", true, [], [{ name: "x", detail: "declined: no." }]),
    "File a.txt was not delivered to: x (declined: no).",
  );
  assert.equal(FILES.result("a.txt", "bob", false, [], []), "File a.txt could not be sent to bob: no reason given.");
  assert.equal(humanBytes(1536), "1.5 KiB");
  assert.equal(humanBytes(100), "100 B");
});
