// The step timeline (issue #20): when each actor group worked in the last few steps, one lane per group
// (rollout: generate; reward: scoring; learner: update; publisher: weight publication; store: the write
// handed to the background thread), from the span/<phase>_start_s and _end_s every step logs
// (rl/step_report.py; GET /api/run/ID/timeline). With asynchronous rollouts a step trains on a batch that
// generated during the previous step's update, so its generate bar starts before its step does: the overlap
// is the point of the mode, and this is where it shows. All text is numbers and fixed labels.
(function () {
"use strict";

const LANES = [["rollout", "generate"], ["reward", "reward"], ["learner", "update"], ["publisher", "publish"],
               ["store", "store"]];
const COLORS = { generate: "#4e79a7", reward: "#f28e2b", update: "#59a14f", publish: "#e15759", store: "#9c755f" };
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// rows of the answer -> bars in seconds since the first step's start: [{lane, phase, step, t0, t1}]
function bars(d) {
  const S = d.series, out = [], starts = [];
  d.step.forEach((step, i) => {
    const unix = S["time/unix"] ? S["time/unix"][i] : null, dur = S["time/step_s"] ? S["time/step_s"][i] : null;
    if (unix === null || dur === null) return;
    const start = unix - dur;  // the step began step_s before its row was logged
    starts.push({ step, t: start, end: unix });
    for (const [lane, phase] of LANES) {
      const a = S[`span/${phase}_start_s`], b = S[`span/${phase}_end_s`];
      if (!a || !b || a[i] === null || b[i] === null) continue;
      out.push({ lane, phase, step, t0: start + a[i], t1: start + b[i] });
    }
  });
  if (!starts.length) return { out: [], starts: [] };
  const zero = Math.min(starts[0].t, ...out.map((x) => x.t0));
  out.forEach((x) => { x.t0 -= zero; x.t1 -= zero; });
  starts.forEach((s) => { s.t -= zero; s.end -= zero; });
  return { out, starts };
}

function draw(box, d, h) {
  box.textContent = "";
  box.append(h("h3", {}, `timeline of the last ${d.step.length} steps (s)`));
  const { out, starts } = bars(d);
  if (!out.length) {
    box.append(h("div", { class: "msg info" }, "no phase spans logged (runs from before the timeline existed)"));
    return;
  }
  const W = 900, laneH = 22, left = 80, top = 18, H = top + LANES.length * laneH + 24;
  const tMax = Math.max(...out.map((x) => x.t1), ...starts.map((s) => s.end));
  const x = (t) => left + (W - left - 10) * t / Math.max(tMax, 1e-9);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", class: "timeline", id: "timeline-svg" });
  LANES.forEach(([lane], k) => root.append(svg("text", { x: 4, y: top + k * laneH + 15, class: "lane-label" }, lane)));
  for (const s of starts) {  // step boundaries
    root.append(svg("line", { x1: x(s.t), x2: x(s.t), y1: top - 4, y2: H - 20, class: "step-line", stroke: "#999",
                              "stroke-dasharray": "3 3" }));
    root.append(svg("text", { x: x(s.t) + 2, y: top - 6, class: "step-label" }, `step ${s.step}`));
  }
  for (const b of out) {
    const k = LANES.findIndex(([lane]) => lane === b.lane);
    const r = svg("rect", { x: x(b.t0), y: top + k * laneH + 3, width: Math.max(1, x(b.t1) - x(b.t0)), height: laneH - 6,
                            fill: COLORS[b.phase], class: `span span-${b.phase}`, "data-step": b.step });
    r.append(svg("title", {}, `step ${b.step} ${b.phase}: ${(b.t1 - b.t0).toFixed(3)} s`));
    root.append(r);
  }
  for (let t = 0; t <= tMax; t += niceStep(tMax)) {  // the time axis
    root.append(svg("text", { x: x(t), y: H - 6, class: "tick" }, t.toFixed(t < 10 ? 1 : 0)));
  }
  box.append(root, h("div", { class: "legend" }, ...LANES.map(([, p]) => {
    const s = h("span", { class: "legend-swatch" });
    s.style.background = COLORS[p];
    return h("span", { class: "legend-item" }, s, ` ${p}`);
  })));
}

function niceStep(span) {
  const raw = span / 8, p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-9))));
  return [1, 2, 5, 10].map((m) => m * p).find((v) => v >= raw);
}

async function overview(root, ctx) {
  const { runId, h, getJSON, api } = ctx;
  const box = h("div", { class: "chart-box wide", id: "timeline" });
  root.insertBefore(box, root.querySelector("#more"));  // after the overview's charts, before "all other metrics"
  let last = "";
  async function load() {
    let d;
    try { d = await getJSON(api(runId, "timeline") + "?count=6"); } catch (err) { return; }
    const key = JSON.stringify(d.step);
    if (key === last || !d.step.length) return;
    last = key;
    draw(box, d, h);
  }
  await load();
  setInterval(load, 4000);
}

window.Timeline = { overview, bars };
})();
