// Histograms, garbled-output flags, versions / workers and sampler cost (issue #21): the histograms page,
// the overview's flagged-share chart, the rollouts page's version / worker / flag filters and bin chips,
// and the group view's length, cost and token diff. app.js calls these through window.Histograms with its
// helpers (`ui`: h, link, getJSON, ...). Untrusted text (token text, worker names) goes in only through
// textContent; links are built from ids, numbers and the server's own filter values.
(function () {
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4", "#6e7781",
                 "#fb8500", "#219ebc", "#3a0ca3", "#588157"];
const REASONS = { repetition: "repetition", nonprintable: "non-printable", odd_ids: "odd token ids", cut: "cut at length limit" };
const FIELDS = ["reward", "advantage", "length", "tokens", "nfe", "gen_s", "value"];
// what the rollouts page reads from its URL besides its own filters: a bar's range, version, worker, flag
const FILTERS = ["version", "worker", "flag", "component",
                 ...FIELDS.flatMap((f) => ["min", "lt", "max"].map((op) => `${f}_${op}`)).filter((k) => k !== "reward_min" && k !== "reward_max")];
const LABELS = { reward: "reward", advantage: "advantage", length: "response length (tokens before EOS)",
                 tokens: "tokens", nfe: "forwards (NFE)", gen_s: "generation time (s)", value: "value" };

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) if (c) e.appendChild(c);
  return e;
}
function svgText(tag, attrs, text) { const e = svg(tag, attrs); e.textContent = text; return e; }
function versionColor(v) { return v === null || v === undefined || v < 0 ? "#8c959f" : `hsl(${(v * 47) % 360}, 60%, 45%)`; }

// ------------------------------------------------------------------ one histogram as SVG bars
// every bar (or stacked piece) is a link to the rollouts page filtered to exactly its rows
function drawHistogram(ui, runId, hist, base) {
  const W = 420, H = 170, L = 40, B = 28, T = 8, R = 8;
  const bins = hist.bins;
  const box = ui.h("div", { class: "chart-box hist", "data-field": hist.field + (hist.component ? `:${hist.component}` : "") });
  const title = hist.field === "value" ? `${hist.component} (reward component)` : LABELS[hist.field];
  box.appendChild(ui.h("div", { class: "chart-head" }, ui.h("span", { class: "chart-title" }, title),
    ui.h("span", { class: "chart-note" }, `${hist.total} rollouts` + (hist.missing ? ` · ${hist.missing} without a value` : ""))));
  if (!bins.length) { box.appendChild(ui.message("no values in these rollouts", "info")); return box; }
  const top = Math.max(...bins.map((b) => b.count), 1);
  const bw = (W - L - R) / bins.length;
  const y = (c) => T + (H - T - B) * (1 - c / top);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "hist-svg" },
    svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }),
    svgText("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, String(top)),
    svgText("text", { x: L - 4, y: H - B, "text-anchor": "end" }, "0"),
    svgText("text", { x: L, y: H - 8, "text-anchor": "start" }, ui.fmt(bins[0].lo)),
    svgText("text", { x: W - R, y: H - 8, "text-anchor": "end" }, ui.fmt(bins[bins.length - 1].hi)));
  const pieces = hist.series.length ? hist.series : [{ key: null, counts: bins.map((b) => b.count), params: {} }];
  bins.forEach((b, i) => {
    const last = i === bins.length - 1;
    const range = b.params[`${hist.field}_lt`] !== undefined ? `[${ui.fmt(b.lo)}, ${ui.fmt(b.hi)})` : `[${ui.fmt(b.lo)}, ${ui.fmt(b.hi)}]`;
    let below = 0;
    pieces.forEach((s, k) => {
      const c = s.counts[i];
      if (!c) return;
      const href = ui.link(ui.runPath(runId, "rollouts"), { ...base, ...b.params, ...s.params });
      const a = svg("a", { href, class: "bin", "data-count": c, "data-bin": i, "data-key": s.key ?? "" },
        svg("rect", { x: L + i * bw + 1, width: Math.max(1, bw - 2), y: y(below + c), height: y(below) - y(below + c),
                      fill: s.key === null ? "#1f6feb" : (hist.by === "version" ? versionColor(Number(s.key)) : PALETTE[k % PALETTE.length]) }));
      a.appendChild(svgText("title", {}, `${range}${s.key !== null ? ` · ${hist.by} ${s.key}` : ""}: ${c} rollouts${last ? "" : ""} (click: list them)`));
      chart.appendChild(a);
      below += c;
    });
  });
  box.appendChild(chart);
  if (hist.series.length) {
    box.appendChild(ui.h("div", { class: "legend" }, ...hist.series.map((s, k) => ui.h("span", {},
      (() => { const i = ui.h("i", {}); i.style.background = hist.by === "version" ? versionColor(Number(s.key)) : PALETTE[k % PALETTE.length]; return i; })(),
      `${hist.by} ${s.key}`))));
  }
  return box;
}

