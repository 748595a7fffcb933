// The dashboard app: one page per URL (/run/ID, /run/ID/rollouts, ...), data from /api/..., live
// updates by polling. Untrusted text (prompts, responses, gold answers, reward messages, run names)
// only ever goes into the page through textContent / text nodes: it renders as text, never as markup.
(function () {
"use strict";

const POLL_MS = 2000;
const { renderChart, fmt } = window.Charts;

// ------------------------------------------------------------------ DOM helpers
function h(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "href") e.setAttribute("href", safeHref(v));
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}
// links are built here from ids and numbers; anything else (a javascript: URL) is refused
function safeHref(v) { return typeof v === "string" && v.startsWith("/") && !v.startsWith("//") ? v : "#"; }
function link(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return path + (s ? `?${s}` : "");
}
const runPath = (id, page) => `/run/${encodeURIComponent(id)}${page ? `/${page}` : ""}`;
const api = (id, what) => `/api/run/${encodeURIComponent(id)}/${what}`;
const main = () => document.getElementById("main");
let prefetch = null;  // the overview's first metrics request, sent while the header loads

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok || body === null) {
    const msg = body && body.error ? body.error : `${r.status} ${r.statusText}`;
    throw new Error(msg);
  }
  return body;
}

function message(text, kind) { return h("div", { class: `msg ${kind || "error"}`, text }); }
function showError(where, err) { where.textContent = ""; where.appendChild(message(String(err.message || err))); }
function num(v, digits) { return v === null || v === undefined ? "–" : (digits !== undefined ? Number(v).toFixed(digits) : fmt(v)); }
function params() { return new URLSearchParams(location.search); }
function setParams(obj) {
  const q = params();
  for (const [k, v] of Object.entries(obj)) { if (v === null || v === undefined || v === "") q.delete(k); else q.set(k, v); }
  q.delete("token");
  history.replaceState(null, "", `${location.pathname}${q.toString() ? "?" + q : ""}`);
}

// what histograms.js (window.Histograms) draws with: this file's helpers
const ui = () => ({ h, link, runPath, api, getJSON, message, showError, num, fmt, params, setParams, liveInfo });

function statusBadges(components) {
  return Object.entries(components || {}).map(([name, c]) =>
    h("span", { class: `badge st-${c.status}`, title: c.detail || "" }, `${name} ${c.status === "ok" ? fmt(c.value) : c.status}`));
}

// ------------------------------------------------------------------ header, live status
let runs = null;
async function header(runId, page) {
  const nav = document.getElementById("nav");
  nav.textContent = "";
  nav.appendChild(h("a", { href: "/", class: "brand" }, "unigrpo"));
  if (!runs) runs = await getJSON("/api/runs");
  if (runId) {
    const sel = h("select", { id: "run-picker", "aria-label": "run",
      onchange: (e) => { location.href = runPath(e.target.value, page === "overview" ? "" : page); } });
    for (const r of runs.runs) {
      const o = h("option", { value: r.id }, r.id);
      if (r.id === runId) o.selected = true;
      sel.appendChild(o);
    }
    nav.appendChild(sel);
    const pages = [["overview", ""], ["rollouts", "rollouts"], ["histograms", "histograms"], ["group", "group"], ["replay", "replay"],
                   ["images", "images"], ["failures", "failures"]];
    for (const [name, p] of pages) nav.appendChild(h("a", { href: runPath(runId, p), class: page === name ? "active" : "" }, name));
  }
  nav.appendChild(h("a", { href: link("/compare", { runs: runId ? runId : runs.runs.map((r) => r.id).join(",") }),
                            class: page === "compare" ? "active" : "" }, "compare"));
  nav.appendChild(h("span", { id: "live", class: "live" }, ""));
}

// polls the run's info; calls onChange(info) when the last step or the store changed
function liveInfo(runId, onChange) {
  let last = null;
  const banner = document.getElementById("banner");
  async function tick() {
    try {
      const info = await getJSON(api(runId, "info"));
      const key = `${info.last_step}/${info.store.rollouts}/${info.store.partitions}/${info.problems.length}`;
      const live = document.getElementById("live");
      if (live) live.textContent = `live · step ${info.last_step ?? "–"} · ${info.store.rollouts} rollouts` +
        (info.store.pending ? ` · indexing ${info.store.pending} partitions` : "") + (info.finished ? " · finished" : "");
      banner.textContent = "";
      for (const p of info.problems) banner.appendChild(message(p, "warn"));
      if (key !== last) { last = key; await onChange(info); }
    } catch (err) {
      banner.textContent = "";
      banner.appendChild(message(`cannot reach the dashboard server: ${err.message}`));
    }
  }
  tick();
  return setInterval(tick, POLL_MS);
}

// ------------------------------------------------------------------ overview
// fn runs after the browser has painted the current frame (requestAnimationFrame fires before the
// paint; a task queued from it runs after)
function afterPaint(fn) { requestAnimationFrame(() => setTimeout(fn, 0)); }
// performance marks, once per page load: `unigrpo:first-chart` in the frame that paints the overview's
// first chart, `unigrpo:all-charts` when the last is drawn; startTime is milliseconds since navigation
// start (benchmarks/dashboard.py reads them)
function markOnce(name) { if (!performance.getEntriesByName(name).length) performance.mark(name); }

const STATUS_COLORS = { ok: "#1a7f37", timeout: "#9a6700", error: "#d1242f", unparsable: "#8250df" };

