// factoryd status page: renders what the daemon pushes over Server-Sent Events.
// No framework, no network beyond this daemon. Data goes in as text, never as HTML.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const offered = document.querySelector('meta[name="actions"]').content.split(",").filter(Boolean);
const POOL_ACTIONS = ["release"];
const TASK_ACTIONS = offered.filter((a) => !POOL_ACTIONS.includes(a));
const KEEP_DECISIONS = 50;
const KEEP_LOG = 200000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function badge(text) {
  return el("span", { class: "badge b-" + String(text).replace(/[^a-z_]/gi, "") }, text);
}

function ago(seconds) {
  if (seconds == null) return "-";
  const s = Math.round(seconds);
  if (s < 90) return s + "s";
  if (s < 5400) return Math.round(s / 60) + "m";
  if (s < 172800) return (s / 3600).toFixed(1) + "h";
  return (s / 86400).toFixed(1) + "d";
}

function until(iso) {
  if (!iso) return "";
  const s = (Date.parse(iso) - Date.now()) / 1000;
  return s > 0 ? "in " + ago(s) : "now";
}

function fmt(n) {
  if (n == null) return "-";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function actionButtons(target, actions) {
  return actions.map((a) =>
    el("button", { "data-action": a, "data-target": target, onclick: () => act(a, target) }, a));
}

async function act(action, target) {
  const resp = await fetch("/api/actions/" + encodeURIComponent(action), {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify({ target }),
  });
  let text = action + " " + target + ": ";
  try {
    const body = await resp.json();
    text += body.ok ? "done" : body.error;
  } catch (_e) {
    text += resp.status + " " + (await resp.text()).trim();
  }
  toast(text);
}

function toast(text) {
  const t = el("div", { class: "toast", role: "status" }, text);
  document.body.append(t);
  setTimeout(() => t.remove(), 4000);
}

function renderDaemon(d) {
  document.getElementById("daemon").textContent =
    `v${d.version} pid ${d.pid} · runs ${d.runs}/${d.max_concurrent} · ${d.strategy}` +
    ` · last pass ${d.last_pass ? new Date(d.last_pass).toLocaleTimeString() : "-"}` +
    (d.stopping ? " · STOPPING" : "");
}

function renderTasks(tasks) {
  document.getElementById("task-count").textContent = tasks.length + "";
  const rows = tasks.map((t) => el("tr", { "data-task": t.name, "data-phase": t.phase },
    el("td", {}, t.name, t.kind !== "service" ? el("small", {}, " " + t.kind) : ""),
    el("td", {}, badge(t.phase)),
    el("td", {}, t.arm || "-"),
    el("td", { class: "num" }, t.run_id ? runLink(t.run_id, ago(t.run_age)) : "-"),
    el("td", { class: "num opt" }, t.runs),
    el("td", { class: "num opt" }, t.restarts),
    el("td", {}, t.next_fire ? until(t.next_fire) : "-"),
    el("td", { class: "reason" }, t.reason || ""),
    ...(TASK_ACTIONS.length ? [el("td", { class: "act" }, ...actionButtons(t.name, TASK_ACTIONS))] : [])));
  replaceRows(document.querySelector("#tasks tbody"), rows);
}

function spark(points) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 100 20");
  svg.setAttribute("preserveAspectRatio", "none");
  if (points && points.length > 1) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    const step = 100 / (points.length - 1);
    line.setAttribute("points", points.map((p, i) => `${(i * step).toFixed(1)},${(19 - p * 18).toFixed(1)}`).join(" "));
    svg.append(line);
  }
  return svg;
}

function renderPools(pools, sparks) {
  const cards = pools.map((p) => {
    const limit = p.limit || 0;
    const usedPct = limit > 0 ? Math.min(100, (100 * p.used) / limit) : 0;
    const resPct = limit > 0 ? Math.min(100 - usedPct, (100 * p.reserved) / limit) : 0;
    const used = el("div", { class: "used" });
    used.style.width = usedPct + "%";
    const reserved = el("div", { class: "reserved" });
    reserved.style.left = usedPct + "%";
    reserved.style.width = resPct + "%";
    const share = usedPct + resPct;
    const bar = el("div", { class: "bar" + (share >= 100 ? " full" : share >= 80 ? " hot" : ""),
      title: `${fmt(p.used)} used + ${fmt(p.reserved)} reserved of ${fmt(limit)} ${p.unit}` }, used, reserved);
    const card = el("div", { class: "pool", "data-pool": p.name },
      el("div", { class: "head" }, el("strong", {}, p.name),
        el("span", {}, `${fmt(p.used)} + ${fmt(p.reserved)} / ${fmt(limit)} ${p.unit}`)),
      bar,
      el("div", { class: "meta" },
        (p.resets_at ? "window resets " + until(p.resets_at) : "no window") +
        (p.scarcity == null ? " · exhausted" : ` · scarcity ×${p.scarcity.toFixed(2)}`)),
      spark((sparks || {})[p.name]));
    if (p.limited_until) {
      card.append(el("div", { class: "hold" },
        `held until ${new Date(p.limited_until).toLocaleTimeString()} (${until(p.limited_until)}): ${p.limited_reason || "limited"}`,
        ...actionButtons(p.name, offered.filter((a) => POOL_ACTIONS.includes(a)))));
    }
    return card;
  });
  document.getElementById("pools").replaceChildren(...cards);
}

