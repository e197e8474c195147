// The page's start: check for a secure context and WebCrypto, fetch and pin the server
// key (trust on first use), log in, then wire the Message field, buttons, file picker,
// drag and drop, theme and notifications to the session. Only the key pin, the theme
// and the notification choice are stored in the browser; nothing secret.

import { fingerprintText, importServerKey, pemToSpki } from "./handshake.js";
import { ChatSession, failureText } from "./session.js";
import { Transfers } from "./files.js";
import { Page, ask } from "./ui.js";
import { parse } from "./commands.js";
import { FILES, OWN, UI, errorLine, helpLines, printable } from "./render.js";

const $ = (id) => document.getElementById(id);
const PIN_KEY = `chat.pin:${location.origin}`;

// --- theme (before anything else, so the page does not flash) ------------------------

function applyTheme(theme) {
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}
applyTheme(localStorage.getItem("chat.theme"));
$("theme").addEventListener("click", () => {
  const current =
    document.documentElement.dataset.theme || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  const next = current === "dark" ? "light" : "dark";
  localStorage.setItem("chat.theme", next);
  applyTheme(next);
});

function problem(text, { forget = false, retry = false } = {}) {
  $("problem-text").textContent = text;
  $("forget-key").hidden = !forget;
  $("try-again").hidden = !retry;
  $("problem").hidden = false;
}

// --- the server key ------------------------------------------------------------------

