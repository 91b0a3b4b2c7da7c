// The rafka console: a page per hash route, built from the broker's JSON API
// (/api/v1). Data is only ever put into the page as text nodes.
"use strict";

const page = () => document.getElementById("page");
let timer = null;
let samples = [];

// An element with attributes (on* names become listeners) and children (strings become
// text nodes).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function table(id, headers, rows) {
  return el("table", { id, "data-live": true },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { class: h.num ? "num" : null }, h.label || h)))),
    el("tbody", {}, rows));
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function showNotice(message) {
  const box = document.getElementById("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

// With auth on, every API call carries the token of the console's login (kept for this
// tab only); an answer of 401 shows the login form.
const TOKEN = "rafka-token";

class LoginNeeded extends Error {}

async function api(path, options) {
  const init = Object.assign({ headers: {} }, options || {});
  if (init.body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(init.body);
  }
  const token = sessionStorage.getItem(TOKEN);
  if (token) init.headers["authorization"] = "Bearer " + token;
  const r = await fetch("/api/v1" + path, init);
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (r.status === 401) {
    sessionStorage.removeItem(TOKEN);
    throw new LoginNeeded((body && body.error) || "log in");
  }
  if (!r.ok) throw new Error((body && body.error) || r.status + " " + r.statusText);
  return body;
}

// The login form: client credentials for the broker's authorization server.
function login(reason) {
  const id = el("input", { id: "login-id", required: true, autocomplete: "username" });
  const secret = el("input", { id: "login-secret", type: "password", required: true, autocomplete: "current-password" });
  const form = el("form", {
    id: "login",
    onsubmit: async (ev) => {
      ev.preventDefault();
      await act(async () => {
        const r = await fetch("/oauth/token", {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({ grant_type: "client_credentials", client_id: id.value.trim(), client_secret: secret.value }),
        });
        let body = null;
        try { body = await r.json(); } catch (_) { body = null; }
        if (!r.ok) throw new Error((body && (body.error_description || body.error)) || r.status + " " + r.statusText);
        sessionStorage.setItem(TOKEN, body.access_token);
        showLogout();
        await render(false);
      });
    },
  },
  el("label", {}, "Client id", id), el("label", {}, "Client secret", secret),
  el("button", { id: "login-submit", type: "submit" }, "Log in"));
  return [el("h1", {}, "Log in"), el("p", { class: "muted" }, reason), form];
}

function showLogout() {
  const out = document.getElementById("logout");
  out.hidden = !sessionStorage.getItem(TOKEN);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function link(href, text) { return el("a", { href }, text); }
const enc = encodeURIComponent;

// --- overview ------------------------------------------------------------------------

function chart(points) {
  const ns = "http://www.w3.org/2000/svg";
  const w = 640, h = 160, pad = 36;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("id", "chart");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  const max = Math.max(1, ...points.map((p) => Math.max(p.in, p.out)));
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 4);
  label.setAttribute("y", 12);
  label.textContent = bytes(max) + "/s";
  svg.append(label);
  for (const key of ["in", "out"]) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("class", key);
    const step = (w - pad) / 59;
    const start = 60 - points.length;
    line.setAttribute("points", points.map((p, i) =>
      (pad + (start + i) * step).toFixed(1) + "," + (h - 8 - (p[key] / max) * (h - 28)).toFixed(1)).join(" "));
    svg.append(line);
  }
  return svg;
}

async function overview() {
  const c = await api("/cluster");
  const now = Date.now();
  const last = samples[samples.length - 1];
  if (last && now > last.at) {
    const s = (now - last.at) / 1000;
    samples.push({
      at: now, traffic: c.traffic,
      in: Math.max(0, (c.traffic.bytes_in - last.traffic.bytes_in) / s),
      out: Math.max(0, (c.traffic.bytes_out - last.traffic.bytes_out) / s),
      rin: Math.max(0, (c.traffic.records_in - last.traffic.records_in) / s),
    });
  } else {
    samples.push({ at: now, traffic: c.traffic, in: 0, out: 0, rin: 0 });
  }
  samples = samples.slice(-60);
  const rates = samples.slice(1);
  const cur = rates[rates.length - 1] || { in: 0, out: 0, rin: 0 };
  const card = (id, label, n, bad) => el("div", { class: "card" + (bad && n > 0 ? " bad" : "") },
    el("div", { class: "muted" }, label), el("div", { class: "n", id }, n));
  const up = c.brokers.filter((b) => b.up).length;
  return [
    el("h1", {}, "Cluster"),
    el("div", { class: "cards" },
      card("stat-brokers", "Brokers up", up + " / " + c.brokers.length, false),
      card("stat-topics", "Topics", c.topics),
      card("stat-partitions", "Partitions", c.partitions),
      card("stat-under", "Under-replicated", c.under_replicated, true),
      card("stat-offline", "Offline", c.offline, true)),
    el("h2", {}, "Brokers"),
    table("brokers", ["Id", "Address", "State", "Role", { label: "Leaders", num: true }],
      c.brokers.map((b) => el("tr", { "data-broker": b.id },
        el("td", {}, b.id), el("td", {}, b.address),
        el("td", { class: b.up ? "up" : "down" }, b.up ? "up" : "down"),
        el("td", {}, [b.controller ? "controller" : null, b.voter ? "metadata voter" : "learner"].filter(Boolean).join(", ")),
        el("td", { class: "num" }, b.leaders)))),
    el("h2", {}, "Throughput of broker " + c.node_id),
    el("p", { class: "legend" },
      el("span", { class: "in", id: "rate-in" }, "in " + bytes(cur.in) + "/s (" + Math.round(cur.rin) + " records/s)"),
      el("span", { class: "out", id: "rate-out" }, "out " + bytes(cur.out) + "/s")),
    chart(rates),
  ];
}

// --- topics --------------------------------------------------------------------------

function parseConfigs(text) {
  const configs = {};
  for (const line of text.split(/[\n,]/)) {
    const t = line.trim();
    if (!t) continue;
    const i = t.indexOf("=");
    if (i <= 0) throw new Error("configs are key=value, one per line: " + t);
    configs[t.slice(0, i).trim()] = t.slice(i + 1).trim();
  }
  return configs;
}

async function topics() {
  const t = await api("/topics");
  const name = el("input", { id: "new-topic-name", required: true, placeholder: "orders" });
  const parts = el("input", { id: "new-topic-partitions", type: "number", min: 1, value: 1 });
  const rf = el("input", { id: "new-topic-rf", type: "number", min: 0, value: 0, title: "0: the cluster's default" });
  const configs = el("textarea", { id: "new-topic-configs", placeholder: "retention.ms=604800000" });
  const form = el("form", {
    id: "new-topic",
    onsubmit: async (ev) => {
      ev.preventDefault();
      await act(async () => {
        await api("/topics", { method: "POST", body: {
          name: name.value.trim(), partitions: Number(parts.value), replication_factor: Number(rf.value),
          configs: parseConfigs(configs.value) } });
        showNotice("Created topic " + name.value.trim());
        await render(false);
      });
    },
  },
  el("label", {}, "Name", name), el("label", {}, "Partitions", parts),
  el("label", {}, "Replication factor", rf), el("label", {}, "Configs (key=value)", configs),
  el("button", { id: "new-topic-create", type: "submit" }, "Create topic"));
  return [
    el("h1", {}, "Topics"),
    form,
    table("topics-table", ["Name", { label: "Partitions", num: true }, { label: "Replication", num: true }, "Configs"],
      t.topics.map((x) => el("tr", { "data-topic": x.name },
        el("td", {}, link("#/topics/" + enc(x.name), x.name)),
        el("td", { class: "num" }, x.partitions), el("td", { class: "num" }, x.replication_factor),
        el("td", {}, Object.entries(x.configs).map(([k, v]) => el("span", { class: "tag" }, k + "=" + v)))))),
  ];
}

async function topic(name) {
  const t = await api("/topics/" + enc(name));
  const key = el("input", { id: "config-key", placeholder: "retention.ms" });
  const value = el("input", { id: "config-value" });
  const form = el("form", {
    id: "config-form",
    onsubmit: async (ev) => {
      ev.preventDefault();
      await act(async () => {
        await api("/topics/" + enc(name) + "/configs", { method: "PUT", body: { configs: { [key.value.trim()]: value.value } } });
        showNotice("Set " + key.value.trim() + " on " + name);
        await render(false);
      });
    },
  }, el("label", {}, "Config", key), el("label", {}, "Value", value), el("button", { type: "submit" }, "Set"));
  const totalSize = t.partitions.reduce((s, p) => s + p.size_bytes, 0);
  return [
    el("h1", {}, "Topic ", el("span", { id: "topic-name" }, t.name)),
    el("p", {}, link("#/topics/" + enc(name) + "/messages", "Browse messages"), " · ",
      t.partitions.length + " partition(s), " + bytes(totalSize) + " on their leaders"),
    el("h2", {}, "Configs"),
    table("configs-table", ["Config", "Value"],
      Object.entries(t.configs).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v)))),
    form,
    el("h2", {}, "Partitions"),
    table("partitions-table", [{ label: "Partition", num: true }, "Leader", "Replicas", { label: "Log start", num: true },
      { label: "High watermark", num: true }, { label: "Size", num: true }, "State"],
      t.partitions.map((p) => el("tr", { "data-partition": p.partition },
        el("td", { class: "num" }, link("#/topics/" + enc(name) + "/messages?partition=" + p.partition, p.partition)),
        el("td", {}, p.leader || "none"), el("td", {}, p.replicas.join(", ")),
        el("td", { class: "num" }, p.log_start_offset), el("td", { class: "num" }, p.high_watermark),
        el("td", { class: "num" }, bytes(p.size_bytes)),
        el("td", { class: p.leader && !p.replicas_down.length ? "up" : "down" },
          !p.leader ? "offline" : p.replicas_down.length ? "under-replicated (down: " + p.replicas_down.join(", ") + ")"
            : p.moving_to.length ? "moving to " + p.moving_to.join(", ") : "in sync")))),
  ];
}