function qualityText(byType) {
  const parts = Object.entries(byType || {}).map(([type, q]) => `${type} ${q.ema.toFixed(2)} (${q.n})`);
  return parts.join(" · ") || "-";
}

function renderArms(arms, quality) {
  const rows = arms.map((a) => {
    let why = "yes";
    if (a.health === "disabled") why = "disabled";
    else if (a.limited_until) why = "limited until " + new Date(a.limited_until).toLocaleTimeString();
    else if (a.limited_pools && a.limited_pools.length) why = "pool held: " + a.limited_pools.join(", ");
    else if (a.backoff_until) why = "resting " + until(a.backoff_until);
    else if (a.health !== "ok") why = a.health;
    return el("tr", { "data-arm": a.name },
      el("td", {}, a.name, el("small", {}, ` ${a.cli}${a.model ? " " + a.model : ""}`)),
      el("td", {}, badge(a.health)),
      el("td", { class: "num" }, a.running),
      el("td", { class: "num opt" }, a.success_rate == null ? "-" : Math.round(100 * a.success_rate) + "%"),
      el("td", { class: "opt" }, qualityText(quality[a.name])),
      el("td", { class: "opt" }, a.pools.join(", ") || "-"),
      el("td", { class: "reason" }, why));
  });
  replaceRows(document.querySelector("#arms tbody"), rows);
}

function runLink(id, text) {
  return el("a", { class: "run", "data-run-link": id, onclick: () => followLog(id) }, text || id);
}

function renderRuns(runs) {
  const rows = runs.map((r) => el("tr", { "data-run": r.id },
    el("td", {}, runLink(r.id)),
    el("td", {}, r.task),
    el("td", { class: "opt" }, r.arm),
    el("td", {}, badge(r.outcome || r.state)),
    el("td", { class: "num" }, ago(r.duration)),
    el("td", { class: "num opt" }, r.tokens ? fmt(r.tokens) : "-"),
    el("td", { class: "num opt" }, r.cost_usd ? "$" + r.cost_usd.toFixed(4) : "-"),
    el("td", { class: "reason" }, r.reason)));
  replaceRows(document.querySelector("#runs tbody"), rows);
}

function decisionItem(d) {
  const ranking = el("table", {},
    el("tr", {}, ...["#", "arm", "score", "fit", "thru", "lat", "cons", "cost", "scarcity"].map((h) => el("th", {}, h))),
    ...d.ranking.map((r) => {
      const c = r.components || {};
      return el("tr", {}, el("td", {}, r.rank), el("td", {}, r.arm), el("td", {}, fmt(r.score)),
        ...["task_fit", "throughput", "latency", "consumption", "effective_cost", "scarcity"]
          .map((k) => el("td", {}, typeof c[k] === "number" ? c[k].toFixed(3) : "-")));
    }));
  const rejected = el("ul", {}, ...(d.rejections || []).map((r) =>
    el("li", {}, `${r.arm}: ${r.reason}: ${r.detail}`)));
  return el("li", { "data-decision": d.seq, "data-task": d.task },
    el("div", {}, el("strong", {}, d.task), " → ", d.arm ? badge("ok") : badge("blocked"), " ",
      d.arm || "no arm", el("small", {}, ` ${d.strategy} · ${new Date(d.at).toLocaleTimeString()}` +
        (d.degraded ? " · degraded" : ""))),
    el("div", { class: "why" }, d.rationale),
    el("details", {}, el("summary", {}, "ranking and rejections"), ranking,
      d.ranked_more ? el("small", {}, `and ${d.ranked_more} more`) : "", rejected));
}

function renderDecisions(list, reset) {
  const ol = document.getElementById("decisions");
  if (reset) ol.replaceChildren();
  for (const d of list) ol.prepend(decisionItem(d));
  while (ol.children.length > KEEP_DECISIONS) ol.lastChild.remove();
}

let logSource = null;
function followLog(id) {
  if (logSource) logSource.close();
  const pre = document.getElementById("log-text");
  document.getElementById("log-run").textContent = id + " (following)";
  pre.dataset.run = id;
  pre.textContent = "";
  logSource = new EventSource("/api/runs/" + encodeURIComponent(id) + "/log/stream");
  const add = (text, replace) => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = replace ? text : pre.textContent + text;
    if (pre.textContent.length > KEEP_LOG) pre.textContent = pre.textContent.slice(-KEEP_LOG);
    if (atBottom || replace) pre.scrollTop = pre.scrollHeight;
  };
  logSource.addEventListener("tail", (e) => add(e.data, true));
  logSource.addEventListener("append", (e) => add(e.data, false));
  logSource.addEventListener("gone", (e) => { add("\n[" + e.data + "]\n", false); logSource.close(); });
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.onopen = () => { live.className = "dot on"; live.textContent = "live"; };
  source.onerror = () => { live.className = "dot off"; live.textContent = "reconnecting"; };
  source.addEventListener("status", (e) => {
    const s = JSON.parse(e.data);
    renderDaemon(s.daemon);
    renderTasks(s.tasks);
    renderPools(s.pools, s.sparklines);
    renderArms(s.arms, s.quality || {});
  });
  source.addEventListener("runs", (e) => renderRuns(JSON.parse(e.data)));
  source.addEventListener("decisions-reset", (e) => renderDecisions(JSON.parse(e.data), true));
  source.addEventListener("decisions", (e) => renderDecisions(JSON.parse(e.data), false));
}

if (!TASK_ACTIONS.length) document.querySelectorAll("th.act").forEach((n) => n.remove());
connect();
