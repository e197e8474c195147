// chat/web/resume.js keeps what a lost connection must not lose (PROTOCOL.md 6.8), as
// chat/client/resume_state.py does (the same cases as tests/test_resume_state.py).

import { test } from "node:test";
import assert from "node:assert/strict";
import { ResumeState, RESUMING } from "../../chat/web/resume.js";

const ev = (type, fields = {}) => ({ type, ...fields });
const shown = (state, ...events) => events.flatMap((e) => state.received(e)).map((e) => e.text ?? e.type);
const cursors = (state) => Object.fromEntries(state.cursors);

test("each message once, and the cursors follow", () => {
  const state = new ResumeState();
  state.welcome(ev("welcome", { name: "ann", head: 7, token: "t".repeat(43) }));
  const first = ev("broadcast", { sender: "bob", text: "one", mid: 8, seq: 3 });
  assert.deepEqual(shown(state, first, first, ev("private", { sender: "Bob", text: "hi", mid: 9, seq: 1 })), ["one", "hi"]);
  assert.deepEqual(cursors(state), { "*": 3, "@bob": 1 });
  assert.deepEqual(shown(state, ev("broadcast", { sender: "bob", text: "old", mid: 5, seq: 2 })), []);
  assert.deepEqual(shown(state, ev("user_joined", { names: ["cy"] })), ["user_joined"]);
});

test("live messages wait for the end of the replay", () => {
  const state = new ResumeState();
  state.welcome(ev("welcome", { name: "ann", head: 1, token: "t".repeat(43) }));
  state.cursors.set("*", 1);
  assert.deepEqual(state.loginFields(), { token: "t".repeat(43), since: 1, cursors: [{ target: "*", seq: 1 }] });
  assert.deepEqual(shown(state, ev("broadcast", { sender: "bob", text: "live 4", mid: 12, seq: 4 })), []);
  assert.deepEqual(shown(state, ev("broadcast", { sender: "bob", text: "missed 2", mid: 10, seq: 2, sent_at: 1 })), ["missed 2"]);
  assert.deepEqual(shown(state, ev("replayed", { count: 1, more: true })), ["replayed"]);
  assert.deepEqual(state.replayFields().cursors, [{ target: "*", seq: 2 }]);
  assert.deepEqual(shown(state, ev("broadcast", { sender: "bob", text: "missed 3", mid: 11, seq: 3, sent_at: 1 })), ["missed 3"]);
  const again = ev("broadcast", { sender: "bob", text: "live 4", mid: 12, seq: 4, sent_at: 1 });
  assert.deepEqual(shown(state, again, ev("replayed", { count: 2 })), ["live 4", "replayed"]);
  assert.equal(state.replaying, false);
});

test("messages never answered go again with their ids", () => {
  const state = new ResumeState();
  const first = state.numbered("broadcast", { text: "a" });
  const second = state.numbered("group_message", { group: "Team", text: "b" });
  assert.ok(first.cmid.length >= 16 && first.cmid !== second.cmid);
  assert.match(first.cmid, /^[A-Za-z0-9_-]{1,64}$/);
  assert.deepEqual(state.numbered("list", {}), {});
  state.sent(1, "broadcast", first);
  state.sent(2, "group_message", second);
  assert.deepEqual(shown(state, ev("ok", { re: 1, mid: 4, seq: 2 })), ["ok"]);
  assert.deepEqual(cursors(state), { "*": 2 });
  const pending = state.toResend();
  assert.deepEqual(pending.map((p) => [p.kind, p.fields]), [["group_message", second]]);
  assert.equal(state.numbered(pending[0].kind, pending[0].fields).cmid, second.cmid);
  assert.deepEqual(state.toResend(), []);
  assert.ok(RESUMING.includes("resume"));
});

test("no token, no resume fields", () => {
  assert.deepEqual(new ResumeState().loginFields(), {});
});
