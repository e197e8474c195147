// The DOM of the chat view: the Messages log (text only: textContent, never HTML), the
// conversation list with unread counts, Online and Groups lists, progress bars, the
// small dialogs, Tab completion, notifications. Words come from render.js.

import { renderEvent, UI } from "./render.js";
import { COMMAND_WORDS } from "./commands.js";

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

const fold = (s) => String(s).toLowerCase();
/** Events without a conversation that are shown under Everyone only (the others, such as
 * replies and errors, show in whichever conversation is selected). */
const EVERYONE_ONLY = new Set(["user_joined", "user_exited", "missed", "unread", "welcome"]);
const MESSAGE_TYPES = new Set(["broadcast", "private", "private_sent", "private_queued", "group_message"]);

/** The conversation an event belongs to: "*", "@user" or "#group" (null: none). */
function conversationOf(event) {
  switch (event.type) {
    case "broadcast":
      return "*";
    case "private":
      return "@" + event.sender;
    case "private_sent":
    case "private_queued":
      return "@" + event.to;
    case "group_message":
    case "group_created":
    case "group_joined":
    case "group_added":
    case "member_joined":
    case "member_left":
    case "member_added":
    case "member_removed":
      return "#" + event.group;
    default:
      return null;
  }
}

export class Page {
  constructor() {
    this.log = $("messages");
    this.me = null;
    this.selected = "*";
    this.conversations = new Map(); // key -> {name, unread, button}
    this.onlineNames = [];
    this.groupNames = [];
    this.lastDay = null;
    this.notifications = localStorage.getItem("chat.notifications") === "on";
    this.onSelect = () => {};
    this.onOpenPrivate = () => {};
    this._addConversation("*", UI.everyone);
    this._renderConversations();
    this._completion = null;
    this.unseen = 0;
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) {
        this.unseen = 0;
        document.title = UI.title;
      }
    });
  }

  // --- the log -------------------------------------------------------------------------

  /**
   * Append one line; `conversation` tags it for filtering ("*", "@user", "#group"; "" shows
   * it under Everyone only; null, the default, in every view), `at` (ms) gives its time.
   */
  line(text, { conversation = null, at = Date.now(), kind = "" } = {}) {
    const date = new Date(at);
    const day = date.toDateString();
    if (day !== this.lastDay) {
      this.lastDay = day;
      const separator = el("div", UI.daySeparator(date), "day");
      separator.dataset.conv = "";
      this.log.append(separator);
    }
    const row = el("div", undefined, `line ${kind}`.trim());
    const time = el("time", `${String(date.getHours()).padStart(2, "0")}:${String(date.getMinutes()).padStart(2, "0")}`);
    time.dateTime = date.toISOString();
    row.append(time, " ", el("span", text, "text"));
    row.dataset.conv = conversation === null ? "!" : conversation;
    row.hidden = !this._visible(row.dataset.conv);
    const stick = this.log.scrollTop + this.log.clientHeight >= this.log.scrollHeight - 40;
    this.log.append(row);
    while (this.log.childElementCount > 5000) this.log.firstElementChild.remove();
    if (stick) this.log.scrollTop = this.log.scrollHeight;
    return row;
  }

  /** A line of the user's own in a conversation (found case-insensitively). */
  own(key, text) {
    this.line(text, { conversation: this._addConversation(key), kind: "message own" });
  }

  lines(texts, options) {
    for (const text of texts) this.line(text, options);
  }

  _visible(conv) {
    return this.selected === "*" || conv === "!" || conv === this.selected;
  }

  /** Show an event from the server. */
  event(event) {
    const lines = renderEvent(event);
    let conversation = conversationOf(event);
    if (conversation && conversation !== "*") conversation = this._addConversation(conversation);
    if (conversation === null && EVERYONE_ONLY.has(event.type)) conversation = "";
    const at = event.sent_at !== undefined ? event.sent_at * 1000 : Date.now();
    this.lines(lines, { conversation, at, kind: event.type === "error" ? "error" : MESSAGE_TYPES.has(event.type) ? "message" : "" });
    this._membership(event);
    const incoming = ["broadcast", "private", "group_message"].includes(event.type);
    if (incoming && lines.length) {
      if (conversation && conversation !== this.selected) this._bump(conversation);
      this._notify(event, lines[0]);
      if (document.hidden) document.title = UI.titleUnread(++this.unseen);
    }
  }

  _membership(event) {
    const g = event.group;
    if (["group_created", "group_joined", "group_added"].includes(event.type)) this._addGroup(g);
    if (["group_left", "group_delete_done", "group_deleted", "group_removed"].includes(event.type)) this._removeGroup(g);
  }

  // --- conversations -------------------------------------------------------------------

  /** Add (or find) a conversation; returns its key as first written. */
  _addConversation(key, name = key.slice(1)) {
    for (const existing of this.conversations.keys()) if (fold(existing) === fold(key)) return existing;
    this.conversations.set(key, { name, unread: 0 });
    this._renderConversations();
    return key;
  }

  _bump(key) {
    const conv = this.conversations.get(key);
    if (!conv) return;
    conv.unread += 1;
    this._renderConversations();
  }

  _renderConversations() {
    const list = $("conversations");
    const items = [...this.conversations.entries()].sort(([a], [b]) => {
      const rank = (k) => (k === "*" ? 0 : k[0] === "@" ? 1 : 2);
      return rank(a) - rank(b) || a.localeCompare(b);
    });
    list.replaceChildren(
      ...items.map(([key, conv]) => {
        const item = el("li");
        const button = el("button", undefined, "conversation");
        button.type = "button";
        button.append(el("span", conv.name, "name"));
        if (conv.unread) button.append(" ", el("span", UI.unread(conv.unread), "badge"));
        if (key === this.selected) button.setAttribute("aria-current", "true");
        button.addEventListener("click", () => this.select(key));
        item.append(button);
        return item;
      }),
    );
  }

  /** Select a conversation: the log shows it (Everyone: everything). */
  select(key) {
    key = this._addConversation(key);
    this.selected = key;
    this.conversations.get(key).unread = 0;
    this._renderConversations();
    for (const row of this.log.children) row.hidden = row.classList.contains("day") ? false : !this._visible(row.dataset.conv);
    $("conversation-title").textContent = this.conversations.get(key).name;
    const isGroup = key.startsWith("#");
    for (const button of document.querySelectorAll("[data-for=group]")) button.hidden = !isGroup;
    this.log.scrollTop = this.log.scrollHeight;
    document.getElementById("side").classList.remove("open");
    document.getElementById("menu").setAttribute("aria-expanded", "false");
    this.onSelect(key);
  }

  // --- who is online, which groups ---------------------------------------------------

  online(users) {
    this.onlineNames = [...users];
    this._renderOnline();
  }

  joined(names) {
    for (const name of names) if (!this.onlineNames.includes(name)) this.onlineNames.push(name);
    this._renderOnline();
  }

  exited(names) {
    this.onlineNames = this.onlineNames.filter((n) => !names.includes(n));
    this._renderOnline();
  }

  _renderOnline() {
    $("online").replaceChildren(
      ...this.onlineNames.map((name) => {
        const item = el("li");
        if (name === this.me) {
          item.textContent = name;
          item.className = "me";
          return item;
        }
        const button = el("button", name, "person");
        button.type = "button";
        button.title = `Private chat with ${name}`;
        button.addEventListener("click", () => this.onOpenPrivate(name));
        item.append(button);
        return item;
      }),
    );
  }

  groups(names) {
    this.groupNames = [];
    for (const g of names) this._addGroup(g, false);
    this._renderGroups();
  }

  _addGroup(group, render = true) {
    if (!group || this.groupNames.some((g) => fold(g) === fold(group))) return;
    this.groupNames.push(group);
    this._addConversation("#" + group);
    if (render) this._renderGroups();
  }

  _removeGroup(group) {
    this.groupNames = this.groupNames.filter((g) => fold(g) !== fold(group));
    for (const key of [...this.conversations.keys()]) {
      if (fold(key) === fold("#" + group)) {
        this.conversations.delete(key);
        if (this.selected === key) this.select("*");
      }
    }
    this._renderConversations();
    this._renderGroups();
  }

  _renderGroups() {
    $("groups").replaceChildren(
      ...this.groupNames.map((group) => {
        const item = el("li");
        const button = el("button", group, "group");
        button.type = "button";
        button.addEventListener("click", () => this.select(this._addConversation("#" + group)));
        item.append(button);
        return item;
      }),
    );
  }

  // --- transfers -----------------------------------------------------------------------

  progress(label, total, onCancel) {
    const box = el("div", undefined, "transfer");
    const text = el("span", label);
    const bar = el("progress");
    bar.max = Math.max(total, 1);
    bar.value = 0;
    bar.setAttribute("aria-label", label);
    const amount = el("span", UI.progress(0, total), "small");
    const cancel = el("button", UI.cancel);
    cancel.type = "button";
    cancel.addEventListener("click", () => onCancel());
    box.append(text, bar, amount, cancel);
    $("transfers").append(box);
    return {
      update(done) {
        bar.value = done;
        amount.textContent = UI.progress(done, total);
      },
      done() {
        box.remove();
      },
    };
  }

  download(blob, name) {
    const url = URL.createObjectURL(blob);
    const link = el("a", name);
    link.href = url;
    link.download = name;
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  // --- notifications -------------------------------------------------------------------

  _notify(event, text) {
    if (!this.notifications || !document.hidden || typeof Notification !== "function") return;
    if (Notification.permission !== "granted") return;
    try {
      const note = new Notification(UI.notificationTitle(event.sender || ""), { body: text, tag: "chat" });
      note.onclick = () => window.focus();
    } catch {
      /* some browsers allow notifications from service workers only */
    }
  }

  async toggleNotifications() {
    if (this.notifications) {
      this.notifications = false;
    } else if (typeof Notification === "function") {
      const permission = Notification.permission === "default" ? await Notification.requestPermission() : Notification.permission;
      this.notifications = permission === "granted";
      if (!this.notifications) this.line(UI.notificationsDenied);
    }
    localStorage.setItem("chat.notifications", this.notifications ? "on" : "off");
    this.showNotificationState();
  }

  showNotificationState() {
    const button = $("notify");
    button.setAttribute("aria-pressed", String(this.notifications));
    button.title = this.notifications ? UI.notificationsOn : UI.notificationsOff;
  }

  // --- Tab completion ------------------------------------------------------------------

  /** Complete the word before the cursor in `input`; false when nothing completes. */
  complete(input, backwards = false) {
    const value = input.value;
    const cursor = input.selectionStart ?? value.length;
    if (this._completion && this._completion.value === value && this._completion.cursor === cursor) {
      const c = this._completion;
      c.index = (c.index + (backwards ? c.options.length - 1 : 1)) % c.options.length;
      this._applyCompletion(input, c);
      return true;
    }
    const start = value.slice(0, cursor).search(/\S*$/);
    const word = value.slice(start, cursor);
    if (!word) return false;
    const first = !value.slice(0, start).trim();
    const names = [...this.onlineNames.filter((n) => n !== this.me), ...this.groupNames];
    let options = [];
    if (first && (word[0] === "/" || word[0] === "@")) options.push(...COMMAND_WORDS);
    if (word[0] === "@") options.push(...this.onlineNames.filter((n) => n !== this.me).map((n) => "@" + n));
    else options.push(...names);
    options = [...new Set(options.filter((o) => fold(o).startsWith(fold(word)) && o !== word))].sort();
    if (!options.length) return false;
    const c = { start, before: value.slice(0, start), after: value.slice(cursor), options, index: 0 };
    this._applyCompletion(input, c);
    return true;
  }

  _applyCompletion(input, c) {
    const choice = c.options[c.index] + (c.options.length === 1 ? " " : "");
    input.value = c.before + choice + c.after;
    const cursor = c.before.length + choice.length;
    input.setSelectionRange(cursor, cursor);
    c.value = input.value;
    c.cursor = cursor;
    this._completion = c.options.length > 1 ? c : null;
  }

  resetCompletion() {
    this._completion = null;
  }
}

// --- a small form dialog (instead of window.prompt, which is modal and unstyled) -------

/** Ask for `fields` ([{label, type}]) in a dialog; resolves to the values or null. */
export function ask(title, fields) {
  const dialog = $("ask-dialog");
  $("ask-title").textContent = title;
  const inputs = fields.map((field, i) => {
    const p = el("p");
    const label = el("label", field.label);
    const input = el("input");
    input.id = `ask-${i}`;
    label.htmlFor = input.id;
    input.type = field.type || "text";
    input.autocomplete = field.type === "password" ? "new-password" : "off";
    p.append(label, " ", input);
    return [p, input];
  });
  $("ask-fields").replaceChildren(...inputs.map(([p]) => p));
  return new Promise((resolve) => {
    const done = (value) => {
      dialog.removeEventListener("close", onClose);
      $("ask-cancel").onclick = null;
      $("ask-form").onsubmit = null;
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const onClose = () => done(null);
    dialog.addEventListener("close", onClose);
    $("ask-cancel").onclick = () => done(null);
    $("ask-form").onsubmit = (event) => {
      event.preventDefault();
      done(inputs.map(([, input]) => input.value));
    };
    dialog.showModal();
    if (inputs.length) inputs[0][1].focus();
  });
}