function overviewCharts(data, opts) {
  const S = data.series;
  const xs = opts.x === "wall" ? data.wall : data.step;
  const has = (k) => S[k] && S[k].some((v) => v !== null);
  const line = (k, label, extra) => has(k) ? [{ label: label || k, x: xs, y: S[k], ...(extra || {}) }] : [];
  const charts = [];
  const used = new Set(["step"]);
  const use = (...keys) => keys.forEach((k) => used.add(k));
  const comps = [...new Set(Object.keys(S).filter((k) => /^reward\/[^/]+\/mean$/.test(k)).map((k) => k.split("/")[1]))];

  // rewards: mean with a +-std band, and every component
  if (has("reward/mean")) {
    const m = S["reward/mean"], sd = S["reward/std"] || m.map(() => null);
    charts.push({ title: "reward (mean ± std) and components", kind: "line", series: [
      { label: "reward/mean", x: xs, y: m, lo: m.map((v, i) => v === null || sd[i] === null ? null : v - sd[i]),
        hi: m.map((v, i) => v === null || sd[i] === null ? null : v + sd[i]) },
      ...comps.flatMap((c) => line(`reward/${c}/mean`, `${c} (component)`, { dash: true }))] });
    use("reward/mean", "reward/std", ...comps.map((c) => `reward/${c}/mean`));
  }
  // per-component status counts, stacked
  for (const c of comps) {
    const bad = ["timeout", "error", "unparsable"];
    const total = S["rollouts"] || null;
    const counts = bad.map((s) => S[`reward/${c}/${s}`] || xs.map(() => 0));
    const ok = xs.map((_, i) => total && total[i] !== null ? Math.max(0, total[i] - counts.reduce((a, s) => a + (s[i] || 0), 0)) : null);
    charts.push({ title: `${c}: reward status per step`, kind: "stack-bar", series: [
      { label: "ok", x: xs, y: ok, color: STATUS_COLORS.ok },
      ...bad.map((s, j) => ({ label: s, x: xs, y: counts[j], color: STATUS_COLORS[s] }))] });
    use(...bad.map((s) => `reward/${c}/${s}`));
  }
  const acc = [...line("reward/math/mean", "math correctness (accuracy)"),
               ...Object.keys(S).filter((k) => /^eval\/.*(acc|accuracy|correct)/.test(k)).flatMap((k) => line(k))];
  if (acc.length) charts.push({ title: "accuracy", kind: "line", series: acc });
  if (has("adv/zero_variance_groups")) {
    charts.push({ title: "zero-variance groups (no learning signal)", kind: "line",
                  series: [...line("adv/zero_variance_groups", "zero-variance"), ...line("adv/groups", "groups", { dash: true })] });
    use("adv/zero_variance_groups", "adv/groups");
  }
  const learner = [["learner loss", ["learner/loss", "learner/policy_loss"]], ["KL to reference", ["learner/kl"]],
                   ["clip fraction (low / high)", ["learner/clip_frac_low", "learner/clip_frac_high"]],
                   ["importance ratio max", ["learner/ratio_max"], true], ["entropy", ["learner/entropy"]]];
  for (const [title, keys, logY] of learner) {
    const ss = keys.flatMap((k) => line(k));
    if (ss.length) charts.push({ title, kind: "line", series: ss, logY: !!logY });
    use(...keys);
  }
  // response length: characters from the metrics, tokens from the rollout store
  const rs = data.rollout_steps || [];
  const tokX = opts.x === "wall" ? null : rs.map((r) => r.step);
  const lenSeries = [...line("response/len_mean", "characters per response")];
  if (tokX && rs.length) lenSeries.push({ label: "tokens per response (store)", x: tokX, y: rs.map((r) => r.rollouts ? r.tokens / r.rollouts : null), dash: true });
  if (lenSeries.length) charts.push({ title: "response length", kind: "line", series: lenSeries });
  use("response/len_mean");
  // step time: wall time per phase stacked, compute measured inside the actors dashed on top
  const phases = Object.keys(S).filter((k) => /^time\/.+_s$/.test(k) && !/(step_s|_compute_s|_decode_s)$/.test(k));
  if (phases.length) {
    charts.push({ title: "step time (s): phases stacked; dashed: compute inside the actors, and the step's wall time",
                  kind: "stack-area", series: phases.map((k) => ({ label: k.slice(5, -2), x: xs, y: S[k].map((v) => v ?? 0) })),
                  overlay: [...Object.keys(S).filter((k) => /_(compute|decode)_s$/.test(k)).flatMap((k) => line(k, k.slice(5, -2))),
                            ...line("time/step_s", "step wall", { dash: false, color: "#000" })] });
    use(...phases, ...Object.keys(S).filter((k) => k.startsWith("time/")));
  }
  // where each actor group waits (1 - its compute / the step's wall time), and asynchronous rollouts' staleness
  const groups = ["rollout", "learner", "reward"];
  const idle = groups.flatMap((g) => line(`time/idle/${g}`, `${g} idle share`));
  if (idle.length) charts.push({ title: "idle share of each actor group (1 - its compute / step wall time)", kind: "line",
                                 series: idle, canLog: false, raw: true });
  use(...groups.map((g) => `time/idle/${g}`));
  const lags = Object.keys(S).filter((k) => /^async\/lag_\d+$/.test(k)).sort();
  if (lags.length) {
    charts.push({ title: "asynchronous rollouts: records per staleness (versions behind the learner), dropped", kind: "stack-bar",
                  series: [...lags.map((k) => ({ label: `${k.slice(10)} behind`, x: xs, y: S[k].map((v) => v ?? 0) })),
                           ...line("async/dropped", "dropped", { color: STATUS_COLORS.error })] });
    charts.push({ title: "effective sample size of the importance weights (share of tokens)", kind: "line",
                  series: line("learner/ess_fraction", "ESS / tokens"), canLog: false, raw: true });
    use(...lags, "async/dropped", "learner/ess_fraction");
  }
  const tput = [...line("throughput/rollouts_per_s", "rollouts/s"), ...line("throughput/tokens_per_s", "tokens/s")];
  if (!has("throughput/tokens_per_s") && tokX && has("time/step_s")) {
    const stepTime = new Map(data.step.map((s, i) => [s, S["time/step_s"][i]]));
    tput.push({ label: "tokens/s (store)", x: tokX, y: rs.map((r) => stepTime.get(r.step) ? r.tokens / stepTime.get(r.step) : null) });
  }
  if (tput.length) charts.push({ title: "throughput", kind: "line", series: tput, logY: false });
  use("throughput/rollouts_per_s", "throughput/tokens_per_s");
  const ver = [];
  if (tokX && rs.length) ver.push({ label: "rollouts sampled from version", x: tokX, y: rs.map((r) => r.version_max) });
  ver.push(...line("policy_version", "policy version after the step", { dash: true }));
  if (ver.length) charts.push({ title: "policy version", kind: "line", series: ver, canLog: false, raw: true });
  use("policy_version");
  charts.push(...window.Histograms.flagCharts(rs, tokX));  // histograms.js: flagged share per step
  // everything else, grouped by prefix: new metrics show up without a dashboard change
  const rest = Object.keys(S).filter((k) => !used.has(k) && has(k) && !k.startsWith("span/")).sort();  // span/*: timeline.js
  return { charts, rest: rest.map((k) => ({ title: k, kind: "line", series: line(k) })) };
}

