// Small SVG charts for the dashboard: lines with an optional band, stacked areas and stacked bars,
// smoothing, log-y, hover values. No library, no network. Text goes in with textContent only.
(function () {
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4", "#6e7781",
                 "#fb8500", "#219ebc"];

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}

// TensorBoard-style exponential moving average, debiased, skipping gaps (null).
function smooth(ys, weight) {
  if (!weight) return ys;
  let last = 0, n = 0;
  return ys.map((y) => {
    if (y === null || y === undefined || !isFinite(y)) return null;
    last = last * weight + (1 - weight) * y;
    n += 1;
    return last / (1 - Math.pow(weight, n));
  });
}

function niceTicks(lo, hi, count) {
  if (!isFinite(lo) || !isFinite(hi)) return [];
  const span = Math.max(hi - lo, Math.abs(hi) * 1e-6, 1e-12);  // a flat series still gets ticks
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  const first = Math.ceil(lo / step);
  for (let i = 0; i <= count + 2; i++) {
    const v = (first + i) * step;
    if (v > lo + span + step * 1e-9) break;
    out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return out;
}

function fmt(v) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  if (Number.isInteger(v)) return String(v);
  return v.toPrecision(4).replace(/\.?0+$/, "");
}

function fmtX(v, mode) {
  if (mode !== "wall") return fmt(v);
  if (v < 120) return `${Math.round(v)}s`;
  if (v < 7200) return `${(v / 60).toFixed(1)}m`;
  return `${(v / 3600).toFixed(1)}h`;
}

function nearest(xs, x) {
  let lo = 0, hi = xs.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < x) lo = mid; else hi = mid;
  }
  return Math.abs(xs[lo] - x) <= Math.abs(xs[hi] - x) ? lo : hi;
}