// ------------------------------------------------------------------ the histograms page
async function page(runId, ui) {
  const root = document.getElementById("main");
  const q = ui.params();
  root.textContent = "";
  const input = (name, label, width) => ui.h("label", {}, `${label} `, ui.h("input", { name, value: q.get(name) || "", size: width || 6 }));
  const taskSel = ui.h("select", { name: "task" }, ui.h("option", { value: "" }, "every task"));
  const bySel = ui.h("select", { name: "by", id: "hist-by" }, ui.h("option", { value: "" }, "no split"),
    ...["version", "worker", "task"].map((b) => ui.h("option", { value: b }, `split by ${b}`)));
  bySel.value = q.get("by") || "";
  const form = ui.h("form", { class: "controls", id: "hist-filters" }, input("step_min", "steps"), input("step_max", "–"),
    taskSel, input("version", "version", 4), input("worker", "worker", 10), bySel, input("bins", "bins", 3),
    ui.h("button", { type: "submit" }, "apply"));
  const note = ui.h("div", { class: "muted" },
    "click a bar to list exactly its rollouts; bins are [lo, hi), the last [lo, hi]");
  const grid = ui.h("div", { id: "histograms" });
  root.append(form, note, grid);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    const obj = {};
    for (const k of ["step_min", "step_max", "task", "version", "worker", "by", "bins"]) obj[k] = fd.get(k);
    ui.setParams(obj);
    load(lastInfo);
  });
  let lastInfo = null;
  async function load(info) {
    if (!info) return;
    const qp = ui.params();
    const base = {};
    for (const k of ["step_min", "step_max", "task", "version", "worker"]) if (qp.get(k)) base[k] = qp.get(k);
    const tasks = base.task ? [base.task] : (info.store.tasks.length > 1 ? info.store.tasks : [null]);
    const panels = [["reward", null], ...info.store.components.map((c) => ["value", c]), ["advantage", null], ["length", null],
                    ["nfe", null], ["gen_s", null]];
    let sections;
    try {
      sections = await Promise.all(tasks.map(async (task) => {
        const f = { ...base, ...(task ? { task } : {}) };
        const hists = await Promise.all(panels.map(([field, comp]) => ui.getJSON(ui.link(ui.api(runId, "histogram"),
          { ...f, field, component: comp, bins: qp.get("bins") || 20, by: qp.get("by") }))));
        return { task, f, hists };
      }));
    } catch (err) { ui.showError(grid, err); return; }
    grid.textContent = "";
    for (const { task, f, hists } of sections) {
      const row = ui.h("div", { class: "grid" });
      for (const hist of hists) if (hist.field !== "value" || hist.bins.length) row.appendChild(drawHistogram(ui, runId, hist, f));
      grid.append(ui.h("h3", { class: "hist-task" }, task ? `task ${task}` : "every task"), row);
    }
  }
  ui.liveInfo(runId, async (info) => {
    const cur = q.get("task") || "";
    taskSel.textContent = "";
    taskSel.appendChild(ui.h("option", { value: "" }, "every task"));
    for (const t of info.store.tasks) taskSel.appendChild(ui.h("option", { value: t }, t));
    taskSel.value = cur;
    lastInfo = info;
    await load(info);
  });
}

// ------------------------------------------------------------------ overview: flagged share per step
function flagCharts(rs, xs) {
  const known = rs.filter((r) => r.flags_known);
  if (!xs || !known.length) return [];
  const x = known.map((r) => r.step);
  const share = (key) => known.map((r) => r[key] / r.flags_known);
  return [{ title: "garbled-output flags: share of rollouts flagged per step (and by reason)", kind: "line", canLog: false, raw: true,
            series: [{ label: "flagged (any reason)", x, y: share("flagged"), color: "#d1242f" },
                     ...Object.entries(REASONS).map(([k, label]) => ({ label, x, y: share(`flag_${k}`), dash: true }))] }];
}

