// chat/web/commands.js parses every line of tests/js/parse_cases.json exactly as the
// terminal client's parser does (the file is written from chat/client/commands.py, and
// tests/test_js_protocol.py checks it still is); the help table matches too.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { parse, COMMAND_WORDS } from "../../chat/web/commands.js";

const cases = JSON.parse(readFileSync(new URL("./parse_cases.json", import.meta.url), "utf8"));

test("every case parses as in the terminal client", () => {
  assert.ok(cases.length > 50);
  for (const { line, expect } of cases) assert.deepEqual(parse(line), expect, JSON.stringify(line));
});

test("the command words for completion", () => {
  assert.ok(COMMAND_WORDS.includes("/msg"));
  assert.ok(COMMAND_WORDS.includes("@group"));
  assert.equal(new Set(COMMAND_WORDS).size, COMMAND_WORDS.length);
});