// --- messages ------------------------------------------------------------------------

function decodeBytes(shown) {
  const bin = atob(shown.base64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function hex(b) {
  const parts = [];
  for (let i = 0; i < b.length; i += 16) {
    const row = Array.from(b.slice(i, i + 16), (x) => x.toString(16).padStart(2, "0")).join(" ");
    parts.push(i.toString(16).padStart(6, "0") + "  " + row);
  }
  return parts.join("\n");
}

// Text, JSON pretty-printed, or hex, as `format` asks (auto: JSON if it parses, text if it
// is UTF-8, else hex).
function rendered(shown, format) {
  if (!shown) return el("span", { class: "muted" }, "null");
  const b = decodeBytes(shown);
  let text = null;
  try { text = new TextDecoder("utf-8", { fatal: true }).decode(b); } catch (_) { text = null; }
  let out;
  if (format === "hex" || (format !== "text" && text === null)) out = hex(b);
  else if (format === "json" || format === "auto") {
    try { out = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { out = format === "json" ? "(not JSON) " + text : text; }
  } else out = text === null ? hex(b) : text;
  const note = shown.truncated ? el("div", { class: "muted" }, "first " + bytes(b.length) + " of " + bytes(shown.size)) : null;
  return [el("pre", {}, out), note];
}

async function messages(name, params) {
  const meta = await api("/topics/" + enc(name));
  const partition = Number(params.get("partition") || 0);
  const format = params.get("format") || "auto";
  const q = new URLSearchParams({ partition, limit: params.get("limit") || 50 });
  if (params.get("offset")) q.set("offset", params.get("offset"));
  if (params.get("timestamp")) q.set("timestamp", params.get("timestamp"));
  const m = await api("/topics/" + enc(name) + "/messages?" + q);
  const pSel = el("select", { id: "browse-partition" },
    meta.partitions.map((p) => el("option", { value: p.partition, selected: p.partition === partition }, p.partition)));
  const offset = el("input", { id: "browse-offset", type: "number", min: 0, value: params.get("offset") || "", placeholder: "oldest" });
  const ts = el("input", { id: "browse-timestamp", type: "datetime-local", step: 1 });
  const limit = el("input", { id: "browse-limit", type: "number", min: 1, max: 500, value: params.get("limit") || 50 });
  const fmt = el("select", { id: "browse-format" },
    ["auto", "text", "json", "hex"].map((f) => el("option", { value: f, selected: f === format }, f)));
  const go = (extra) => {
    const p = new URLSearchParams({ partition: pSel.value, limit: limit.value, format: fmt.value });
    if (extra.offset !== undefined) p.set("offset", extra.offset);
    else if (ts.value) p.set("timestamp", String(new Date(ts.value).getTime()));
    else if (offset.value !== "") p.set("offset", offset.value);
    location.hash = "#/topics/" + enc(name) + "/messages?" + p;
  };
  const form = el("form", { id: "browse", onsubmit: (ev) => { ev.preventDefault(); go({}); } },
    el("label", {}, "Partition", pSel), el("label", {}, "From offset", offset),
    el("label", {}, "or from time", ts), el("label", {}, "Records", limit), el("label", {}, "Show as", fmt),
    el("button", { id: "browse-go", type: "submit" }, "Read"));
  fmt.addEventListener("change", () => go({ offset: params.get("offset") || undefined }));
  const rows = m.messages.map((r) => el("tr", { "data-offset": r.offset },
    el("td", { class: "num" }, r.offset),
    el("td", {}, new Date(r.timestamp).toISOString()),
    el("td", { class: "key" }, rendered(r.key, format === "json" ? "auto" : format)),
    el("td", { class: "value" }, rendered(r.value, format)),
    el("td", { class: "headers" }, r.headers.map((h) => el("div", {}, h.key + ": ", rendered(h.value, "auto"))))));
  const more = m.next_offset !== null && m.next_offset < m.high_watermark;
  return [
    el("h1", {}, "Messages of ", link("#/topics/" + enc(name), name), " / partition " + partition),
    form,
    el("p", { class: "muted", id: "browse-range" },
      "offsets " + m.log_start_offset + " to " + m.high_watermark + " (high watermark); " + m.messages.length + " shown"),
    table("messages-table", [{ label: "Offset", num: true }, "Time", "Key", "Value", "Headers"], rows),
    more ? el("p", {}, el("button", { id: "browse-next", type: "button", onclick: () => go({ offset: m.next_offset }) }, "Next page")) : null,
  ];
}

// --- groups --------------------------------------------------------------------------

async function groups() {
  const g = await api("/groups");
  return [
    el("h1", {}, "Consumer groups"),
    g.groups.length ? table("groups-table", ["Group"], g.groups.map((n) =>
      el("tr", { "data-group": n }, el("td", {}, link("#/groups/" + enc(n), n)))))
      : el("p", { class: "muted", id: "groups-table" }, "No groups with members or committed offsets."),
  ];
}

async function group(name) {
  const g = await api("/groups/" + enc(name));
  const topicsOf = [...new Set(g.offsets.map((o) => o.topic))];
  const topicSel = el("select", { id: "reset-topic" }, topicsOf.map((t) => el("option", { value: t }, t)));
  const to = el("select", { id: "reset-to" }, ["earliest", "latest", "offset", "timestamp"].map((t) => el("option", { value: t }, t)));
  const value = el("input", { id: "reset-value", type: "number", placeholder: "offset or ms since epoch" });
  const form = el("form", {
    id: "reset-form",
    onsubmit: async (ev) => {
      ev.preventDefault();
      await act(async () => {
        const body = { topic: topicSel.value, to: to.value };
        if (value.value !== "") body.value = Number(value.value);
        const r = await api("/groups/" + enc(name) + "/reset", { method: "POST", body });
        showNotice("Reset " + name + ": " + r.offsets.map((o) => o.topic + "-" + o.partition + " → " + o.offset).join(", "));
        await render(false);
      });
    },
  }, el("label", {}, "Topic", topicSel), el("label", {}, "To", to), el("label", {}, "Value", value),
  el("button", { id: "reset-go", type: "submit", disabled: g.members.length > 0, "data-live": true }, "Reset offsets"),
  el("span", { class: "muted", id: "reset-hint", "data-live": true },
    g.members.length ? "Stop the group's consumers to reset its offsets." : ""));
  return [
    el("h1", {}, "Group ", el("span", { id: "group-name" }, name)),
    el("div", { class: "cards", id: "group-cards", "data-live": true },
      el("div", { class: "card" }, el("div", { class: "muted" }, "State"), el("div", { class: "n", id: "group-state" }, g.state)),
      el("div", { class: "card" }, el("div", { class: "muted" }, "Members"), el("div", { class: "n", id: "group-members" }, g.members.length)),
      el("div", { class: "card" }, el("div", { class: "muted" }, "Total lag"), el("div", { class: "n", id: "group-lag" }, g.total_lag))),
    el("h2", {}, "Members"),
    table("members-table", ["Member", "Instance", "Partitions"], g.members.map((m) => el("tr", {},
      el("td", {}, m.member_id), el("td", {}, m.instance_id || "–"),
      el("td", {}, m.assignment.map((a) => el("span", { class: "tag" }, a.topic + "-" + a.partition)))))),
    el("h2", {}, "Offsets and lag"),
    table("offsets-table", ["Partition", { label: "Committed", num: true }, { label: "End", num: true }, { label: "Lag", num: true }, "Member"],
      g.offsets.map((o) => el("tr", { "data-partition": o.topic + "-" + o.partition },
        el("td", {}, o.topic + "-" + o.partition), el("td", { class: "num" }, o.committed),
        el("td", { class: "num" }, o.end), el("td", { class: "num lag" }, o.lag), el("td", {}, o.member || "–")))),
    el("h2", {}, "Reset offsets"),
    form,
  ];
}

// --- routing -------------------------------------------------------------------------

async function act(f) {
  showError("");
  try { await f(); } catch (e) {
    if (e instanceof LoginNeeded) return render(false);
    showError(e.message);
  }
}

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "topics" && parts.length === 1) return { nav: "topics", view: topics };
  if (parts[0] === "topics" && parts.length === 2) return { nav: "topics", view: () => topic(parts[1]) };
  if (parts[0] === "topics" && parts[2] === "messages") return { nav: "topics", view: () => messages(parts[1], params) };
  if (parts[0] === "groups" && parts.length === 1) return { nav: "groups", view: groups, refresh: 3000 };
  if (parts[0] === "groups" && parts.length === 2) return { nav: "groups", view: () => group(parts[1]), refresh: 2000, soft: true };
  return { nav: "overview", view: overview, refresh: 2000 };
}

// Shows the route's page. A refresh of a page with forms (`soft`) replaces only its
// live parts (tables, figures), so what the user is typing stays.
async function render(refresh) {
  const r = route();
  const key = location.hash;
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.id === "nav-" + r.nav);
  clearTimeout(timer);
  try {
    const content = [await r.view()].flat().filter(Boolean);
    if (key !== location.hash) return; // the user moved on meanwhile
    if (refresh && r.soft) {
      const holder = el("div", {}, content);
      for (const live of holder.querySelectorAll("[data-live][id]")) {
        const old = document.getElementById(live.id);
        if (old) old.replaceWith(live);
      }
    } else {
      page().replaceChildren(...content);
    }
    showError("");
  } catch (e) {
    if (e instanceof LoginNeeded) {
      page().replaceChildren(...login(e.message));
      showLogout();
      return;
    }
    showError(e.message);
  }
  if (r.refresh) timer = setTimeout(() => render(true), r.refresh);
}

window.addEventListener("hashchange", () => { showNotice(""); render(false); });
window.addEventListener("DOMContentLoaded", async () => {
  showLogout();
  document.getElementById("logout").addEventListener("click", (ev) => {
    ev.preventDefault();
    sessionStorage.removeItem(TOKEN);
    render(false);
  });
  try {
    const c = await api("/cluster");
    document.getElementById("broker").textContent = "broker " + c.node_id + " · " + c.brokers.length + " broker(s)";
  } catch (_) { /* shown by the page */ }
  render(false);
});