async function overview(runId) {
  const q = params();
  const opts = { smooth: parseFloat(q.get("smooth") ?? "0.6"), x: q.get("x") || "step" };
  const root = main();
  root.textContent = "";
  const controls = h("div", { class: "controls" },
    h("label", {}, "smoothing ", h("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: opts.smooth, id: "smooth",
      oninput: (e) => { opts.smooth = parseFloat(e.target.value); setParams({ smooth: e.target.value }); draw(); } })),
    h("label", {}, " x: ", (() => {
      const s = h("select", { id: "xmode", onchange: (e) => { opts.x = e.target.value; setParams({ x: e.target.value }); draw(); } },
        h("option", { value: "step" }, "step"), h("option", { value: "wall" }, "wall time"));
      s.value = opts.x;
      return s;
    })()));
  const summary = h("div", { id: "run-summary", class: "summary" });
  const grid = h("div", { id: "charts", class: "grid" });
  const more = h("details", { id: "more" }, h("summary", {}, "all other metrics"), h("div", { class: "grid", id: "more-charts" }));
  root.append(controls, summary, grid, more);
  if (window.Tokens) window.Tokens.overview(root, { runId, h, getJSON, api, renderChart });  // tokens.js: mismatch chart
  if (window.Timeline) window.Timeline.overview(root, { runId, h, getJSON, api });  // timeline.js: phases per group
  more.addEventListener("toggle", () => draw());

  let data = null;
  let drawing = 0;  // each draw() has a number; the chunks of an older one stop when a newer one starts
  // The first chart (reward) is drawn at once and painted; the others follow in ~12 ms chunks, one per
  // frame, so the page shows a chart as soon as the metrics arrive instead of after every chart is drawn.
  function draw() {
    if (!data) return;
    const gen = ++drawing;
    if (!data.step.length) { grid.textContent = ""; grid.appendChild(message("no steps logged yet: charts appear with the first step", "info")); return; }
    const { charts, rest } = overviewCharts(data, opts);
    grid.textContent = "";
    delete grid.dataset.drawn;
    const boxes = charts.map(() => grid.appendChild(h("div", { class: "chart-box" })));  // the final layout, still empty
    const render = (i) => renderChart(boxes[i], { ...charts[i], smoothing: charts[i].kind === "line" && !charts[i].raw ? opts.smooth : 0, xMode: opts.x });
    let next = 1;
    const chunk = () => {  // at least one chart, then more while under 12 ms
      if (gen !== drawing) return;
      const t0 = performance.now();
      do render(next++); while (next < boxes.length && performance.now() - t0 < 12);
      if (next < boxes.length) afterPaint(chunk); else drawRest(rest);
    };
    if (!boxes.length) return drawRest(rest);
    render(0);
    requestAnimationFrame(() => markOnce("unigrpo:first-chart"));  // the frame that paints the first chart
    if (boxes.length > 1) afterPaint(chunk); else drawRest(rest);
  }
  function drawRest(rest) {  // after the last chunk: the note on buckets, the other metrics if open
    const mc = document.getElementById("more-charts");
    mc.textContent = "";
    if (data.downsampled) grid.prepend(message(`${data.count} steps, shown as ${data.step.length} buckets (mean per bucket)`, "info"));
    if (more.open) {  // drawn when opened
      for (const spec of rest) {
        const box = h("div", { class: "chart-box small" });
        mc.appendChild(box);
        renderChart(box, { ...spec, smoothing: opts.smooth, xMode: opts.x });
      }
    }
    grid.dataset.drawn = "all";  // every chart is in (the browser tests wait for this)
    markOnce("unigrpo:all-charts");
  }
  async function load() {
    const url = data ? link(api(runId, "metrics"), { epoch: data.epoch, since: data.count }) : api(runId, "metrics");
    const early = data ? null : await prefetch;
    prefetch = null;
    const fresh = early || await getJSON(url);
    if (data && fresh.append) {
      data.step.push(...fresh.step);
      data.wall.push(...fresh.wall);
      const n0 = data.count;
      for (const k of Object.keys(fresh.series)) {
        if (!data.series[k]) data.series[k] = new Array(n0).fill(null);
        data.series[k].push(...fresh.series[k]);
      }
      for (const k of Object.keys(data.series)) if (!fresh.series[k]) data.series[k].push(...new Array(fresh.step.length).fill(null));
      data.count = fresh.count;
      data.epoch = fresh.epoch;
      if (fresh.rollout_steps.length) data.rollout_steps = fresh.rollout_steps;
    } else {
      data = fresh;
    }
    if (fresh.append && !fresh.step.length) return;
    draw();
  }
  let lastStore = null;
  const first = load().catch((err) => showError(grid, err));  // in parallel with the first info poll
  liveInfo(runId, async (info) => {
    renderSummary(summary, info);
    await first;
    try {
      if (lastStore === null) { lastStore = info.store.rollouts; return; }
      if (info.store.rollouts !== lastStore && data) { data = null; }  // refetch with the store's step stats
      lastStore = info.store.rollouts;
      await load();
    } catch (err) { showError(grid, err); }
  });
  window.addEventListener("resize", () => draw());
}

