// Token-level views of the learner's update (issue #21; data: /api/run/ID/traces and /mismatch, written by
// rl/token_traces.py). app.js calls two hooks with its own helpers:
//   Tokens.replay(root, ctx)    under the denoising replay: per response position, the sampler's probability
//                               of the token when it unmasked it next to the learner's probability of it under
//                               each iteration's mask; mismatch outlined, clipped tokens marked, legend. Text: a
//                               table (a column per position); image rollouts: small multiples of the replay's
//                               image-token grid (the sampler's, then one per inner iteration)
//   Tokens.overview(root, ctx)  the mismatch chart per step and the entropy by response position
// Token text and prompts are untrusted: they go in through h(..., text) (textContent) only; links are built
// from numbers. Only positions inside the loss mask (position < |o_i|) are ever coloured.
(function () {
"use strict";

const MISMATCH_NATS = 1.0;  // |log pi_v - log q| above this (a probability ratio beyond e) is outlined

// probability -> red (0) .. green (1), the replay's confidence scale
function probColor(p) {
  const t = Math.max(0, Math.min(1, p));
  return `hsl(${Math.round(t * 120)}, 70%, ${Math.round(88 - t * 30)}%)`;
}
const f3 = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));

// { position: { n: row index } } from the columnar answer
function byPosition(tr) {
  const at = new Map();
  tr.position.forEach((p, i) => {
    if (!at.has(p)) at.set(p, new Map());
    at.get(p).set(tr.iteration[i], i);
  });
  return at;
}

function legend(h) {
  const swatch = (cls, style, label) => {
    const s = h("span", { class: `tok-cell legend-cell ${cls}` }, "a");
    if (style) s.style.background = style;
    return h("span", { class: "legend-item" }, s, ` ${label}`);
  };
  return h("div", { class: "legend", id: "token-legend" },
    swatch("", probColor(0.05), "p ≈ 0"), swatch("", probColor(0.5), "p = 0.5"), swatch("", probColor(0.95), "p ≈ 1"),
    swatch("mismatch", probColor(0.5), `|log p_learner − log q_sampler| > ${MISMATCH_NATS} nat`),
    swatch("clip-high", probColor(0.5), "clipped (r > 1+ε, A > 0)"), swatch("clip-low", probColor(0.5), "clipped (r < 1−ε, A < 0)"),
    swatch("unmasked", null, "not masked in this iteration"),
    swatch("outside", null, "prompt / padding: outside the loss, never coloured"));
}

// the sampler's cell of position p: its probability of the token when it unmasked it (early-stop fill: none)
function samplerCell(c, t, tr, p, rows) {
  const anyRow = rows ? rows.values().next().value : undefined;
  const q = anyRow === undefined ? null : tr.logp_sampler[anyRow];
  if (t.confidence[p] !== null && t.confidence[p] !== undefined && !(t.early_filled || [])[p]) {
    c.style.background = probColor(t.confidence[p]);
    c.classList.add("coloured");
    c.title = `${where(t, p)} · sampler q = ${f3(t.confidence[p])} (log ${f3(q)})`;
  } else c.title = `${where(t, p)} · early-stop fill: not sampled`;
}

// a learner cell of position p and iteration it: row i of the trace (undefined: that iteration did not mask it)
function learnerCell(c, t, tr, p, it, i) {
  if (i === undefined) { c.classList.add("unmasked"); c.title = `${where(t, p)} · iteration ${it + 1}: not masked`; return; }
  const lv = tr.logp_version[i] ?? tr.logp_old[i];
  c.style.background = probColor(Math.exp(tr.logp[i]));
  c.classList.add("coloured");
  if (tr.clipped[i] > 0) c.classList.add("clip-high");
  if (tr.clipped[i] < 0) c.classList.add("clip-low");
  if (tr.logp_sampler[i] !== null && Math.abs(lv - tr.logp_sampler[i]) > MISMATCH_NATS) c.classList.add("mismatch");
  c.title = `${where(t, p)} · iteration ${it + 1} · log p_θ ${f3(tr.logp[i])} · log p_old ${f3(tr.logp_old[i])}` +
    ` · log q ${f3(tr.logp_sampler[i])} · ratio ${f3(tr.ratio[i])}${tr.clipped[i] ? " (clipped)" : ""}` +
    ` · kl ${f3(tr.kl[i])} · entropy ${f3(tr.entropy[i])}`;
}