// spec: {title, kind: "line"|"stack-area"|"stack-bar", series: [{label, x, y, lo?, hi?, color?, dash?}],
//        overlay?: [line series drawn over a stack], logY?, canLog?, smoothing?, xMode?, note?}
function renderChart(container, spec) {
  container.textContent = "";
  container.classList.add("chart");
  const head = document.createElement("div");
  head.className = "chart-head";
  const title = document.createElement("span");
  title.className = "chart-title";
  title.textContent = spec.title;
  head.appendChild(title);
  if (spec.canLog !== false && spec.kind === "line") {
    const lab = document.createElement("label");
    lab.className = "logy";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = !!spec.logY;
    box.addEventListener("change", () => { spec.logY = box.checked; renderChart(container, spec); });
    lab.appendChild(box);
    lab.appendChild(document.createTextNode(" log y"));
    head.appendChild(lab);
  }
  container.appendChild(head);
  if (spec.note) {
    const note = document.createElement("div");
    note.className = "chart-note";
    note.textContent = spec.note;
    container.appendChild(note);
  }

  const W = Math.max(280, container.clientWidth || 420), H = 200;
  const m = { l: 52, r: 10, t: 8, b: 22 };
  const svg = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
  svg.setAttribute("aria-label", spec.title);
  container.appendChild(svg);

  const series = spec.series.filter((s) => s.x && s.x.length);
  const overlay = (spec.overlay || []).filter((s) => s.x && s.x.length);
  series.forEach((s, i) => { s.color = s.color || PALETTE[i % PALETTE.length]; });
  overlay.forEach((s, i) => { s.color = s.color || PALETTE[(i + series.length) % PALETTE.length]; });
  if (!series.length) {
    const t = svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" });
    t.textContent = "no data yet";
    svg.appendChild(t);
    return;
  }
  const stacked = spec.kind === "stack-area" || spec.kind === "stack-bar";
  const w = spec.smoothing || 0;
  const drawn = series.map((s) => ({ ...s, ys: stacked ? s.y : smooth(s.y, w),
                                     lo: s.lo && smooth(s.lo, w), hi: s.hi && smooth(s.hi, w) }));
  const over = overlay.map((s) => ({ ...s, ys: smooth(s.y, w) }));
  // stacked: cumulative sums over series sharing series[0].x
  let tops = null;
  if (stacked) {
    const n = drawn[0].x.length;
    tops = [];
    let acc = new Array(n).fill(0);
    for (const s of drawn) {
      const base = acc.slice();
      acc = acc.map((a, i) => a + (s.ys[i] || 0));
      tops.push({ base, top: acc.slice() });
    }
  }
  let xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
  const logY = !!spec.logY && !stacked;
  const seeY = (v) => {
    if (v === null || v === undefined || !isFinite(v)) return;
    if (logY && v <= 0) return;
    ymin = Math.min(ymin, v); ymax = Math.max(ymax, v);
  };
  for (const s of drawn.concat(over)) for (const x of s.x) if (x !== null) { xmin = Math.min(xmin, x); xmax = Math.max(xmax, x); }
  if (stacked) { tops.forEach((t) => t.top.forEach(seeY)); seeY(0); }
  else drawn.forEach((s) => { s.ys.forEach(seeY); s.y.forEach(seeY); (s.lo || []).forEach(seeY); (s.hi || []).forEach(seeY); });
  over.forEach((s) => s.ys.forEach(seeY));
  if (!isFinite(ymin)) { ymin = logY ? 1 : 0; ymax = logY ? 10 : 1; }
  if (ymax - ymin <= Math.abs(ymax) * 1e-9) { ymin -= logY ? ymin / 2 : 0.5; ymax += logY ? ymax : 0.5; }
  if (xmin === xmax) { xmin -= 1; xmax += 1; }
  const ty = logY ? (v) => Math.log10(v) : (v) => v;
  const [y0, y1] = [ty(ymin), ty(ymax)];
  const pad = (y1 - y0) * 0.05;
  const X = (x) => m.l + (x - xmin) / (xmax - xmin) * (W - m.l - m.r);
  const Y = (y) => {
    if (y === null || y === undefined || !isFinite(y) || (logY && y <= 0)) return null;
    return H - m.b - (ty(y) - (y0 - pad)) / ((y1 + pad) - (y0 - pad)) * (H - m.t - m.b);
  };

  // axes and grid
  const g = svgEl("g", { class: "axes" });
  const yt = logY ? niceTicks(y0, y1, 4).map((e) => Math.pow(10, e)) : niceTicks(ymin, ymax, 4);
  for (const v of yt) {
    const y = Y(v);
    if (y === null || y < m.t - 1 || y > H - m.b + 1) continue;
    g.appendChild(svgEl("line", { x1: m.l, x2: W - m.r, y1: y, y2: y, class: "grid" }));
    const t = svgEl("text", { x: m.l - 4, y: y + 3, "text-anchor": "end" });
    t.textContent = fmt(v);
    g.appendChild(t);
  }
  for (const v of niceTicks(xmin, xmax, 5)) {
    const x = X(v);
    if (x < m.l - 1 || x > W - m.r + 1) continue;
    const t = svgEl("text", { x, y: H - 6, "text-anchor": "middle" });
    t.textContent = fmtX(v, spec.xMode);
    g.appendChild(t);
  }
  g.appendChild(svgEl("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: "axis" }));
  g.appendChild(svgEl("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "axis" }));
  svg.appendChild(g);

  const path = (xs, ys) => {
    let d = "", pen = false;
    for (let i = 0; i < xs.length; i++) {
      const y = Y(ys[i]);
      if (y === null || xs[i] === null) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${X(xs[i]).toFixed(1)},${y.toFixed(1)}`;
      pen = true;
    }
    return d;
  };

  if (spec.kind === "stack-bar") {
    const n = drawn[0].x.length;
    const bw = Math.max(1, (W - m.l - m.r) / Math.max(n, 1) * 0.8);
    drawn.forEach((s, k) => {
      const gg = svgEl("g", { fill: s.color, class: "bars" });
      for (let i = 0; i < n; i++) {
        const yb = Y(tops[k].base[i]), yt2 = Y(tops[k].top[i]);
        if (yb === null || yt2 === null || yb - yt2 <= 0) continue;
        gg.appendChild(svgEl("rect", { x: (X(s.x[i]) - bw / 2).toFixed(1), y: yt2.toFixed(1), width: bw.toFixed(1),
                                       height: (yb - yt2).toFixed(1) }));
      }
      svg.appendChild(gg);
    });
  } else if (spec.kind === "stack-area") {
    drawn.forEach((s, k) => {
      const xs = s.x;
      let d = "";
      for (let i = 0; i < xs.length; i++) d += `${i ? "L" : "M"}${X(xs[i]).toFixed(1)},${Y(tops[k].top[i]).toFixed(1)}`;
      for (let i = xs.length - 1; i >= 0; i--) d += `L${X(xs[i]).toFixed(1)},${Y(tops[k].base[i]).toFixed(1)}`;
      svg.appendChild(svgEl("path", { d: d + "Z", fill: s.color, "fill-opacity": 0.55, stroke: "none", class: "area" }));
    });
  } else {
    for (const s of drawn) {
      if (s.lo && s.hi) {
        let d = "";
        const idx = s.x.map((_, i) => i).filter((i) => Y(s.lo[i]) !== null && Y(s.hi[i]) !== null);
        idx.forEach((i, j) => { d += `${j ? "L" : "M"}${X(s.x[i]).toFixed(1)},${Y(s.hi[i]).toFixed(1)}`; });
        idx.slice().reverse().forEach((i) => { d += `L${X(s.x[i]).toFixed(1)},${Y(s.lo[i]).toFixed(1)}`; });
        if (d) svg.appendChild(svgEl("path", { d: d + "Z", fill: s.color, "fill-opacity": 0.15, stroke: "none", class: "band" }));
      }
      if (w) svg.appendChild(svgEl("path", { d: path(s.x, s.y), fill: "none", stroke: s.color, "stroke-opacity": 0.25, "stroke-width": 1 }));
      svg.appendChild(svgEl("path", { d: path(s.x, s.ys), fill: "none", stroke: s.color, "stroke-width": 1.6,
                                      "stroke-dasharray": s.dash ? "4 3" : "", class: "line" }));
    }
  }
  for (const s of over) {
    svg.appendChild(svgEl("path", { d: path(s.x, s.ys), fill: "none", stroke: s.color, "stroke-width": 1.6,
                                    "stroke-dasharray": s.dash === false ? "" : "4 3", class: "line" }));
  }

  // legend
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of drawn.concat(over)) {
    const item = document.createElement("span");
    const sw = document.createElement("i");
    sw.style.background = s.color;
    if (s.dash || over.includes(s)) sw.className = "dashed";
    item.appendChild(sw);
    item.appendChild(document.createTextNode(s.label));
    legend.appendChild(item);
  }
  container.appendChild(legend);

  // hover: a cursor line and every series' value at the nearest x
  const cursor = svgEl("line", { y1: m.t, y2: H - m.b, class: "cursor", visibility: "hidden" });
  svg.appendChild(cursor);
  const tip = document.createElement("div");
  tip.className = "tip";
  tip.hidden = true;
  container.appendChild(tip);
  svg.addEventListener("mousemove", (ev) => {
    const rect = svg.getBoundingClientRect();
    const px = (ev.clientX - rect.left) * (W / rect.width);
    const xv = xmin + (px - m.l) / (W - m.l - m.r) * (xmax - xmin);
    const ref = drawn[0];
    const i = nearest(ref.x, xv);
    const x = ref.x[i];
    cursor.setAttribute("x1", X(x)); cursor.setAttribute("x2", X(x));
    cursor.setAttribute("visibility", "visible");
    tip.textContent = "";
    const h = document.createElement("b");
    h.textContent = `${spec.xMode === "wall" ? "time" : "step"} ${fmtX(x, spec.xMode)}`;
    tip.appendChild(h);
    for (const s of drawn.concat(over)) {
      const j = s === ref ? i : nearest(s.x, x);
      const line = document.createElement("div");
      const sw = document.createElement("i");
      sw.style.background = s.color;
      line.appendChild(sw);
      const v = s.ys[j];
      const raw = s.y[j];
      line.appendChild(document.createTextNode(`${s.label}: ${fmt(raw)}${w && !stacked ? ` (smoothed ${fmt(v)})` : ""}`));
      tip.appendChild(line);
    }
    tip.hidden = false;
    const left = Math.min(X(x) + 12, W - 180);
    tip.style.left = `${left}px`;
    tip.style.top = "28px";
  });
  svg.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); tip.hidden = true; });
}

window.Charts = { renderChart, smooth, fmt, PALETTE };
})();