function renderSummary(box, info) {
  box.textContent = "";
  const last = info.last || {};
  box.append(
    h("span", {}, h("b", {}, info.name), ` · ${info.path}`),
    h("span", {}, `steps ${info.last_step ?? "–"}`),
    h("span", {}, `reward ${num(last["reward/mean"])}`),
    h("span", {}, `rollouts ${info.store.rollouts}`),
    h("span", {}, `checkpoints: ${info.checkpoints.join(", ") || "none"}`),
    h("span", {}, info.finished ? `finished (${num(info.summary && info.summary.wall_s)} s)` : "running or stopped"));
  if (info.config) box.appendChild(h("details", {}, h("summary", {}, "config.yaml"), h("pre", { text: info.config })));
}

// ------------------------------------------------------------------ rollouts table
const FILTERS = ["step_min", "step_max", "task", "reward_min", "reward_max", "status", "q", "sort", "order", ...window.Histograms.FILTERS];

async function rolloutsPage(runId) {
  const root = main();
  root.textContent = "";
  const q = params();
  const form = h("form", { id: "filters", class: "controls" });
  const input = (name, label, type, width) => h("label", {}, `${label} `,
    h("input", { name, type: type || "text", value: q.get(name) || "", size: width || 6 }));
  const taskSel = h("select", { name: "task" }, h("option", { value: "" }, "any task"));
  const statusSel = h("select", { name: "status" }, h("option", { value: "" }, "any status"));
  const sortSel = h("select", { name: "sort" }, ...["step", "reward", "advantage", "tokens", "length", "nfe", "gen_s", "version"].map((s) => h("option", { value: s }, s)));
  const more = window.Histograms.rolloutFilters(q, ui());  // version, worker, flag; a histogram bar's range
  const orderSel = h("select", { name: "order" }, h("option", { value: "desc" }, "desc"), h("option", { value: "asc" }, "asc"));
  sortSel.value = q.get("sort") || "step";
  orderSel.value = q.get("order") || "desc";
  form.append(input("step_min", "steps"), input("step_max", "–"), taskSel, input("reward_min", "reward"),
              input("reward_max", "–"), statusSel, ...more.elements, input("q", "search", "search", 18),
              h("label", {}, "sort ", sortSel, orderSel), h("button", { type: "submit" }, "apply"));
  const status = h("div", { id: "table-status", class: "muted" });
  const table = h("div", { id: "table" });
  const pager = h("div", { class: "pager" });
  root.append(form, status, table, pager);
  let offset = parseInt(q.get("offset") || "0", 10);
  let beforeStep = q.get("before_step");
  const limit = 50;
  let infoSeen = null;

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    offset = 0; beforeStep = null;
    const fd = new FormData(form);
    const obj = { offset: null, before_step: null };
    for (const k of FILTERS) obj[k] = fd.get(k);
    if (obj.sort === "step") obj.sort = null;
    if (obj.order === "desc") obj.order = null;
    setParams(obj);
    load();
  });

  async function load() {
    const qp = params();
    const query = {};
    for (const k of FILTERS) if (qp.get(k)) query[k] = qp.get(k);
    query.offset = offset; query.limit = limit;
    if (beforeStep) query.before_step = beforeStep;
    status.textContent = "loading…";
    let data;
    try { data = await getJSON(link(api(runId, "rollouts"), query)); } catch (err) { status.textContent = ""; showError(table, err); return; }
    table.textContent = "";
    const t = h("table", { class: "rollouts" }, h("thead", {}, h("tr", {},
      ...["step", "group", "#", "task", "prompt", "response", "gold", "reward", "adv", "status", "tokens", "ver", ...window.Histograms.ROLLOUT_COLUMNS, ""].map((c) => h("th", {}, c)))));
    const body = h("tbody", {});
    for (const r of data.rows) {
      body.appendChild(h("tr", {},
        h("td", {}, String(r.step)),
        h("td", {}, h("a", { href: link(runPath(runId, "group"), { step: r.step, group: r.group, gi: r.gi }) }, String(r.group))),
        h("td", {}, String(r.gi)), h("td", {}, r.task || ""),
        h("td", { class: "text" }, r.prompt), h("td", { class: "text" }, r.image ? "[image]" : r.response),
        h("td", { class: "text" }, r.gold), h("td", { class: "num" }, num(r.reward)), h("td", { class: "num" }, num(r.advantage)),
        h("td", {}, statusBadges(r.components)), h("td", { class: "num" }, String(r.tokens)),
        window.Histograms.versionCell(h("td", { class: "num" }, String(r.version)), r.version), ...window.Histograms.rolloutCells(r, ui()),
        h("td", {}, h("a", { href: link(runPath(runId, "replay"), { step: r.step, group: r.group, gi: r.gi }) }, "replay"))));
    }
    t.appendChild(body);
    table.appendChild(data.rows.length ? t : message("no rollouts match these filters", "info"));
    pager.textContent = "";
    if (data.search) {
      const s = data.search;
      status.textContent = `${data.rows.length} matches, newest first; searched down to step ${s.scanned_down_to_step ?? "–"}` +
        (s.complete ? " (all steps searched)" : " (search goes on in older steps)");
      if (!s.complete) pager.appendChild(h("button", { id: "older", onclick: () => { beforeStep = s.next_before_step; setParams({ before_step: beforeStep }); load(); } }, "search older steps"));
    } else {
      status.textContent = data.total ? `rows ${offset + 1}–${offset + data.rows.length} of ${data.total}` : "";
      if (offset > 0) pager.appendChild(h("button", { id: "prev", onclick: () => { offset = Math.max(0, offset - limit); setParams({ offset }); load(); } }, "← newer"));
      if (offset + limit < data.total) pager.appendChild(h("button", { id: "next", onclick: () => { offset += limit; setParams({ offset }); load(); } }, "older →"));
    }
  }
  liveInfo(runId, async (info) => {
    const opts = (sel, values, cur) => {
      const keep = sel.firstChild;
      sel.textContent = ""; sel.appendChild(keep);
      for (const v of values) sel.appendChild(h("option", { value: v }, v));
      sel.value = cur || "";
    };
    opts(taskSel, info.store.tasks, q.get("task"));
    more.update(info);
    opts(statusSel, ["any:failed", ...info.store.components.flatMap((c) => ["ok", "timeout", "error", "unparsable"].map((s) => `${c}:${s}`))], q.get("status"));
    // the newest page follows the run; other pages stay where the user put them
    if (infoSeen === null || (offset === 0 && !params().get("q") && (params().get("sort") || "step") === "step")) await load();
    infoSeen = info;
  });
}