// ------------------------------------------------------------------ rollouts page: filters, chips, cells
// returns {elements, update(info)}: version / worker / flag controls, and the active bar's range as a chip
// (hidden inputs keep it through "apply"; the chip's x drops it)
function rolloutFilters(q, ui) {
  const version = ui.h("label", {}, "version ", ui.h("input", { name: "version", size: 3, value: q.get("version") || "" }));
  const workerSel = ui.h("select", { name: "worker", id: "worker-filter" }, ui.h("option", { value: "" }, "any worker"));
  const flagSel = ui.h("select", { name: "flag", id: "flag-filter" }, ui.h("option", { value: "" }, "flagged or not"),
    ui.h("option", { value: "any" }, "flagged (any reason)"), ui.h("option", { value: "none" }, "not flagged"),
    ...Object.entries(REASONS).map(([k, label]) => ui.h("option", { value: k }, `flagged: ${label}`)));
  flagSel.value = q.get("flag") || "";
  const ranges = FILTERS.filter((k) => /_(min|lt|max)$/.test(k) || k === "component").filter((k) => q.get(k));
  const chips = ui.h("span", { id: "range-chips" });
  for (const f of FIELDS) {
    const lo = q.get(`${f}_min`), lt = q.get(`${f}_lt`), hi = q.get(`${f}_max`);
    if (lo === null && lt === null && hi === null) continue;
    const name = f === "value" ? `${q.get("component") || "?"} value` : f;
    const text = `${name} ∈ ${lo !== null ? "[" + ui.fmt(Number(lo)) : "(-∞"}, ${lt !== null ? ui.fmt(Number(lt)) + ")" : hi !== null ? ui.fmt(Number(hi)) + "]" : "∞)"}`;
    const drop = [`${f}_min`, `${f}_lt`, `${f}_max`, ...(f === "value" ? ["component"] : [])];
    chips.appendChild(ui.h("span", { class: "badge chip" }, text, " ", ui.h("a", { href: "#", class: "chip-x", title: "drop this range",
      onclick: (e) => { e.preventDefault(); const o = {}; for (const k of drop) o[k] = null; ui.setParams(o); location.reload(); } }, "×")));
  }
  const hidden = ranges.map((k) => ui.h("input", { type: "hidden", name: k, value: q.get(k) }));
  return {
    elements: [version, workerSel, flagSel, chips, ...hidden],
    update(info) {
      const cur = q.get("worker") || "";
      workerSel.textContent = "";
      workerSel.appendChild(ui.h("option", { value: "" }, "any worker"));
      for (const w of info.store.workers || []) workerSel.appendChild(ui.h("option", { value: w }, w));
      workerSel.value = cur;
    },
  };
}
const ROLLOUT_COLUMNS = ["worker", "cost", "flags"];
function costText(r, ui) {
  return `${r.nfe ?? "–"} fwd · len ${r.length ?? "–"}` + (r.last_unmask !== null && r.last_unmask !== undefined ? ` · last unmask ${r.last_unmask}` : "") +
    (r.gen_s !== null && r.gen_s !== undefined ? ` · ${ui.fmt(r.gen_s)} s` : "");
}
function flagBadges(r, ui) {
  if (!r.flags) return [ui.h("span", { class: "muted", title: "no flag file for this step" }, "–")];
  return r.flags.map((f) => ui.h("span", { class: "badge flag", title: REASONS[f] }, REASONS[f] || f));
}
function rolloutCells(r, ui) {
  return [ui.h("td", { class: "worker" }, r.worker || "–"), ui.h("td", { class: "cost" }, costText(r, ui)),
          ui.h("td", { class: "flags" }, ...flagBadges(r, ui))];
}
function versionCell(td, version) { td.style.borderLeft = `4px solid ${versionColor(version)}`; return td; }

// ------------------------------------------------------------------ group view: length, cost, token diff
function groupExtras(r, ui) {
  const out = [ui.h("div", { class: "cost-line" }, `${costText(r, ui)} · version ${r.version}` +
    (r.worker ? ` · ${r.worker}` : ""), " ", ...(r.flags && r.flags.length ? flagBadges(r, ui) : []))];
  if (r.ids && r.ids.length) {
    const n = r.differs.filter(Boolean).length;
    const cells = r.ids.map((id, i) => ui.h("span", { class: `tok${r.differs[i] ? " diff" : ""}`, title: `position ${i} · id ${id}` },
      (r.token_text && r.token_text[i]) ?? `#${id}`));
    out.push(ui.h("details", { class: "token-diff", open: "open" },
      ui.h("summary", {}, `tokens: ${n} of ${r.ids.length} differ from the group's most common token at their position`),
      ui.h("div", { class: "token-canvas diff-canvas" }, ...cells)));
  }
  return out;
}

window.Histograms = { FILTERS, page, flagCharts, rolloutFilters, rolloutCells, ROLLOUT_COLUMNS, versionCell, groupExtras };
})();
