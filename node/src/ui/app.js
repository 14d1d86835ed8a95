// The shoal web view: polls the agent's JSON API every second and renders
// members and tasks. Data only ever reaches the page as text nodes
// (textContent), never as markup, so a hostile task name stays text.
"use strict";

const POLL_MS = 1000;
const TASK_LIMIT = 200;
const TOKEN_KEY = "shoal-api-token";

let token = sessionStorage.getItem(TOKEN_KEY);
let timer = null;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function badge(prefix, value) {
  const td = el("td");
  td.appendChild(el("span", value, "state " + prefix + "-" + String(value).replace(/[^a-z]/g, "")));
  return td;
}

function permille(value) {
  return value === null || value === undefined ? "–" : (value / 10).toFixed(1) + " %";
}

function ago(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 1000 ? ms + " ms ago" : (ms / 1000).toFixed(1) + " s ago";
}

function orDash(value) {
  return value === null || value === undefined ? "–" : value;
}

async function api(path) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Error("unauthorized");
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function replaceRows(table, rows) {
  const tbody = document.querySelector(table + " tbody");
  tbody.replaceChildren(...rows);
}

function memberRow(m) {
  const tr = el("tr");
  tr.dataset.name = m.name;
  tr.dataset.state = m.state;
  if (m.state === "down") tr.className = "down";
  tr.append(
    el("td", m.name + (m.self ? " (this agent)" : "")),
    badge("state", m.state),
    el("td", m.incarnation, "num"),
    el("td", permille(m.cpu_load_permille), "num"),
    el("td", permille(m.mem_used_permille), "num"),
    el("td", m.slots_total === null || m.slots_total === undefined ? "–" : m.slots_free + " / " + m.slots_total, "num"),
    el("td", m.disk_free_mib === null || m.disk_free_mib === undefined ? "–" : m.disk_free_mib + " MiB", "num"),
  );
  const health = badge("health", m.health);
  if (m.health_reason) health.appendChild(el("span", " " + m.health_reason, "muted"));
  tr.append(health, el("td", ago(m.last_heard_ms_ago), "num"), el("td", m.addr, "muted"));
  return tr;
}

function taskRow(t) {
  const tr = el("tr");
  tr.dataset.id = t.id;
  tr.dataset.state = t.state;
  tr.append(
    el("td", t.id, "muted"),
    el("td", t.name),
    badge("state", t.state),
    el("td", t.attempt, "num"),
    el("td", orDash(t.node)),
    el("td", t.retries_used, "num"),
    el("td", orDash(t.exit_code), "num"),
  );
  return tr;
}

function render(node, members, tasks) {
  document.getElementById("party").textContent = "party " + node.party + " · via " + node.member.name;
  const counts = {};
  for (const m of members) counts[m.state] = (counts[m.state] || 0) + 1;
  document.getElementById("summary").textContent = Object.keys(counts).sort()
    .map((state) => counts[state] + " " + state).join(", ");
  replaceRows("#members", members.map(memberRow));
  replaceRows("#tasks", tasks.map(taskRow));
}

function setStatus(text, bad) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = bad ? "bad" : "muted";
}

function askToken(message) {
  document.getElementById("token-form").hidden = false;
  document.getElementById("token-error").textContent = message || "";
  setStatus("token needed", true);
}

async function poll() {
  timer = null;
  try {
    const [node, members, tasks] = await Promise.all([
      api("/v1/node"),
      api("/v1/members"),
      api("/v1/tasks?limit=" + TASK_LIMIT),
    ]);
    document.getElementById("token-form").hidden = true;
    render(node, members, tasks);
    setStatus("updated " + new Date().toLocaleTimeString(), false);
  } catch (error) {
    if (error.message === "unauthorized") {
      askToken(token ? "that token was refused" : "");
      return;
    }
    setStatus("agent unreachable: " + error.message, true);
  }
  timer = setTimeout(poll, POLL_MS);
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token").value;
  sessionStorage.setItem(TOKEN_KEY, token);
  if (timer === null) poll();
});

poll();