// ------------------------------------------------------------------ group view
async function groupPage(runId) {
  const root = main();
  const q = params();
  root.textContent = "";
  if (!q.get("step") || !q.get("group")) {
    root.appendChild(message("pick a group: open one from the rollouts table (the group column), or give ?step=N&group=K", "info"));
    const latest = await getJSON(link(api(runId, "rollouts"), { limit: 1 }));
    if (latest.rows.length) root.appendChild(h("a", { href: link(runPath(runId, "group"), { step: latest.rows[0].step, group: latest.rows[0].group }) }, "the newest group"));
    liveInfo(runId, () => {});
    return;
  }
  liveInfo(runId, () => {});
  let g;
  try { g = await getJSON(link(api(runId, "group"), { step: q.get("step"), group: q.get("group") })); } catch (err) { showError(root, err); return; }
  const spread = g.best !== g.worst;
  root.append(
    h("div", { class: "group-head" },
      h("div", {}, h("b", {}, `step ${g.step} · group ${g.group}`), ` · task ${g.task || "–"} · prompt id `, h("code", {}, g.prompt_id || "–"),
        ` · reward mean ${num(g.reward_mean)} ± ${num(g.reward_std)} · ${g.responses.length} responses`),
      h("div", { class: "prompt" }, h("span", { class: "label" }, "prompt"), h("pre", { id: "prompt-text", text: g.prompt })),
      h("div", {}, h("span", { class: "label" }, "gold answer "), h("code", { id: "gold" }, g.gold ?? "–")),
      h("div", { class: "links" },
        h("a", { href: link(runPath(runId, "group"), { step: g.step, group: g.group - 1 }) }, "← previous group"), " ",
        h("a", { href: link(runPath(runId, "group"), { step: g.step, group: g.group + 1 }) }, "next group →"), " ",
        h("a", { href: link("/compare", { runs: runId, prompt_id: g.prompt_id }) }, "this prompt across steps and runs")),
      spread ? null : message("every response scored the same: a zero-variance group (advantage 0, no learning signal)", "info")));
  const cards = h("div", { class: "cards", id: "responses" });
  const pick = q.get("gi");
  for (const r of g.responses) {
    const mark = spread && r.reward === g.best ? "best" : spread && r.reward === g.worst ? "worst" : "";
    const card = h("div", { class: `card response ${mark} ${String(r.gi) === pick ? "picked" : ""}`, "data-gi": r.gi },
      h("div", { class: "card-head" }, h("b", {}, `#${r.gi}`), mark ? h("span", { class: `tag ${mark}` }, mark) : null,
        h("span", {}, `reward ${num(r.reward)}`), h("span", {}, `adv ${num(r.advantage)}`),
        h("a", { href: link(runPath(runId, "replay"), { step: g.step, group: g.group, gi: r.gi }) }, "replay")),
      h("div", {}, h("span", { class: "label" }, "extracted "), h("code", { class: "extracted" }, r.extracted ?? "none")),
      h("div", { class: "components" }, ...Object.entries(r.components).map(([name, c]) =>
        h("div", {}, h("span", { class: `badge st-${c.status}` }, `${name}: ${fmt(c.value)} ${c.status}`), c.detail ? h("span", { class: "muted" }, ` ${c.detail}`) : null))),
      r.image ? h("img", { src: link(api(runId, "image"), { step: g.step, group: g.group, gi: r.gi }), alt: "decoded image", class: "thumb" }) : null,
      h("pre", { class: "response-text", text: r.response + (r.truncated ? "\n… (truncated)" : "") }),
      ...window.Histograms.groupExtras(r, ui()));  // histograms.js: length, cost, flags, token diff
    cards.appendChild(card);
  }
  root.appendChild(cards);
}

// ------------------------------------------------------------------ denoising replay
function confColor(c) {
  if (c === null || c === undefined) return "#eee";
  const t = Math.max(0, Math.min(1, c));
  return `hsl(${Math.round(t * 120)}, 70%, ${Math.round(88 - t * 30)}%)`;
}
function codeColor(code) { return `hsl(${(code * 137.508) % 360}, 55%, 55%)`; }