async function trustServer() {
  const response = await fetch("/server-key.pem", { cache: "no-store" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const spki = pemToSpki(await response.text());
  const fingerprint = await fingerprintText(spki);
  const pinned = localStorage.getItem(PIN_KEY);
  if (pinned === fingerprint) return { spki, fingerprint };
  if (pinned) {
    problem(UI.keyChanged(location.origin, pinned, fingerprint), { forget: true });
    return null;
  }
  const dialog = $("trust-dialog");
  $("trust-text").textContent = UI.trustText(location.origin);
  $("trust-fingerprint").textContent = fingerprint;
  const trusted = await new Promise((resolve) => {
    const finish = (answer) => {
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    $("trust-ok").onclick = () => finish(true);
    $("trust-cancel").onclick = () => finish(false);
    dialog.addEventListener("cancel", () => finish(false), { once: true });
    dialog.showModal();
    $("trust-ok").focus();
  });
  if (!trusted) {
    problem(UI.trustCancelled, { retry: true });
    return null;
  }
  localStorage.setItem(PIN_KEY, fingerprint);
  return { spki, fingerprint };
}

$("try-again").addEventListener("click", () => location.reload());
$("forget-key").addEventListener("click", () => {
  localStorage.removeItem(PIN_KEY);
  location.reload();
});

// --- the chat ----------------------------------------------------------------------------

async function start() {
  if (!window.isSecureContext) {
    problem(UI.insecure);
    return;
  }
  if (!globalThis.crypto || !crypto.subtle) {
    problem(UI.noCrypto);
    return;
  }
  let trusted;
  try {
    trusted = await trustServer();
  } catch (error) {
    problem(UI.keyFetchFailed(error.message || String(error)), { retry: true });
    return;
  }
  if (!trusted) return;
  let serverKey;
  try {
    serverKey = await importServerKey(trusted.spki);
  } catch (error) {
    problem(UI.keyFetchFailed(error.message || String(error)));
    return;
  }
  const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/`;
  const page = new Page();
  const files = new Transfers({
    line: (text) => page.line(text),
    progress: (...args) => page.progress(...args),
    download: (blob, name) => page.download(blob, name),
  });
  const ui = {
    event: (e) => page.event(e),
    line: (text) => page.line(text),
    online: (users) => page.online(users),
    joined: (names) => page.joined(names),
    exited: (names) => page.exited(names),
    groups: (list) => page.groups(list),
    state: (online) => {
      $("status").textContent = online ? "" : UI.connecting;
    },
    loggedIn: (name) => {
      page.me = name;
      $("login-view").hidden = true;
      $("chat-view").hidden = false;
      page.line(OWN.connected(url, trusted.fingerprint));
    },
    sent: (type, fields, me) => {
      if (type === "broadcast") page.line(OWN.ownBroadcast(me, fields.text), { conversation: "*", kind: "message own" });
      else page.own("#" + fields.group, OWN.ownGroupMessage(me, fields.group, fields.text));
    },
    quit: () => {
      page.line(OWN.quit);
      $("message").disabled = true;
    },
    files,
  };
  const session = new ChatSession({ url, serverKey, ui });
  files.session = session;
  // Reload or close: quit now, or the server would keep the name for a resume that the
  // next page cannot make (its resume token was in memory only).
  window.addEventListener("pagehide", () => session.leave());
  window.addEventListener("pageshow", (event) => event.persisted && location.reload());
  $("login-fingerprint").textContent = trusted.fingerprint;
  page.showNotificationState();
  login(session, page);
}

function login(session, page) {
  $("login-view").hidden = false;
  const form = $("login-form");
  const username = $("username");
  const password = $("password");
  const error = $("login-error");
  let busy = false;
  username.focus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    const name = username.value.trim();
    if (!name) {
      username.focus();
      return;
    }
    const wantsPassword = !$("password-row").hidden;
    busy = true;
    error.textContent = "";
    $("status").textContent = UI.loggingIn;
    let result;
    try {
      result = await session.login(name, wantsPassword ? password.value : null);
    } catch (failure) {
      busy = false;
      $("status").textContent = "";
      error.textContent = failureText(failure);
      return;
    }
    busy = false;
    $("status").textContent = "";
    if (result.error) {
      const e = result.error;
      if (e.type === "error" && e.code === "password_required") {
        $("password-row").hidden = false;
        $("password-hint").hidden = false;
        $("password-hint").textContent = UI.passwordPrompt;
        password.focus();
        return;
      }
      error.textContent = e.type === "error" ? printable(errorLine(e)) : printable(e.type);
      if (e.code === "wrong_password") {
        password.value = "";
        password.focus();
      } else {
        $("password-row").hidden = true;
        $("password-hint").hidden = true;
        password.value = "";
        username.focus();
        username.select();
      }
      return;
    }
    password.value = "";
    page.select("*");
    wireChat(session, page);
    $("message").focus();
  });
}

// --- the chat view -------------------------------------------------------------------

function wireChat(session, page) {
  const input = $("message");
  const history = [];
  let back = 0;

  const run = (line) => runLine(line, session, page, pickFileFor);
  // `/file <user> <path>` and `/groupfile`: a page cannot read paths, so the picker opens
  // for that user or group (the Enter that sent the line lets the page open it).
  let pickTarget = null;
  const pickFileFor = (target, group) => {
    pickTarget = { target, group };
    $("file-input").click();
  };
  $("file-input").addEventListener("cancel", () => {
    pickTarget = null;
  });
  page.onOpenPrivate = (name) => {
    page.select("@" + name);
    input.focus();
  };

  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const line = input.value;
    if (!line.trim()) return;
    history.push(line);
    back = 0;
    input.value = "";
    page.resetCompletion();
    const key = page.selected;
    if (key !== "*" && line[0] !== "/" && line[0] !== "@") {
      run(key[0] === "@" ? `/msg ${key.slice(1)} ${line}` : `/group ${key.slice(1)} ${line}`);
    } else run(line);
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Tab" && !event.altKey && !event.ctrlKey && !event.metaKey) {
      if (page.complete(input, event.shiftKey)) event.preventDefault();
      return;
    }
    page.resetCompletion();
    if (event.key === "ArrowUp" && history.length && back < history.length) {
      back += 1;
      input.value = history[history.length - back];
      event.preventDefault();
    } else if (event.key === "ArrowDown" && back > 0) {
      back -= 1;
      input.value = back ? history[history.length - back] : "";
      event.preventDefault();
    } else if (event.key === "Escape") {
      input.value = "";
      back = 0;
    }
  });

  const group = () => page.selected.slice(1);
  const click = (id, action) => $(id).addEventListener("click", action);
  click("new-group", async () => {
    const values = await ask(UI.promptGroupName, [{ label: UI.promptGroupName }, { label: UI.promptMembers }]);
    if (values && values[0].trim()) run(`/create ${values[0].trim()} ${values[1]}`.trim());
  });
  click("join-group", async () => {
    const values = await ask(UI.promptGroupName, [{ label: UI.promptGroupName }]);
    if (values && values[0].trim()) run(`/join ${values[0].trim()}`);
  });
  click("show-groups", () => run("/showgroups"));
  click("members", () => run(`/showgroupmembers ${group()}`));
  click("add-member", async () => {
    const values = await ask(`${UI.promptUser} (${group()})`, [{ label: UI.promptUser }]);
    if (values && values[0].trim()) run(`/add ${group()} ${values[0].trim()}`);
  });
  click("kick-member", async () => {
    const values = await ask(`${UI.promptUser} (${group()})`, [{ label: UI.promptUser }]);
    if (values && values[0].trim()) run(`/kick ${group()} ${values[0].trim()}`);
  });
  click("leave-group", () => run(`/leave ${group()}`));
  click("delete-group", async () => {
    const values = await ask(UI.confirmDelete(group()), []);
    if (values) run(`/delete ${group()}`);
  });
  click("history", () => {
    const key = page.selected;
    run(key === "*" ? "/history" : key[0] === "@" ? `/history ${key}` : `/history ${key.slice(1)}`);
  });
  click("help", () => run("/help"));
  click("quit", () => run("/quit"));
  click("menu", () => {
    const open = $("side").classList.toggle("open");
    $("menu").setAttribute("aria-expanded", String(open));
    if (open) $("close-side").focus();
  });
  click("close-side", () => {
    $("side").classList.remove("open");
    $("menu").setAttribute("aria-expanded", "false");
    $("menu").focus();
  });
  $("notify").addEventListener("click", () => page.toggleNotifications());

  // Files: the picker and drag and drop send to the selected conversation.
  const sendFile = (file) => {
    if (pickTarget) {
      session.ui.files.send(file, pickTarget.target, pickTarget.group);
      return;
    }
    const key = page.selected;
    if (key === "*") {
      page.line(FILES.toEveryone);
      return;
    }
    session.ui.files.send(file, key.slice(1), key[0] === "#");
  };
  $("file-input").addEventListener("change", () => {
    for (const file of $("file-input").files) sendFile(file);
    pickTarget = null;
    $("file-input").value = "";
  });
  let dragDepth = 0;
  const drop = $("drop");
  $("drop-text").textContent = UI.dropHere;
  document.addEventListener("dragenter", (event) => {
    if (![...(event.dataTransfer?.types || [])].includes("Files")) return;
    dragDepth += 1;
    drop.hidden = false;
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) drop.hidden = true;
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    drop.hidden = true;
    for (const file of event.dataTransfer?.files || []) sendFile(file);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && $("side").classList.contains("open")) {
      $("side").classList.remove("open");
      $("menu").setAttribute("aria-expanded", "false");
      $("menu").focus();
    }
  });
}

/** Do what one typed line says, exactly as the terminal client would. */
async function runLine(line, session, page, pickFileFor) {
  const parsed = parse(line);
  if (parsed === null) return;
  switch (parsed.kind) {
    case "show":
      page.lines(parsed.lines);
      return;
    case "send":
      session.send(parsed.type, parsed.fields);
      return;
    case "file":
      pickFileFor(parsed.target, parsed.group);
      return;
    case "answer":
      page.line("No file offer is waiting for an answer.");
      return;
    case "open":
      page.line("No received file is waiting to be opened (see --open).");
      return;
    case "action":
      break;
    default:
      return;
  }
  if (parsed.action === "help") {
    page.lines(helpLines(), { kind: "help" });
  } else if (parsed.action === "quit") {
    session.quit();
  } else if (parsed.action === "register") {
    if (!session.online) return page.line(OWN.notConnected);
    const values = await ask("/register", [
      { label: "Password", type: "password" },
      { label: UI.repeatPassword, type: "password" },
    ]);
    if (!values) return;
    if (values[0] !== values[1]) return page.line(OWN.passwordsDiffer);
    const reply = await session.send("register", { password: values[0] });
    if (reply && reply.type === "registered") session.password = values[0];
  } else if (parsed.action === "passwd") {
    if (!session.online) return page.line(OWN.notConnected);
    const values = await ask("/passwd", [
      { label: UI.oldPassword, type: "password" },
      { label: UI.newPassword, type: "password" },
      { label: UI.repeatPassword, type: "password" },
    ]);
    if (!values) return;
    if (values[1] !== values[2]) return page.line(OWN.passwordsDiffer);
    const reply = await session.send("change_password", { old_password: values[0], new_password: values[1] });
    if (reply && reply.type === "password_changed") session.password = values[1];
  }
}

start().catch((error) => problem(OWN.internalError(error)));
