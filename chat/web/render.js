// Every line and label the page shows, in one place, with the terminal client's words
// (chat/client/render.py, file_lines.py, own_lines.py, commands.py; docs/messages.md).
// renderEvent(event) is pure and total: an unknown type or a missing field never throws.

const KEPT_FORMAT = new Set(["\u200c", "\u200d"]);
const UNSAFE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]/u;

/** Text from another party with controls, bidi and invisible characters shown as
 * stand-ins (as chat/safe_text.py does), so it cannot reorder or hide what is shown. */
export function printable(text) {
  const s = String(text ?? "");
  if (!UNSAFE.test(s)) return s;
  let out = "";
  for (const ch of s) {
    if (KEPT_FORMAT.has(ch) || !UNSAFE.test(ch)) {
      out += ch;
      continue;
    }
    const code = ch.codePointAt(0);
    if (code < 0x20) out += String.fromCodePoint(0x2400 + code);
    else if (code === 0x7f) out += "\u2421";
    else out += `<U+${code.toString(16).toUpperCase().padStart(4, "0")}>`;
  }
  return out;
}

const pad = (n) => String(n).padStart(2, "0");

/** A server timestamp (UTC seconds) as local date and time, `YYYY-MM-DD HH:MM`. */
export function when(timestamp) {
  const d = new Date(timestamp * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** Python's `{:,}`. */
const num = (n) => Number(n).toLocaleString("en-US");
const s = (v) => (v === undefined || v === null ? "" : String(v));
const quoted = (names) => names.map((n) => `'${n}'`).join(", ");

export const REGISTERED_MARK = "\u2713";
export const GROUP_NAME_RULE = "use 1-32 letters, digits, '_', '-' or '.'";

export function marked(names, registered) {
  const accounts = new Set(registered || []);
  return names.map((n) => (accounts.has(n) ? n + REGISTERED_MARK : n));
}

const more = (e) => (e.more ? ` and ${num(e.more)} more` : "");

function groupMembers(e) {
  const groups = e.groups || [];
  if (!groups.length) return ["You are not in any group."];
  const lists = groups.map((g) => marked(g.members || [], g.registered).join(" "));
  const lines = groups.length === 1 ? lists : groups.map((g, i) => `${s(g.group)}: ${lists[i]}`);
  if (e.more) lines[lines.length - 1] += more(e);
  return lines;
}

function privateLine(e) {
  const late = e.sent_at !== undefined ? ` (sent ${when(e.sent_at)})` : "";
  return [`Private message from ${s(e.sender)}${late}: ${s(e.text)}`];
}

function history(e) {
  const messages = e.messages || [];
  if (!messages.length) {
    const target = s(e.target ?? e.group);
    const where = target === "*" ? "to everyone" : target.startsWith("@") ? `with ${target.slice(1)}` : `in group ${target}`;
    return [`No messages ${where} yet.`];
  }
  const lines = messages.map((m) => `[${when(m.sent_at)}] ${s(m.sender)}: ${s(m.text)}`);
  if (e.more) lines.unshift(`(${num(e.more)} earlier message(s) did not fit in one reply; ask for fewer.)`);
  return lines;
}

function searchResults(e) {
  const results = e.results || [];
  if (!results.length) return [`No messages found for: ${s(e.words)}`];
  return results.map((r) => `[${when(r.sent_at)}] ${s(r.where)} ${s(r.sender)}: ${s(r.text)}`);
}

export const NOTICES = {
  too_fast: "[You are sending too fast; slow down.]",
  shutdown: "Server is shutting down.",
  cluster_lost:
    "[The server lost contact with the other servers of the service; messages to and from users on them are delayed, not lost.]",
  cluster_back: "[The server is in contact with the other servers again; delayed messages follow.]",
};

function notice(e) {
  if (NOTICES[e.code]) return [NOTICES[e.code]];
  return [e.detail ? `[Notice: ${s(e.code)}: ${s(e.detail)}]` : `[Notice: ${s(e.code)}]`];
}

const fill = (template) => (e) => template.replace(/\{(\w+)\}/g, (_, k) => s(e[k]));

function memberError(e, status) {
  return e.user ? `User '${e.user}' is ${status} group ${s(e.group)}.` : `You are ${status} group ${s(e.group)}.`;
}

export const ERRORS = {
  not_logged_in: "You must log in first.",
  already_logged_in: "You are already logged in.",
  username_taken: "[Username '{name}' is already in use. Please enter another name.]",
  username_invalid: (e) => {
    const detail = s(e.detail).replace(/\.+$/, "");
    return `[Invalid username '${s(e.name)}'${detail ? `: ${detail}` : ""}.]`;
  },
  registration_required: "[This server admits registered users only; ask its operator for an account.]",
  invite_only: "[You cannot join {group}: it is invite-only; ask its owner to add you.]",
  too_many_invitations: "User '{user}' has too many groups they were added to (limit {limit}).",
  username_reserved: "[The name '{name}' is reserved. Please enter another name.]",
  user_not_online: (e) => {
    const users = e.users || [];
    if (users.length === 1) return `User '${users[0]}' is not online.`;
    if (users.length) return `Users ${quoted(users)} are not online.`;
    return "User is not online.";
  },
  no_such_group: "Group '{group}' does not exist.",
  group_exists: "Group '{group}' already exists.",
  invalid_group_name: `Invalid group name '{group}': ${GROUP_NAME_RULE}.`,
  not_member: (e) => memberError(e, "not a member of"),
  already_member: (e) => memberError(e, "already a member of"),
  not_owner: "Only the owner of {group} can do that.",
  kicked: "[You cannot join {group}: you were removed by its owner.]",
  cannot_kick_self: "You cannot remove yourself from {group}; use /leave {group}.",
  too_many_groups: (e) =>
    e.user ? fill("User '{user}' is in too many groups (limit {limit}).")(e) : fill("The server has too many groups (limit {limit}).")(e),
  too_many_owned_groups: "You own too many groups (limit {limit}); /delete one first.",
  creating_groups_too_fast: "[You are creating groups too fast (at most {limit} an hour); try again later.]",
  password_required: "",
  wrong_password: "[Wrong password.]",
  too_many_attempts: "[Too many wrong passwords for '{name}'; try again later.]",
  already_registered: "[Name '{name}' is already registered.]",
  not_registered: "[Name '{name}' is not registered; use /register first.]",
  weak_password: "Password too short: use at least {limit} characters.",
  bad_request: (e) => (e.detail ? `Bad request: ${e.detail}` : "Bad request."),
  internal_error: "[The server could not handle that request.]",
  network_too_fast: "[Your network is sending too fast; that was not sent. Slow down.]",
  mailbox_full: "[{user}'s mailbox is full; the message was not stored.]",
  mailbox_share_full: "[You have left {user} as many messages as one sender may; the message was not stored.]",
  file_too_large: "File is too large: the server accepts at most {limit} bytes.",
  no_recipients: "No other member of group {group} is online.",
  too_many_transfers: "Too many file transfers at once (limit {limit}); wait for one to finish.",
  bad_transfer: (e) => (e.detail ? `File transfer error: ${e.detail}.` : "File transfer error."),
  server_busy: "[The server is busy; try again in a moment.]",
  too_many_registrations: "[Too many new accounts from your network (at most {limit} an hour); try again later.]",
};

export function errorLine(e) {
  const line = Object.hasOwn(ERRORS, e.code) ? ERRORS[e.code] : undefined;
  if (line === undefined) return e.detail ? `Error: ${s(e.code)}: ${s(e.detail)}` : `Error: ${s(e.code)}`;
  return typeof line === "string" ? fill(line)(e) : line(e);
}

const one = (template) => (e) => [fill(template)(e)];
const presence = (template) => (e) => (e.names || []).map((name) => template.replace("{name}", name));

const RENDERERS = {
  ok: () => [],
  offline_page: () => [],
  welcome: one("[Welcome {name}]"),
  user_joined: presence("[{name} joined]"),
  user_exited: presence("[{name} exited]"),
  user_list: (e) => [marked(e.users || [], e.registered).join(", ") + more(e)],
  broadcast: one("[Broadcast from {sender}]: {text}"),
  private: privateLine,
  private_sent: one("Private message to {to}: {text}"),
  private_queued: one("[{to} is offline; the message will be delivered at their next login.]"),
  group_created: one("Group {group} created and joined."),
  group_added: one("[You have been added to the {group} group]"),
  group_joined: one("Joined group {group}"),
  member_joined: one("[{name} joined group {group}]"),
  group_list: (e) => [((e.groups || []).join(", ") || "No groups.") + more(e)],
  group_invite_only: (e) => [
    e.on ? `[Group ${s(e.group)} is now invite-only: only you add members.]` : `[Group ${s(e.group)} is open: anyone may join.]`,
  ],
  group_members: groupMembers,
  group_message: one("[Receive group {group} message from {sender}]: {text}"),
  group_left: one("[You have successfully left the {group} group.]"),
  member_left: one("[{name} has left the {group} group.]"),
  group_delete_done: one("[Group '{group}' has been successfully deleted.]"),
  group_deleted: one("[Group '{group}' has been deleted.]"),
  missed: one("[You missed {count} broadcast messages: your connection was too slow for them.]"),
  group_removed: one("[You have been removed from the {group} group]"),
  member_added: one("[{name} has been added to the {group} group]"),
  member_removed: one("[{name} has been removed from the {group} group]"),
  notice,
  error: (e) => [errorLine(e)].filter(Boolean),
  registered: one("[Name '{name}' is now registered.]"),
  password_changed: () => ["[Password changed.]"],
  group_history: history,
  history,
  search_results: searchResults,
  unread: (e) =>
    (e.groups || []).map(
      (g) => `[${num(g.count)} new message(s) in group ${s(g.group)} since you were last here: /history ${s(g.group)}]`,
    ),
  replayed: (e) => (e.lost ? [`[${num(e.lost)} message(s) sent while you were away are no longer kept: see /history.]`] : []),
};

/** The lines to show for an event (already checked by envelope.js); [] for ok and unknown. */
export function renderEvent(event) {
  const renderer = Object.hasOwn(RENDERERS, event.type) ? RENDERERS[event.type] : undefined;
  if (!renderer) return [];
  try {
    return renderer(event).map(printable);
  } catch {
    return [];
  }
}

// --- files (chat/client/file_lines.py) ------------------------------------------------

const reason = (detail) => printable(s(detail).trim().replace(/\.+$/, "")) || "no reason given";

export function humanBytes(count) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let n = count;
  for (const unit of units) {
    if (Math.abs(n) < 1024 || unit === "TiB") return unit === "B" ? `${n.toFixed(0)} ${unit}` : `${n.toFixed(1)} ${unit}`;
    n /= 1024;
  }
  return `${n}`;
}

export const FILES = {
  offerError(name, e) {
    if (e.code === "file_too_large") return `File ${name} is too large: the server accepts at most ${s(e.limit)} bytes.`;
    if (e.code === "too_many_transfers") {
      return `Cannot send ${name}: too many file transfers at once (limit ${s(e.limit)}); try again when one finishes.`;
    }
    if (e.code === "bad_transfer") return `Cannot send ${name}: ${reason(e.detail)}.`;
    return printable(errorLine(e));
  },
  result(name, target, group, delivered, failed) {
    if (group) {
      if (!failed.length) return `File ${name} sent to group ${target} successfully.`;
      const who = failed.map((f) => `${s(f.name) || "?"} (${reason(f.detail)})`).join(", ");
      return `File ${name} was not delivered to: ${who}.`;
    }
    if (delivered.length) return `File ${name} sent to ${delivered[0]} successfully.`;
    const user = failed.length ? s(failed[0].name) || target : target;
    return `File ${name} could not be sent to ${user}: ${reason(failed.length ? failed[0].detail : "")}.`;
  },
  received: (name, sender, group) =>
    group ? `[Receive ${name} from Group ${group} ${sender}]` : `You received file '${name}' from ${sender}.`,
  refused: (name, sender, why) => `Refused file '${printable(name)}' from ${sender}: ${reason(why)}.`,
  aborted: (name, sender, detail) => `Transfer of '${printable(name)}' from ${sender} was aborted: ${reason(detail)}.`,
  damaged: (name, sender, problem) => `File '${printable(name)}' from ${sender} was not saved: ${reason(problem)}.`,
  cannotSend: (name, why) => `Cannot send ${printable(name)}: ${printable(why).replace(/\.+$/, "")}.`,
  notSent: (name, why) => `File ${printable(name)} was not sent: ${why}.`,
  sending: (name, target, group) => `Sending ${printable(name)} to ${group ? "group " : ""}${target}`,
  receiving: (name, sender) => `Receiving ${printable(name)} from ${sender}`,
  toEveryone: "Choose a private chat or a group to send a file to: files are not sent to everyone.",
  cancelledBySender: "cancelled by the sender",
  cancelledByRecipient: "cancelled by the recipient",
};

// --- the page's own lines (chat/client/own_lines.py, and the browser's) -------------

export const OWN = {
  connected: (url, fingerprint) => `Connected to ${url} (server key ${fingerprint}). Type /help for the commands.`,
  connectionLost: (why, again = false) => `Connection lost${again ? " again" : ""}: ${why}.`,
  reconnectingIn: (what, seconds, first) => `${what} ${first ? "Reconnecting" : "Retrying"} in ${seconds.toFixed(0)} s...`,
  reconnected: (name) => `Reconnected as ${name}.`,
  oldSessionRemains: (name, retry) => `The server still has the old session of ${name}; trying again every ${retry} s...`,
  cannotLogBackIn: (name, why) => `Cannot log back in as ${name}: ${why}.`,
  held: "(not connected: will send when reconnected)",
  /** The page's echo of the user's own message (the server answers the sender only `ok`). */
  ownBroadcast: (me, text) => printable(`[Broadcast from ${me}]: ${text}`),
  ownGroupMessage: (me, group, text) => printable(`[Receive group ${group} message from ${me}]: ${text}`),
  notConnected: "Not connected: try again once reconnected.",
  passwordsDiffer: "Passwords do not match; nothing was changed.",
  cannotSend: (problem) => `Cannot send that: ${problem}.`,
  internalError: (error) => `Internal error: ${error && error.name ? error.name : "Error"}: ${error && error.message ? error.message : error}`,
  quit: "You left the chat. Reload the page to log in again.",
  closed: (why) => `Disconnected: ${why}.`,
  handshakeFailed: (code, meaning, why) => `Cannot connect: ${code} (${meaning})${why ? `: ${why}` : ""}.`,
  versionMismatch: (version) => `The server speaks protocol version ${version}; this page speaks version 1.`,
  wrongKeyProof: "The server could not prove it holds the trusted key: not connected.",
};

// --- the command table, usage lines and /help (chat/client/commands.py) ---------------

export const MESSAGE_TOO_LONG = "Message too long (limit 4096 characters).";
export const GROUP_USAGE = "Usage: @group set|send|leave|delete <group> ...";

export const COMMANDS = [
  ["<message>", [], "send a message to everyone online"],
  ["/msg <username> <message>", ["@<username> <message>"], "send a private message"],
  ["/list", ["@names"], "list who is online"],
  ["/create <group> [<user1,user2,...>]", ["@group set <group> <user1,user2,...>"], "create and join a group, adding users"],
  ["/join <group>", [], "join a group"],
  ["/showgroups", [], "list the groups"],
  ["/showgroupmembers [<group>]", [], "members of a group (default: yours)"],
  ["/group <group> <message>", ["@group send <group> <message>"], "send a message to a group"],
  ["/leave <group>", ["@group leave <group>"], "leave a group"],
  ["/delete <group>", ["@group delete <group>"], "delete a group you own"],
  ["/add <group> <username>", ["@add <group> <username>"], "add a user to a group you own"],
  ["/kick <group> <username>", ["@kick <group> <username>"], "remove a user from a group you own"],
  ["/inviteonly <group> on|off", [], "on: only you add members to a group you own; off: open"],
  ["/history [<target>] [<n>]", [], "messages of * (everyone, the default), @user, or a group"],
  ["/search <words>", [], "find messages you may read that have all the words (newest first)"],
  ["/register", [], "protect your name with a password"],
  ["/passwd", [], "change your password"],
  ["/file <username> <path>", [], "send a file to a user"],
  ["/groupfile <group> <path>", [], "send a file to a group"],
  ["/accept [<n>]", [], "accept file offer n (--ask-files; default: the oldest)"],
  ["/decline [<n>]", [], "decline file offer n (default: the oldest)"],
  ["/open [<n>]", [], "open received file n (--open; default: the latest)"],
  ["/help", ["@help"], "show this list"],
  ["/quit", ["@quit"], "leave the chat"],
];

export function helpLines() {
  const width = Math.max(...COMMANDS.map(([syntax]) => syntax.length));
  return COMMANDS.map(([syntax, aliases, description]) => {
    const also = aliases.length ? ` (also ${aliases.join(", ")})` : "";
    return `${syntax.padEnd(width)}  ${description}${also}`;
  });
}

export const USAGE = {
  msg: "Usage: /msg <username> <message>",
  list: "Usage: /list",
  create: "Usage: /create <group> [<user1,user2,...>]",
  join: "Usage: /join <group>",
  showgroups: "Usage: /showgroups",
  showgroupmembers: "Usage: /showgroupmembers [<group>]",
  group: "Usage: /group <group> <message>",
  leave: "Usage: /leave <group>",
  delete: "Usage: /delete <group>",
  add: "Usage: /add <group> <username>",
  kick: "Usage: /kick <group> <username>",
  history: "Usage: /history [* | @<username> | <group>] [<count>]",
  search: "Usage: /search <words>",
  inviteonly: "Usage: /inviteonly <group> on|off",
  register: "Usage: /register",
  passwd: "Usage: /passwd",
  file: "Usage: /file <username> <path>",
  groupfile: "Usage: /groupfile <group> <path>",
  accept: "Usage: /accept [<n>]",
  decline: "Usage: /decline [<n>]",
  open: "Usage: /open [<n>]",
  help: "Usage: /help",
  quit: "Usage: /quit",
  "@names": "Usage: @names",
  "@add": "Usage: @add <group> <username>",
  "@kick": "Usage: @kick <group> <username>",
  "@help": "Usage: @help",
  "@quit": "Usage: @quit",
  "@private": "Usage: @<username> <message>",
  "@set": "Usage: @group set <group> <user1,user2,...>",
  "@send": "Usage: @group send <group> <message>",
  "@leave": "Usage: @group leave <group>",
  "@delete": "Usage: @group delete <group>",
};

export const PARSE = {
  unknown: (word) => `Unknown command '${word}'. Type /help for the list of commands.`,
  userNotOnline: (user) => `User '${user}' is not online.`,
  noSuchGroup: (group) => `Group '${group}' does not exist.`,
  invalidGroup: (group) => `Invalid group name '${group}': ${GROUP_NAME_RULE}.`,
  tooManyUsers: (limit) => `Too many users (limit ${limit}).`,
  badCount: (max) => `The count must be a number from 1 to ${max}.`,
  searchTooLong: (max) => `Search for fewer words (at most ${max} characters).`,
};

// --- labels and explanations of the page ---------------------------------------------

export const UI = {
  title: "Chat",
  titleUnread: (n) => `(${n}) Chat`,
  everyone: "Everyone",
  unread: (n) => `${n} unread`,
  trustTitle: "Trust this server?",
  trustText: (origin) =>
    `This is the first connection from this browser to ${origin}. Compare the server key's fingerprint below with the one its operator gave you (chat-server prints it at start as "Server key fingerprint"):`,
  keyChanged: (origin, pinned, now) =>
    `The server key has changed for ${origin}: this browser trusted ${pinned}, the server now shows ${now}. Not connected. If the operator really changed the key, they can confirm the new fingerprint; then use "Forget the old key".`,
  keyChangedShort: "server key has changed",
  trustCancelled: "Not connected: the server key was not trusted.",
  insecure:
    "This page needs a secure context (https://, or http://localhost) for its encryption (WebCrypto). Ask the operator to start the server with --tls (chat-server --tls) and open the https:// address it prints.",
  noCrypto:
    "This browser lacks the WebCrypto functions the chat needs (RSA-OAEP, X25519, HKDF, AES-GCM). Use a current Chromium, Firefox or Safari, over https:// (chat-server --tls).",
  keyFetchFailed: (why) => `Cannot fetch the server key: ${why}.`,
  connecting: "Connecting...",
  loggingIn: "Logging in...",
  passwordPrompt: "This name is registered: enter its password.",
  newPassword: "New password",
  repeatPassword: "Repeat password",
  oldPassword: "Current password",
  notificationsOn: "Notifications on",
  notificationsOff: "Notifications off",
  notificationsDenied: "Notifications are blocked for this page in the browser's settings.",
  notificationTitle: (who) => `Message from ${who}`,
  daySeparator: (date) =>
    date.toLocaleDateString(undefined, { weekday: "long", year: "numeric", month: "long", day: "numeric" }),
  cancel: "Cancel",
  promptGroupName: "Group name",
  promptMembers: "Members to add (names separated by commas; optional)",
  promptUser: "User name",
  confirmDelete: (group) => `Delete group ${group} for everyone?`,
  dropHere: "Drop a file to send it to the selected conversation",
  progress: (done, total) => `${humanBytes(done)} of ${humanBytes(total)}`,
};