async function replayPage(runId) {
  const root = main();
  const q = params();
  root.textContent = "";
  liveInfo(runId, () => {});
  let step = q.get("step"), group = q.get("group");
  if (!step || !group) {
    const latest = await getJSON(link(api(runId, "rollouts"), { limit: 1 }));
    if (!latest.rows.length) { root.appendChild(message("no rollouts stored yet", "info")); return; }
    step = latest.rows[0].step; group = latest.rows[0].group;
  }
  let t;
  try { t = await getJSON(link(api(runId, "replay"), { step, group, gi: q.get("gi") || 0 })); } catch (err) { showError(root, err); return; }
  const us = t.unmask_step.map((v) => (v === null || v < 0 ? Infinity : v));
  const finite = us.filter(isFinite);
  const K = (finite.length ? Math.max(...finite) : 0) + 1;
  const isImage = Array.isArray(t.image_codes) && t.image_codes.length > 0;
  const n = isImage ? t.image_codes.length : t.response_ids.length;
  const side = isImage ? Math.round(Math.sqrt(n)) : 0;

  const slider = h("input", { type: "range", id: "replay-slider", min: 0, max: K, step: 1, value: K });
  const label = h("span", { id: "replay-label" });
  const play = h("button", { id: "play" }, "▶ play");
  const canvas = h("div", { id: "replay-canvas", class: isImage ? "grid-canvas" : "token-canvas" });
  if (isImage) canvas.style.gridTemplateColumns = `repeat(${side}, 14px)`;
  const cells = [];
  for (let i = 0; i < n; i++) {
    const c = h("span", { class: "tok", "data-pos": i, title: `position ${i} · unmasked at forward ${isFinite(us[i]) ? us[i] : "–"} · confidence ${fmt(t.confidence[i])}` });
    cells.push(c);
    canvas.appendChild(c);
  }
  function show(k) {
    let shown = 0;
    for (let i = 0; i < n; i++) {
      const on = us[i] < k || (k === K && !isFinite(us[i]));
      const c = cells[i];
      c.classList.toggle("masked", !on);
      c.classList.toggle("fresh", on && us[i] === k - 1);
      c.classList.toggle("early", on && !!t.early_filled[i]);
      if (isImage) {
        c.style.background = on ? codeColor(t.image_codes[i]) : "#444";
        c.textContent = "";
      } else {
        c.textContent = on ? (t.tokens[i] ?? "") : "[MASK]";
        c.style.background = on ? confColor(t.confidence[i]) : "";
      }
      if (on) shown++;
    }
    label.textContent = `forward ${k} of ${K}: ${shown} of ${n} ${isImage ? "image tokens" : "tokens"} unmasked`;
  }
  slider.addEventListener("input", () => show(parseInt(slider.value, 10)));
  let timer = null;
  play.addEventListener("click", () => {
    if (timer) { clearInterval(timer); timer = null; play.textContent = "▶ play"; return; }
    if (parseInt(slider.value, 10) >= K) slider.value = 0;
    play.textContent = "❚❚ pause";
    timer = setInterval(() => {
      const k = parseInt(slider.value, 10) + 1;
      slider.value = k; show(k);
      if (k >= K) { clearInterval(timer); timer = null; play.textContent = "▶ play"; }
    }, Math.max(60, 1500 / K));
  });

  // confidence heat map by position (image: over the token grid)
  const cols = isImage ? side : Math.min(64, n);
  const rows = Math.ceil(n / Math.max(cols, 1));
  const px = isImage ? 10 : 12;
  const heat = h("canvas", { id: "heatmap", width: cols * px, height: rows * px });
  const ctx = heat.getContext("2d");
  for (let i = 0; i < n; i++) { ctx.fillStyle = confColor(t.confidence[i]); ctx.fillRect((i % cols) * px, Math.floor(i / cols) * px, px - 1, px - 1); }

  root.append(
    h("div", { class: "group-head" },
      h("div", {}, h("b", {}, `step ${t.step} · group ${t.group} · response #${t.gi}`), ` · task ${t.task || "–"} · reward ${num(t.reward)} · `,
        `${t.num_forwards ?? "–"} forwards · sampler ${Object.entries(t.sampler || {}).map(([k, v]) => `${k}=${v}`).join(" ")}`),
      h("div", { class: "prompt" }, h("span", { class: "label" }, "prompt"), h("pre", { text: t.prompt })),
      h("div", { class: "links" }, h("a", { href: link(runPath(runId, "group"), { step: t.step, group: t.group, gi: t.gi }) }, "← the whole group"))),
    h("div", { class: "controls" }, play, slider, label),
    h("div", { class: "replay" }, canvas,
      isImage ? h("img", { src: link(api(runId, "image"), { step: t.step, group: t.group, gi: t.gi }), alt: "decoded image", class: "decoded" }) : null),
    h("div", { class: "heat" }, h("div", { class: "label" }, "confidence by position (red low → green high)"), heat),
    isImage ? h("div", { class: "muted" }, "left: the image-token grid (colour = code id; grey = still masked); right: the decoded image")
      : h("details", {}, h("summary", {}, "final text"), h("pre", { text: t.response_text })));
  show(K);
  if (window.Tokens) window.Tokens.replay(root, { runId, t, h, getJSON, link, api, runPath });  // tokens.js: overlay
}

