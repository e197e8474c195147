// One line typed in the Message field to what the page should do, exactly as the
// terminal client parses it (chat/client/commands.py; same usage lines, same checks).
//
// parse(line) is pure and returns one of:
//   {kind: "send", type, fields}        a request
//   {kind: "file", target, path, group} /file, /groupfile (the page asks for the file)
//   {kind: "answer", accept, number}    /accept, /decline
//   {kind: "open", number}              /open
//   {kind: "show", lines}               local lines (usage, errors)
//   {kind: "action", action}            help, quit, register, passwd
//   null                                nothing to do

import { GROUP_USAGE, MESSAGE_TOO_LONG, PARSE, USAGE } from "./render.js";
import { MAX_HISTORY, MAX_LIST_ITEMS, MAX_NAME_CHARS, MAX_SEARCH_CHARS, MAX_TEXT_CHARS, chars } from "./limits.js";

const send = (type, fields = {}) => ({ kind: "send", type, fields });
const show = (line) => ({ kind: "show", lines: [line] });
const action = (name) => ({ kind: "action", action: name });

/** Split off the next whitespace-delimited word; the rest keeps its inner spacing. */
export function take(rest) {
  const match = /^(\S+)\s*/u.exec(rest);
  if (!match) return ["", ""];
  return [match[1], rest.slice(match[0].length)];
}

const words = (rest) => rest.split(/\s+/u).filter(Boolean);
const isDigits = (w) => /^[0-9]+$/.test(w);

const userError = (user) => (chars(user) > MAX_NAME_CHARS ? show(PARSE.userNotOnline(user)) : null);
const groupError = (group) => (chars(group) > MAX_NAME_CHARS ? show(PARSE.noSuchGroup(group)) : null);
const textError = (text) => (chars(text) > MAX_TEXT_CHARS ? show(MESSAGE_TOO_LONG) : null);

const noArgs = (what) => (rest, usage) => {
  if (rest.trim()) return show(usage);
  return typeof what === "function" ? what() : send(what);
};

function privateMessage(rest, usage) {
  const [user, text] = take(rest);
  if (!user || !text) return show(usage);
  return userError(user) || textError(text) || send("private", { to: user, text });
}

function groupText(rest, usage) {
  const [group, text] = take(rest);
  if (!group || !text) return show(usage);
  return groupError(group) || textError(text) || send("group_message", { group, text });
}

const oneGroup = (type) => (rest, usage) => {
  const w = words(rest);
  if (w.length !== 1) return show(usage);
  return groupError(w[0]) || send(type, { group: w[0] });
};

const groupUser = (type) => (rest, usage) => {
  const w = words(rest);
  if (w.length !== 2) return show(usage);
  const [group, user] = w;
  return groupError(group) || userError(user) || send(type, { group, user });
};

function create(rest, usage, membersRequired = false) {
  const [group, memberText] = take(rest);
  if (!group) return show(usage);
  const members = memberText.split(/[,\s]+/u).filter(Boolean);
  if (membersRequired && !members.length) return show(usage);
  if (chars(group) > MAX_NAME_CHARS) return show(PARSE.invalidGroup(group));
  for (const member of members) {
    const error = userError(member);
    if (error) return error;
  }
  if (members.length > MAX_LIST_ITEMS) return show(PARSE.tooManyUsers(MAX_LIST_ITEMS));
  return send("group_create", members.length ? { group, members } : { group });
}

function showMembers(rest, usage) {
  const w = words(rest);
  if (w.length > 1) return show(usage);
  if (!w.length) return send("group_members");
  return groupError(w[0]) || send("group_members", { group: w[0] });
}

function unquote(path) {
  let p = path.trim();
  if (p.length >= 2 && p[0] === p[p.length - 1] && (p[0] === '"' || p[0] === "'")) p = p.slice(1, -1);
  return p;
}

const file = (group) => (rest, usage) => {
  const [target, pathText] = take(rest);
  const path = unquote(pathText);
  if (!target || !path) return show(usage);
  return (group ? groupError(target) : userError(target)) || { kind: "file", target, path, group };
};