// "position p" (text) or "position p (row r, column c) · code k" (image grid of side x side)
function where(t, p) {
  if (!isImage(t)) return `position ${p}`;
  const side = Math.round(Math.sqrt(t.image_codes.length));
  return `position ${p} (row ${Math.floor(p / side)}, column ${p % side}) · code ${t.image_codes[p]}`;
}
const isImage = (t) => Array.isArray(t.image_codes) && t.image_codes.length > 0;

async function replay(root, ctx) {
  const { runId, t, h, getJSON, link, api, runPath } = ctx;
  const box = h("div", { id: "token-trace", class: "token-trace" },
    h("h3", {}, isImage(t) ? "the learner's update, image token by image token" : "the learner's update, token by token"));
  root.appendChild(box);
  let tr;
  try {
    tr = await getJSON(link(api(runId, "traces"), { step: t.step, group: t.group, gi: t.gi }));
  } catch (err) {
    box.appendChild(h("div", { class: "msg error", text: String(err.message || err) }));
    return;
  }
  if (!tr.traced) {
    const links = (tr.traced_rollouts || []).map(([g, i]) =>
      h("a", { href: link(runPath(runId, "replay"), { step: t.step, group: g, gi: i }) }, `group ${g} #${i}`));
    box.appendChild(h("div", { class: "msg info" },
      "no token trace for this rollout (the learner traces run.trace_groups groups per step). ",
      links.length ? "Traced in this step: " : "Nothing traced in this step.", ...links.flatMap((a) => [a, " "])));
    return;
  }
  const at = byPosition(tr);
  const iters = [...Array(tr.iterations).keys()];
  const ratioOf = (it) => { const i = tr.iteration.indexOf(it); return i < 0 ? null : tr.mask_ratio[i]; };
  box.append(h("div", { class: "muted" }, `advantage ${f3(tr.advantage)} · policy version ${tr.version} · |o_i| = ${tr.response_len} scored positions · ` +
    `colour = probability of the ${isImage(t) ? "image token" : "token"}: the sampler's when it unmasked it, ` +
    "the learner's under each iteration's random mask (hover a cell for the numbers)"));
  if (isImage(t)) imageOverlay(box, h, t, tr, at, iters, ratioOf);
  else textOverlay(box, h, t, tr, at, iters, ratioOf);
  box.append(legend(h));
}

// text: a table, a column per response position, a row for the sampler and one per iteration
function textOverlay(box, h, t, tr, at, iters, ratioOf) {
  const n = t.response_ids.length;
  const head = h("tr", {}, h("th", {}, ""), h("td", { class: "tok-cell outside prompt-cell", "data-kind": "prompt", title: "the prompt: clean in every iteration, never scored" }, "prompt"));
  const samplerRow = h("tr", {}, h("th", {}, "sampler q (at unmask)"), h("td", { class: "tok-cell outside prompt-cell", "data-kind": "prompt" }, ""));
  const learnerRows = iters.map((it) => h("tr", {},
    h("th", {}, `learner p_θ, iteration ${it + 1} (mask ratio ${f3(ratioOf(it))})`),
    h("td", { class: "tok-cell outside prompt-cell", "data-kind": "prompt" }, "")));
  for (let p = 0; p < n; p++) {
    const inLoss = p < tr.response_len;
    const kind = inLoss ? "response" : "padding";
    const text = t.tokens ? (t.tokens[p] ?? "") : String(t.response_ids[p]);
    head.appendChild(h("td", { class: `tok-cell tok-text ${inLoss ? "" : "outside"}`, "data-pos": p, "data-kind": kind }, text));
    const rows = at.get(p);
    const sCell = h("td", { class: "tok-cell", "data-pos": p, "data-kind": kind }, text);
    if (!inLoss) sCell.classList.add("outside");
    else samplerCell(sCell, t, tr, p, rows);
    samplerRow.appendChild(sCell);
    iters.forEach((it, k) => {
      const c = h("td", { class: "tok-cell", "data-pos": p, "data-kind": kind, "data-iter": it }, text);
      if (!inLoss) c.classList.add("outside");
      else learnerCell(c, t, tr, p, it, rows ? rows.get(it) : undefined);
      learnerRows[k].appendChild(c);
    });
  }
  box.append(h("div", { class: "overlay-scroll" }, h("table", { id: "token-overlay", class: "token-overlay" }, h("tbody", {}, head, samplerRow, ...learnerRows))));
}