// ------------------------------------------------------------------ images
async function imagesPage(runId) {
  const root = main();
  const q = params();
  root.textContent = "";
  const form = h("form", { class: "controls" },
    h("label", {}, "steps ", h("input", { name: "step_min", size: 6, value: q.get("step_min") || "" })),
    h("label", {}, "– ", h("input", { name: "step_max", size: 6, value: q.get("step_max") || "" })),
    h("button", { type: "submit" }, "apply"));
  const status = h("div", { class: "muted" });
  const grid = h("div", { class: "image-grid", id: "images" });
  const pager = h("div", { class: "pager" });
  root.append(form, status, grid, pager);
  let offset = parseInt(q.get("offset") || "0", 10);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    offset = 0;
    setParams({ step_min: fd.get("step_min"), step_max: fd.get("step_max"), offset: null });
    load();
  });
  async function load() {
    const qp = params();
    let data;
    try { data = await getJSON(link(api(runId, "images"), { step_min: qp.get("step_min"), step_max: qp.get("step_max"), offset, limit: 48 })); } catch (err) { showError(grid, err); return; }
    grid.textContent = "";
    status.textContent = data.total ? `images ${offset + 1}–${offset + data.rows.length} of ${data.total}` : "";
    if (!data.rows.length) grid.appendChild(message("no image rollouts in this run (text-to-image tasks store a decoded image per rollout)", "info"));
    for (const r of data.rows) {
      grid.appendChild(h("div", { class: "card" },
        h("a", { href: link(runPath(runId, "replay"), { step: r.step, group: r.group, gi: r.gi }) },
          h("img", { src: link(api(runId, "image"), { step: r.step, group: r.group, gi: r.gi }), alt: "decoded image", class: "thumb", loading: "lazy" })),
        h("div", { class: "text" }, r.prompt),
        h("div", {}, `step ${r.step} · reward ${num(r.reward)} `, ...statusBadges(r.components))));
    }
    pager.textContent = "";
    if (offset > 0) pager.appendChild(h("button", { onclick: () => { offset = Math.max(0, offset - 48); setParams({ offset }); load(); } }, "← newer"));
    if (offset + 48 < data.total) pager.appendChild(h("button", { onclick: () => { offset += 48; setParams({ offset }); load(); } }, "older →"));
  }
  liveInfo(runId, () => (offset === 0 ? load() : null));
}

// ------------------------------------------------------------------ failures
async function failuresPage(runId) {
  const root = main();
  const q = params();
  root.textContent = "";
  const sel = h("select", { name: "status", id: "failure-filter" }, h("option", { value: "" }, "every failure"));
  const status = h("div", { class: "muted" });
  const table = h("div", { id: "failures" });
  const pager = h("div", { class: "pager" });
  root.append(h("div", { class: "controls" }, sel), status, table, pager);
  let offset = parseInt(q.get("offset") || "0", 10);
  sel.addEventListener("change", () => { offset = 0; setParams({ status: sel.value, offset: null }); load(); });
  async function load() {
    let data;
    try { data = await getJSON(link(api(runId, "failures"), { status: params().get("status"), offset, limit: 50 })); } catch (err) { showError(table, err); return; }
    table.textContent = "";
    status.textContent = data.total ? `failed reward calls: rollouts ${offset + 1}–${offset + data.rows.length} of ${data.total}` : "";
    if (!data.rows.length) { table.appendChild(message("no reward call timed out, errored or was unparsable", "info")); return; }
    const body = h("tbody", {});
    for (const r of data.rows) {
      for (const [name, c] of Object.entries(r.failed)) {
        body.appendChild(h("tr", {},
          h("td", {}, String(r.step)), h("td", {}, name), h("td", {}, h("span", { class: `badge st-${c.status}` }, c.status)),
          h("td", { class: "text" }, c.detail), h("td", { class: "text" }, r.response),
          h("td", {}, h("a", { href: link(runPath(runId, "group"), { step: r.step, group: r.group, gi: r.gi }) }, `group ${r.group} #${r.gi}`))));
      }
    }
    table.appendChild(h("table", { class: "rollouts" }, h("thead", {}, h("tr", {}, ...["step", "component", "status", "message", "response", "rollout"].map((c) => h("th", {}, c)))), body));
    pager.textContent = "";
    if (offset > 0) pager.appendChild(h("button", { onclick: () => { offset = Math.max(0, offset - 50); setParams({ offset }); load(); } }, "← newer"));
    if (offset + 50 < data.total) pager.appendChild(h("button", { onclick: () => { offset += 50; setParams({ offset }); load(); } }, "older →"));
  }
  liveInfo(runId, (info) => {
    const cur = q.get("status") || "";
    sel.textContent = "";
    sel.appendChild(h("option", { value: "" }, "every failure"));
    for (const c of info.store.components) for (const s of ["timeout", "error", "unparsable"]) sel.appendChild(h("option", { value: `${c}:${s}` }, `${c}: ${s}`));
    sel.value = cur;
    return offset === 0 ? load() : null;
  });
}

// ------------------------------------------------------------------ compare
const COMPARE = [["reward/mean", "reward mean"], ["reward/math/mean", "accuracy (math)"], ["learner/loss", "learner loss"],
                 ["learner/kl", "KL"], ["learner/entropy", "entropy"], ["response/len_mean", "response length (chars)"],
                 ["time/step_s", "step time (s)"], ["throughput/rollouts_per_s", "rollouts/s"]];

