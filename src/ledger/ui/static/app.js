// The ledger's /ui page: vanilla JS over the public v1 API, with the key the user pastes.
// Everything shown is inserted as text (never as HTML): names come from the apps.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const MAX_PAGES = 10;   // lists are followed cursor by cursor, up to this many pages
const MAX_NODES = 24;   // the graph shows the strongest relationships
const $ = (id) => document.getElementById(id);
const seg = (text) => encodeURIComponent(text);
let current = { key: "", person: "", run: 0 };

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(path) {
  const answer = await fetch(path, {
    headers: { Authorization: `Bearer ${current.key}`, Accept: "application/json" },
  });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new ApiError(answer.status, body);
  return body;
}

async function every(path) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < MAX_PAGES; page++) {
    const joiner = path.includes("?") ? "&" : "?";
    const body = await api(cursor ? `${path}${joiner}cursor=${seg(cursor)}` : path);
    items.push(...body.items);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return items;
}

function element(tag, attributes = {}, text = null) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

function say(text, isError = false) {
  const message = $("message");
  message.textContent = text;
  message.className = isError ? "error" : "";
  message.hidden = !text;
}

function explain(error) {
  if (!(error instanceof ApiError)) return `The ledger did not answer: ${error.message}`;
  if (error.status === 401) return `The API key was refused: ${error.message}`;
  if (error.status === 403) return `This key may not read projections: ${error.message}`;
  return `${error.status}: ${error.message}`;
}

function number(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

async function show(person) {
  const run = ++current.run;
  current.person = person;
  say(`Loading ${person}…`);
  let relationships, balances;
  try {
    [relationships, balances] = await Promise.all([
      every(`/v1/people/${seg(person)}/relationships?limit=100`),
      every(`/v1/people/${seg(person)}/balances?limit=100`),
    ]);
  } catch (error) {
    if (run !== current.run) return;
    $("panels").hidden = true;
    say(explain(error), true);
    return;
  }
  if (run !== current.run) return;
  say("");
  $("panels").hidden = false;
  $("who").textContent = person;
  drawGraph(person, relationships);
  listBalances(balances);
  clearTimeline();
  loadViolations(person, run);
  if (relationships.length) select(relationships[0].b);
}

function drawGraph(person, relationships) {
  const svg = $("graph");
  svg.replaceChildren();
  const shown = relationships.slice(0, MAX_NODES);
  const strongest = Math.max(0.001, ...shown.map((r) => r.strength));
  const [cx, cy, radius] = [320, 225, 175];
  const edges = element("svg:g");
  const nodes = element("svg:g");
  shown.forEach((relationship, i) => {
    const angle = (2 * Math.PI * i) / shown.length - Math.PI / 2;
    const x = cx + radius * Math.cos(angle);
    const y = cy + radius * Math.sin(angle);
    const width = 1.5 + (7 * relationship.strength) / strongest;
    edges.append(element("svg:line", {
      class: "edge", x1: cx, y1: cy, x2: x.toFixed(1), y2: y.toFixed(1),
      "stroke-width": width.toFixed(1), "data-person": relationship.b,
    }));
    const node = element("svg:g", {
      class: "node", tabindex: "0", role: "button", "data-person": relationship.b,
      transform: `translate(${x.toFixed(1)} ${y.toFixed(1)})`,
    });
    node.append(element("svg:circle", { r: "16", class: relationship.stage }));
    node.append(element("svg:text", { y: "32" }, relationship.b));
    node.append(element("svg:title", {},
      `${relationship.b}: ${relationship.stage}, strength ${number(relationship.strength)}, ` +
      `net ${number(relationship.net)}`));
    node.addEventListener("click", () => select(relationship.b));
    node.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") select(relationship.b);
    });
    nodes.append(node);
  });
  const center = element("svg:g", { class: "center", transform: `translate(${cx} ${cy})` });
  center.append(element("svg:circle", { r: "30" }));
  center.append(element("svg:text", { y: "4" }, person.length > 9 ? `${person.slice(0, 8)}…` : person));
  svg.append(edges, nodes, center);
  if (relationships.length > shown.length) {
    svg.append(element("svg:text", { x: "10", y: "450", class: "legend" },
      `+${relationships.length - shown.length} weaker relationships not drawn`));
  }
  if (!shown.length) {
    svg.append(element("svg:text", { x: "320", y: "290", "text-anchor": "middle" },
      "no relationships yet"));
  }
}