function history(rest, usage) {
  let w = words(rest);
  if (w.length > 2) return show(usage);
  if (w.length === 1 && isDigits(w[0])) w = ["*", w[0]];
  const target = w.length ? w[0] : "*";
  const fields = { target };
  if (w.length === 2) {
    if (!isDigits(w[1]) || !(Number(w[1]) >= 1 && Number(w[1]) <= MAX_HISTORY)) return show(PARSE.badCount(MAX_HISTORY));
    fields.limit = Number(w[1]);
  }
  let error;
  if (target.startsWith("@")) error = target !== "@" ? userError(target.slice(1)) : show(usage);
  else error = target !== "*" ? groupError(target) : null;
  return error || send("history", fields);
}

function search(rest, usage) {
  const w = rest.trim();
  if (!w) return show(usage);
  if (chars(w) > MAX_SEARCH_CHARS) return show(PARSE.searchTooLong(MAX_SEARCH_CHARS));
  return send("search", { words: w });
}

const optionalNumber = (make) => (rest, usage) => {
  const w = words(rest);
  if (!w.length) return make(null);
  if (w.length !== 1 || !isDigits(w[0]) || w[0].length > 9) return show(usage);
  return make(Number(w[0]));
};

function inviteOnly(rest, usage) {
  const w = words(rest);
  if (w.length !== 2 || !["on", "off"].includes(w[1].toLowerCase())) return show(usage);
  return groupError(w[0]) || send("group_invite_only", { group: w[0], on: w[1].toLowerCase() === "on" });
}

const AT_GROUP = {
  set: (args) => create(args, USAGE["@set"], true),
  send: (args) => groupText(args, USAGE["@send"]),
  leave: (args) => oneGroup("group_leave")(args, USAGE["@leave"]),
  delete: (args) => oneGroup("group_delete")(args, USAGE["@delete"]),
};

function atGroup(rest) {
  const [sub, args] = take(rest);
  const handler = Object.hasOwn(AT_GROUP, sub.toLowerCase()) ? AT_GROUP[sub.toLowerCase()] : null;
  return handler ? handler(args) : show(GROUP_USAGE);
}

const SLASH = {
  msg: privateMessage,
  list: noArgs("list"),
  create: (rest, usage) => create(rest, usage),
  join: oneGroup("group_join"),
  showgroups: noArgs("group_list"),
  showgroupmembers: showMembers,
  group: groupText,
  leave: oneGroup("group_leave"),
  delete: oneGroup("group_delete"),
  add: groupUser("group_add"),
  kick: groupUser("group_kick"),
  history,
  search,
  inviteonly: inviteOnly,
  register: noArgs(() => action("register")),
  passwd: noArgs(() => action("passwd")),
  file: file(false),
  groupfile: file(true),
  accept: optionalNumber((number) => ({ kind: "answer", accept: true, number })),
  decline: optionalNumber((number) => ({ kind: "answer", accept: false, number })),
  open: optionalNumber((number) => ({ kind: "open", number })),
  help: noArgs(() => action("help")),
  quit: noArgs(() => action("quit")),
};

const AT = {
  names: noArgs("list"),
  group: atGroup,
  add: groupUser("group_add"),
  kick: groupUser("group_kick"),
  help: noArgs(() => action("help")),
  quit: noArgs(() => action("quit")),
};

/** Every literal command word, for Tab completion. */
export const COMMAND_WORDS = [...Object.keys(SLASH).map((w) => `/${w}`), ...Object.keys(AT).map((w) => `@${w}`)];

/** Parse one input line (without its line terminator). */
export function parse(line) {
  if (!line.trim()) return null;
  if (line[0] === "/") {
    const [word, rest] = take(line);
    const name = word.slice(1).toLowerCase();
    if (!Object.hasOwn(SLASH, name)) return show(PARSE.unknown(word));
    return SLASH[name](rest, USAGE[name]);
  }
  if (line[0] === "@") {
    const [word, rest] = take(line);
    const name = word.slice(1).toLowerCase();
    if (!Object.hasOwn(AT, name)) return privateMessage(line.slice(1), USAGE["@private"]);
    return AT[name](rest, USAGE[`@${name}`] || GROUP_USAGE);
  }
  return textError(line) || send("broadcast", { text: line });
}