async function comparePage() {
  const root = main();
  const q = params();
  root.textContent = "";
  const all = runs.runs.map((r) => r.id);
  let chosen = (q.get("runs") || "").split(",").filter((id) => all.includes(id));
  if (!chosen.length) chosen = all;
  const opts = { smooth: parseFloat(q.get("smooth") ?? "0.6"), x: q.get("x") || "step" };
  const picker = h("div", { class: "controls", id: "compare-runs" }, "runs: ",
    ...all.map((id) => h("label", {}, h("input", { type: "checkbox", value: id, checked: chosen.includes(id) ? "checked" : null,
      onchange: () => { chosen = [...picker.querySelectorAll("input:checked")].map((b) => b.value); setParams({ runs: chosen.join(",") }); load(); } }), ` ${id} `)),
    h("label", {}, " smoothing ", h("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: opts.smooth,
      oninput: (e) => { opts.smooth = parseFloat(e.target.value); setParams({ smooth: e.target.value }); draw(); } })),
    h("label", {}, " x: ", (() => {
      const s = h("select", { onchange: (e) => { opts.x = e.target.value; setParams({ x: e.target.value }); draw(); } },
        h("option", { value: "step" }, "step"), h("option", { value: "wall" }, "wall time"));
      s.value = opts.x; return s; })()));
  const grid = h("div", { class: "grid", id: "compare-charts" });
  const promptForm = h("form", { class: "controls" }, "same prompt across runs and steps: prompt id ",
    h("input", { name: "prompt_id", size: 24, value: q.get("prompt_id") || "" }), h("button", { type: "submit" }, "show"));
  const promptBox = h("div", { id: "prompt-groups" });
  root.append(picker, grid, promptForm, promptBox);
  promptForm.addEventListener("submit", (e) => { e.preventDefault(); setParams({ prompt_id: new FormData(promptForm).get("prompt_id") }); loadPrompt(); });
  const data = {};
  function draw() {
    grid.textContent = "";
    for (const [key, title] of COMPARE) {
      const series = chosen.filter((id) => data[id] && data[id].series[key]).map((id) => ({
        label: id, x: opts.x === "wall" ? data[id].wall : data[id].step, y: data[id].series[key] }));
      if (!series.length) continue;
      const box = h("div", { class: "chart-box" });
      grid.appendChild(box);
      renderChart(box, { title, kind: "line", series, smoothing: opts.smooth, xMode: opts.x });
    }
  }
  async function load() {
    try {
      await Promise.all(chosen.map(async (id) => { data[id] = await getJSON(link(api(id, "metrics"), { keys: COMPARE.map((c) => c[0]).join(",") })); }));
    } catch (err) { showError(grid, err); return; }
    draw();
  }
  async function loadPrompt() {
    const pid = params().get("prompt_id");
    promptBox.textContent = "";
    if (!pid) return;
    let d;
    try { d = await getJSON(link("/api/prompt", { runs: chosen.join(","), prompt_id: pid })); } catch (err) { showError(promptBox, err); return; }
    for (const r of d.runs) {
      const rowsEl = r.groups.map((g) => h("tr", {},
        h("td", {}, String(g.step)), h("td", {}, h("a", { href: link(runPath(r.id, "group"), { step: g.step, group: g.group }) }, `group ${g.group}`)),
        h("td", { class: "num" }, num(g.mean)), h("td", {}, ...g.rewards.map((v) => h("span", { class: "cell", title: fmt(v), style: null }, fmt(v))))));
      promptBox.appendChild(h("div", { class: "card" }, h("b", {}, r.id), r.groups.length ? h("table", { class: "rollouts" },
        h("thead", {}, h("tr", {}, h("th", {}, "step"), h("th", {}, "group"), h("th", {}, "mean"), h("th", {}, "rewards of the G responses"))),
        h("tbody", {}, ...rowsEl)) : message("this prompt does not occur in this run", "info")));
    }
  }
  await load();
  loadPrompt();
  setInterval(load, POLL_MS * 2);
}

// ------------------------------------------------------------------ home: the runs
async function home() {
  runs = await getJSON("/api/runs");
  if (!runs.folders.length && runs.explicit.length === 1) { location.replace(runPath(runs.explicit[0])); return; }
  if (!runs.folders.length && runs.explicit.length > 1) { location.replace(link("/compare", { runs: runs.explicit.join(",") })); return; }
  await header(null, "home");
  const root = main();
  root.textContent = "";
  const body = h("tbody", {});
  for (const r of runs.runs) {
    body.appendChild(h("tr", {}, h("td", {}, h("input", { type: "checkbox", value: r.id, class: "pick" })),
      h("td", {}, h("a", { href: runPath(r.id) }, r.id)), h("td", { class: "num" }, String(r.last_step ?? "–")),
      h("td", { class: "num" }, String(r.rollouts)), h("td", { class: "num" }, num(r.reward)),
      h("td", {}, r.problems ? h("span", { class: "badge st-error" }, `${r.problems} problems`) : "")));
  }
  root.append(
    h("h2", {}, `runs in ${runs.folders.join(", ") || "the given directories"}`),
    runs.runs.length ? h("table", { class: "rollouts", id: "runs" }, h("thead", {}, h("tr", {}, ...["", "run", "steps", "rollouts", "reward", ""].map((c) => h("th", {}, c)))), body)
      : message("no runs here yet: the list updates when one starts", "info"),
    h("button", { id: "compare-selected", onclick: () => {
      const ids = [...document.querySelectorAll("input.pick:checked")].map((b) => b.value);
      location.href = link("/compare", { runs: ids.join(",") });
    } }, "compare selected"));
  setTimeout(() => { if (!document.querySelector("input.pick:checked")) location.reload(); }, 10000);
}

// ------------------------------------------------------------------ router
async function start() {
  const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (!parts.length) return await home();
    if (parts[0] === "compare") { await header(null, "compare"); return await comparePage(); }
    if (parts[0] === "run" && parts[1]) {
      const id = parts[1];
      const page = parts[2] || "overview";
      if (page === "overview") prefetch = getJSON(api(id, "metrics")).catch(() => null);
      const nav = header(id, page);  // the overview does not wait for the run list: its charts come first
      if (page !== "overview") await nav;
      const pages = { overview, rollouts: rolloutsPage, group: groupPage, replay: replayPage, images: imagesPage, failures: failuresPage,
                      histograms: (id) => window.Histograms.page(id, ui()) };
      document.title = `${id} · ${page} · unigrpo`;
      await (pages[page] || overview)(id);
      return await nav;
    }
    main().appendChild(message("unknown page"));
  } catch (err) {
    showError(main(), err);
  }
}
start();
})();
