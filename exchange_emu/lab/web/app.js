// The exchange-emu queue viewer: talks only to the lab endpoint that served it
// (/servers, /api/..., /faults, /events, /scenarios, /diagram.svg). Plain DOM, no build.
"use strict";

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "onclick") node.addEventListener("click", value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function say(text, isError = false) {
  const status = $("#status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (!response.ok) {
    const message = data && data.error ? data.error : `${method} ${path}: HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return data;
}

function rowsOf(data, ...keys) {
  if (Array.isArray(data)) return data;
  for (const key of keys) if (data && Array.isArray(data[key])) return data[key];
  return [];
}

// ---------------------------------------------------------------- topology and faults
let servers = [];
let faultsAvailable = false;

function siteOf(server) {
  if (server.site) return server.site;
  return (server.roles || []).includes("edge") ? "Perimeter" : "Outside the organization";
}

function renderTopology(list) {
  servers = list;
  const bySite = new Map();
  for (const server of list) {
    const site = siteOf(server);
    if (!bySite.has(site)) bySite.set(site, []);
    bySite.get(site).push(server);
  }
  const box = $("#topology");
  box.replaceChildren();
  for (const [site, members] of bySite) {
    box.append(el("div", { class: "site", "data-site": site }, el("h3", {}, site),
      members.map(serverCard)));
  }
  for (const select of document.querySelectorAll(".server-select")) {
    const chosen = select.value;
    select.replaceChildren(...list.map((s) => el("option", { value: s.name }, s.name)));
    if (chosen) select.value = chosen;
  }
}

function serverCard(server) {
  const up = !!server.running;
  const actions = up ? ["kill", "stop", "restart"] : ["start"];
  return el("div", { class: "server", "data-server": server.name, "data-running": String(up) },
    el("span", { class: "name" }, server.name), " ",
    el("span", { class: `state ${up ? "up" : "down"}` }, up ? "up" : "down"),
    el("div", { class: "roles" }, (server.roles || []).join(", "),
      server.pid ? ` · pid ${server.pid}` : ""),
    server.endpoints && server.endpoints.smtp
      ? el("div", { class: "endpoint" }, `SMTP ${server.endpoints.smtp}`) : null,
    el("div", {}, actions.map((action) => el("button", {
      type: "button", "data-action": action,
      onclick: () => serverAction(server.name, action),
    }, action))));
}

async function serverAction(name, action) {
  say(`${action} ${name}...`);
  try {
    const answer = await api("POST", `/servers/${encodeURIComponent(name)}/${action}`);
    say(`${answer.server}: ${answer.action} done; now ${answer.running ? "running" : "not running"}`);
  } catch (e) { say(e.message, true); }
  await loadServers();
}

async function loadServers() {
  try { renderTopology(await api("GET", "/servers")); } catch (e) { say(e.message, true); }
}

async function loadFaults() {
  try {
    const answer = await api("GET", "/faults");
    faultsAvailable = true;
    $("#fault-tools").hidden = false;
    $("#faults-list").replaceChildren(
      ...rowsOf(answer, "faults").map((line) => el("li", {}, line)));
  } catch (e) {
    faultsAvailable = false;
    $("#fault-tools").hidden = true;  // this lab has no /faults: only whole-server faults
  }
}

async function postFault(kind, body) {
  try {
    const answer = await api("POST", `/faults/${kind}`, body);
    say(answer.done || `${kind} done`);
  } catch (e) { say(e.message, true); }
  await loadFaults();
}

// ---------------------------------------------------------------- queues and messages
function serverOfIdentity(identity) { return String(identity || "").split("\\")[0]; }

function isShadow(queue) {
  return queue.DeliveryType === "ShadowRedundancy" || /\\Shadow\\/i.test(queue.Identity || "");
}

function renderQueues(data) {
  const queues = rowsOf(data, "queues", "results", "rows");
  const body = $("#queues tbody");
  const shadow = $("#shadow-queues tbody");
  body.replaceChildren();
  shadow.replaceChildren();
  for (const q of queues) {
    if (isShadow(q)) {
      shadow.append(el("tr", { class: "queue shadow", "data-identity": q.Identity },
        el("td", {}, el("a", { class: "pick", onclick: () => showMessages(q.Identity) }, q.Identity)),
        el("td", {}, q.NextHopDomain || ""), el("td", { class: "count" }, q.MessageCount)));
      continue;
    }
    body.append(el("tr", { class: `queue ${q.Status || ""}`, "data-identity": q.Identity },
      el("td", {}, el("a", { class: "pick", onclick: () => showMessages(q.Identity) }, q.Identity)),
      el("td", {}, q.DeliveryType || ""), el("td", { class: "status" }, q.Status || ""),
      el("td", { class: "count" }, q.MessageCount), el("td", {}, q.NextHopDomain || ""),
      el("td", {}, q.LastError || ""),
      el("td", { class: "actions" }, ["suspend", "resume", "retry"].map((action) => el("button", {
        type: "button", "data-action": action, onclick: () => queueAction(q.Identity, action),
      }, action)))));
  }
  const errors = data && !Array.isArray(data) && data.errors ? data.errors : null;
  $("#queues-note").textContent = errors && Object.keys(errors).length
    ? `Not answering: ${Object.entries(errors).map(([k, v]) => `${k} (${v})`).join("; ")}` : "";
}

async function loadQueues() {
  try {
    renderQueues(await api("GET", "/api/queues"));
  } catch (e) {
    $("#queues-note").textContent = e.status === 404
      ? "This lab has no queue API (GET /api/queues); queues cannot be shown."
      : e.message;
  }
}

async function queueAction(identity, action) {
  try {
    await api("POST", `/api/queue/${action}`, { identity });
    say(`${action} ${identity}: done`);
  } catch (e) { say(e.message, true); }
  await loadQueues();
}

let shownQueue = null;

async function showMessages(queue, quiet = false) {
  shownQueue = queue;
  $("#messages-section").hidden = false;
  $("#messages-queue").textContent = queue;
  const server = serverOfIdentity(queue);
  try {
    const data = await api("GET",
      `/api/messages?server=${encodeURIComponent(server)}&queue=${encodeURIComponent(queue)}`);
    const body = $("#messages tbody");
    body.replaceChildren(...rowsOf(data, "messages", "results", "rows").map((m) =>
      el("tr", { class: `message ${m.Status || ""}`, "data-identity": m.Identity },
        el("td", {}, el("a", { class: "pick", onclick: () => showPath(m.InternetMessageId,
          m.Identity) }, m.Identity)),
        el("td", {}, m.FromAddress || ""), el("td", {}, m.Subject || ""),
        el("td", { class: "status" }, m.Status || ""), el("td", {}, m.Size ?? ""),
        el("td", {}, m.LastError || ""),
        el("td", { class: "actions" }, ["suspend", "resume", "remove"].map((action) => el("button", {
          type: "button", "data-action": action, onclick: () => messageAction(m.Identity, action),
        }, action))))));
  } catch (e) { if (!quiet) say(e.message, true); }
}

async function messageAction(identity, action) {
  try {
    await api("POST", `/api/message/${action}`, { identity, with_ndr: false });
    say(`${action} ${identity}: done`);
  } catch (e) { say(e.message, true); }
  if (shownQueue) await showMessages(shownQueue);
  await loadQueues();
}

// ---------------------------------------------------------------- a message's path
function stepsOf(row) {
  const data = row.CustomData || {};
  return (data.steps || data.step || "").split(",").filter(Boolean).join(" ");
}

function timeOf(row) { return String(row.Timestamp || "").replace(/^.*T/, "").replace("Z", ""); }

async function inlineSvg(container, url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const doc = new DOMParser().parseFromString(await response.text(), "image/svg+xml");
  const svg = doc.documentElement;
  if (svg.nodeName !== "svg") throw new Error(`${url}: not an SVG`);
  container.append(document.importNode(svg, true));
}

async function showDetails(identity) {
  const box = $("#path-details");
  box.replaceChildren();
  if (!identity) return;
  try {
    const m = await api("GET", `/api/message?identity=${encodeURIComponent(identity)}`);
    box.append(el("p", {}, el("b", {}, m.Identity), ` · ${m.Status} · from ${m.FromAddress}`,
      m.LastError ? ` · last error: ${m.LastError}` : ""),
      el("ul", {}, (m.Recipients || []).map((r) => el("li", { class: "recipient" },
        `${r.Address}: ${r.Status}`, r.LastError ? ` (${r.LastError})` : ""))));
  } catch (e) { box.append(el("p", { class: "note" }, e.message)); }
}

async function showPath(messageId, identity) {
  if (!messageId) return;
  $("#path-section").hidden = false;
  $("#path-message").textContent = messageId;
  showDetails(identity);
  const diagram = $("#path-diagram");
  diagram.replaceChildren();
  const body = $("#path tbody");
  body.replaceChildren();
  try {
    const data = await api("GET", `/api/tracking?message_id=${encodeURIComponent(messageId)}`);
    body.replaceChildren(...rowsOf(data, "events", "results", "rows").map((row) =>
      el("tr", { class: "event" }, el("td", {}, timeOf(row)), el("td", {}, row.ServerHostname),
        el("td", {}, row.EventId), el("td", {}, row.Source),
        el("td", { class: "steps" }, stepsOf(row)),
        el("td", {}, (row.RecipientStatus || []).join("; ")))));
  } catch (e) { say(e.message, true); }
  try {
    await inlineSvg(diagram, `/diagram.svg?message_id=${encodeURIComponent(messageId)}`);
  } catch (e) { say(e.message, true); }
  $("#path-section").scrollIntoView({ behavior: "smooth", block: "start" });
}

// ---------------------------------------------------------------- live tracking feed
const FEED_ROWS = 100;

function addTracking(rows) {
  const body = $("#feed tbody");
  for (const row of rows) {
    body.prepend(el("tr", { class: "event", "data-message-id": row.MessageId || "" },
      el("td", {}, timeOf(row)), el("td", {}, row.ServerHostname), el("td", {}, row.EventId),
      el("td", { class: "steps" }, stepsOf(row)),
      el("td", {}, el("a", { class: "pick", onclick: () => showPath(row.MessageId) },
        row.MessageId || "")),
      el("td", {}, row.MessageSubject || "")));
  }
  while (body.children.length > FEED_ROWS) body.lastChild.remove();
}

function listen() {
  const events = new EventSource("/events");
  const live = $("#live");
  events.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  events.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  events.addEventListener("servers", (e) => renderTopology(JSON.parse(e.data)));
  events.addEventListener("queues", (e) => renderQueues(JSON.parse(e.data)));
  events.addEventListener("tracking", (e) => addTracking(JSON.parse(e.data)));
}

// ---------------------------------------------------------------- forms
$("#send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const to = String(form.get("to")).split(/[,;\s]+/).filter(Boolean);
  try {
    const answer = await api("POST", "/api/send", {
      from: form.get("from"), to, subject: form.get("subject"), body: form.get("body") });
    $("#send-result").replaceChildren("Submitted: ",
      el("a", { class: "pick", id: "sent-message", onclick: () => showPath(answer.message_id) },
        answer.message_id));
    say(`sent ${answer.message_id}`);
  } catch (e) {
    $("#send-result").textContent = `Not sent: ${e.message}`;
    say(e.message, true);
  }
});

$("#scenario-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = event.target.querySelector("button");
  const scenario = new FormData(event.target).get("scenario");
  const narration = $("#narration");
  const diagrams = $("#diagrams");
  narration.textContent = "";
  diagrams.replaceChildren();
  button.disabled = true;
  const lines = [];
  const handle = async (line) => {
    if (line.startsWith("diagram: ")) lines.push(line.slice(9).split(" ")[0]);
    narration.textContent += line + "\n";
    narration.scrollTop = narration.scrollHeight;
  };
  try {
    const response = await fetch(`/scenarios/${scenario}/run`, { method: "POST" });
    if (!response.ok) throw new Error((await response.json()).error);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let partial = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      partial += decoder.decode(value, { stream: true });
      const parts = partial.split("\n");
      partial = parts.pop();
      for (const line of parts) await handle(line);
    }
    if (partial) await handle(partial);
    for (const url of lines) await inlineSvg(diagrams, url);
    diagrams.setAttribute("data-done", "true");
  } catch (e) {
    say(e.message, true);
    narration.textContent += `error: ${e.message}\n`;
  } finally {
    button.disabled = false;
  }
});

$("#partition-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  postFault("partition", { a: form.get("a"), b: form.get("b"), mode: form.get("mode") });
});

$("#slow-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  postFault("slow", { server: form.get("server"), delay_ms: Number(form.get("delay_ms")) });
});

$("#heal-all").addEventListener("click", () => postFault("heal", { servers: [] }));

// ---------------------------------------------------------------- start
const MESSAGES_REFRESH_MS = 2000;  // the shown queue's messages move without an event

(async () => {
  await loadServers();
  await Promise.all([loadQueues(), loadFaults()]);
  listen();
  setInterval(() => { if (shownQueue) showMessages(shownQueue, true); }, MESSAGES_REFRESH_MS);
})();