// image: small multiples in the replay's grid layout (side x side image tokens, row-major as image_codes):
// the sampler's grid and one per inner iteration; the caption (the prompt's text tokens) is never coloured
function imageOverlay(box, h, t, tr, at, iters, ratioOf) {
  const n = t.image_codes.length;
  const side = Math.round(Math.sqrt(n));
  const grid = (label, it) => {
    const g = h("div", { class: "grid-canvas trace-grid", "data-grid": it === null ? "sampler" : `iteration-${it + 1}` });
    g.style.gridTemplateColumns = `repeat(${side}, 18px)`;
    for (let p = 0; p < n; p++) {
      const inLoss = p < tr.response_len;
      const attrs = { class: "tok-cell", "data-pos": p, "data-kind": inLoss ? "response" : "padding" };
      if (it !== null) attrs["data-iter"] = it;
      const c = h("span", attrs);
      if (!inLoss) { c.classList.add("outside"); c.title = `${where(t, p)} · outside the loss`; }
      else if (it === null) samplerCell(c, t, tr, p, at.get(p));
      else learnerCell(c, t, tr, p, it, at.has(p) ? at.get(p).get(it) : undefined);
      g.appendChild(c);
    }
    return h("figure", { class: "trace-fig" }, h("figcaption", {}, label), g);
  };
  box.append(
    h("div", { class: "prompt-strip" }, h("span", { class: "label" }, "prompt (text tokens: clean in every iteration, never scored) "),
      h("span", { class: "tok-cell outside prompt-cell", "data-kind": "prompt", text: t.prompt || "" })),
    h("div", { id: "token-overlay-image", class: "trace-grids" },
      grid("sampler q (at unmask)", null),
      ...iters.map((it) => grid(`learner p_θ, iteration ${it + 1} (mask ratio ${f3(ratioOf(it))})`, it))));
}

async function overview(root, ctx) {
  const { runId, h, getJSON, api, renderChart } = ctx;
  const grid = h("div", { id: "token-charts", class: "grid" });
  root.insertBefore(grid, root.querySelector("#more"));  // after the overview's charts, before "all other metrics"
  let last = "";
  async function load() {
    let d;
    try { d = await getJSON(api(runId, "mismatch")); } catch (err) { return; }
    const key = JSON.stringify([d.steps.length, d.steps.length ? d.steps[d.steps.length - 1] : null]);
    if (key === last) return;
    last = key;
    grid.textContent = "";
    const s = d.steps.filter((x) => x.pairs);
    if (!s.length) return;
    const x = s.map((r) => r.step);
    const line = (k, label, extra) => ({ label, x, y: s.map((r) => r[k]), ...extra });
    const mBox = h("div", { class: "chart-box", id: "mismatch-chart" });
    const eBox = h("div", { class: "chart-box", id: "entropy-position-chart" });
    grid.append(mBox, eBox);
    renderChart(mBox, { title: "mismatch |log π_v − log q_sampler| (traced tokens)", kind: "line", raw: true,
      note: "learner log-prob under the sampling weights on a random mask vs the sampler's at unmask: different contexts, watch for jumps",
      series: [line("mismatch_mean", "mean"), line("mismatch_p90", "p90", { dash: true }), line("mismatch_p99", "p99", { dash: true }),
               line("mismatch_max", "max")] });
    const lagged = s.filter((r) => r.lag_pairs);
    if (lagged.length) {  // asynchronous rollouts: how far the learner's weights moved from the sampling version
      const lx = lagged.map((r) => r.step), lline = (k, label, extra) => ({ label, x: lx, y: lagged.map((r) => r[k]), ...extra });
      const lBox = h("div", { class: "chart-box", id: "lag-chart" });
      grid.append(lBox);
      renderChart(lBox, { title: "policy lag |log π_old − log π_v| (stale traced tokens)", kind: "line", raw: true,
        note: "the learner's weights at the update's start vs the version that sampled the row, same mask and context: exact, 0 when fresh",
        series: [lline("lag_mean", "mean"), lline("lag_p99", "p99", { dash: true }), lline("lag_max", "max")] });
    }
    const e = d.entropy_by_position;
    renderChart(eBox, { title: `entropy by response position (last ${e.steps} traced steps)`, kind: "line", raw: true,
      series: [{ label: "entropy of π_θ (nats)", x: e.position, y: e.entropy }] });
  }
  await load();
  setInterval(load, 4000);
}

window.Tokens = { replay, overview, MISMATCH_NATS };
})();