function listBalances(balances) {
  const body = $("balances").querySelector("tbody");
  body.replaceChildren();
  for (const balance of balances) {
    const row = element("tr");
    row.append(element("td", {}, balance.counterparty), element("td", {}, number(balance.given)),
      element("td", {}, number(balance.received)));
    const net = element("td", {}, (balance.net > 0 ? "+" : "") + number(balance.net));
    net.className = balance.net > 0 ? "positive" : balance.net < 0 ? "negative" : "";
    row.append(net);
    body.append(row);
  }
  $("balances-empty").hidden = balances.length > 0;
}

function clearTimeline() {
  $("timeline").replaceChildren();
  $("pair").textContent = "";
  $("timeline-empty").textContent = "Click a person in the graph.";
  $("timeline-empty").hidden = false;
}

function summary(event) {
  const data = event.data;
  const parts = [];
  for (const key of ["from", "to", "requester", "asked_of", "giver", "receiver", "introducer",
    "subject", "target", "invoker", "referrer", "contacted", "by", "party"]) {
    if (data[key]) parts.push(`${key.replace("_", " ")} ${data[key]}`);
  }
  if (data.participants) parts.push(data.participants.join(", "));
  if (data.kind) parts.push(`(${data.kind})`);
  if (data.purpose) parts.push(`(${data.purpose.replace("_", " ")})`);
  return parts.join(" · ");
}

async function select(other) {
  const run = current.run;
  for (const node of document.querySelectorAll("#graph [data-person]")) {
    node.classList.toggle("selected", node.getAttribute("data-person") === other);
  }
  $("pair").textContent = `${current.person} & ${other}`;
  let events;
  try {
    events = await every(`/v1/relationships/${seg(current.person)}/${seg(other)}/timeline?limit=100`);
  } catch (error) {
    if (run === current.run) say(explain(error), true);
    return;
  }
  if (run !== current.run) return;
  const list = $("timeline");
  list.replaceChildren();
  for (const event of events) {
    const item = element("li", { "data-type": event.type });
    item.append(element("time", { datetime: event.occurred_at }, event.occurred_at.slice(0, 10)),
      element("span", { class: "type" }, event.type), document.createTextNode(summary(event)));
    list.append(item);
  }
  $("timeline-empty").textContent = "Nothing between them yet.";
  $("timeline-empty").hidden = events.length > 0;
}

async function loadViolations(person, run) {
  const list = $("violations");
  const state = $("violations-state");
  list.replaceChildren();
  state.textContent = "Loading…";
  let violations;
  try {
    violations = await every(`/v1/people/${seg(person)}/violations?limit=100`);
  } catch (error) {
    if (run !== current.run) return;
    state.textContent = error instanceof ApiError && error.status === 404
      ? "Violations are not available on this server."
      : `Violations could not be read: ${explain(error)}`;
    return;
  }
  if (run !== current.run) return;
  for (const violation of violations) {
    const item = element("li", { "data-code": violation.code });
    item.append(
      element("span", { class: `severity ${violation.severity}` }, violation.severity),
      element("span", { class: "type" }, violation.code),
      element("time", { datetime: violation.occurred_at }, violation.occurred_at.slice(0, 10)),
      element("div", { class: "explanation" }, violation.explanation),
      element("div", { class: "legend" },
        `offender ${violation.offender} · affected ${violation.affected.join(", ")} · ` +
        `${violation.evidence.length} event(s) of evidence`),
    );
    list.append(item);
  }
  state.textContent = violations.length ? "" : "No violations.";
}

$("key").value = sessionStorage.getItem("ledger-key") || "";
$("lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  current.key = $("key").value.trim();
  sessionStorage.setItem("ledger-key", current.key);
  show($("person").value.trim());
});
