"""The attention page's HTML, styles and script (one file, nothing from the network); the data goes
in at __DATA__ (`attention_page.write_attention_page`).

The script draws the chosen map as lines and as a matrix, and below them one head's computation
for one query token, step by step, from the terms the model recorded (`page_data`'s `steps`):
numbers arrive packed (base64 of little-endian float32, float16 or bytes) and `tensor` unpacks
them.
"""

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 18px; margin: 0 0 8px; }
#controls { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; margin: 8px 0; }
#outcome { margin: 6px 0 12px; color: #444; }
#views { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.token { cursor: pointer; font-family: ui-monospace, monospace; font-size: 13px; }
.token.active { font-weight: bold; fill: #c00; }
.token.cls { fill: #06c; font-weight: bold; }
#tip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: 3px 6px;
  border-radius: 3px; font-size: 12px; display: none; }
.legend { font-size: 12px; color: #555; }
#steps { margin-top: 20px; border-top: 1px solid #ccc; padding-top: 8px; }
#steps h2 { font-size: 16px; margin: 4px 0; }
#steps h3 { font-size: 14px; margin: 14px 0 4px; }
.formula { font-family: ui-serif, Georgia, serif; font-size: 15px; margin: 4px 0; }
#scores { border-collapse: collapse; font-size: 13px; }
#scores td, #scores th { padding: 1px 8px; text-align: right; border-bottom: 1px solid #eee; }
#scores td.token { text-align: left; }
#scores tr.masked td { color: #999; }
.bar { display: inline-block; height: 10px; background: #1f77b4; vertical-align: middle; }
</style></head><body>
<h1>__TITLE__</h1>
<div id="controls">
  <label>example <select id="example"></select></label>
  <label>attention <select id="kind"></select></label>
  <label>layer <select id="layer"></select></label>
  <label>head <select id="head"></select></label>
</div>
<div id="outcome"></div>
<div id="views"><svg id="lines"></svg><svg id="matrix"></svg></div>
<div class="legend">Lines: query tokens on the left, key tokens on the right; hover or click a query
token to keep only its lines. Matrix: rows are queries, columns keys; grey hatching marks masked
positions (the causal future, keys outside a local window). Hover a cell for its weight.</div>
<section id="steps">
<h2>One head, step by step</h2>
<div id="steps-controls"><label>query token <select id="query"></select></label></div>
<div id="steps-note" class="legend"></div>
<div id="steps-body">
<div class="formula" id="formula"></div>
<h3 id="step-vectors-title"></h3><svg id="step-vectors"></svg>
<h3 id="step-scores-title"></h3><table id="scores"></table>
<h3 id="step-output-title"></h3><svg id="step-output"></svg>
</div>
<div class="legend">Strips: one cell per feature, red positive, blue negative, the colour's depth
its size relative to the largest of the strip's group; hover a cell for its value. Every number is
the one the model computed in this forward pass (scores and weights in full precision, vectors to
3 significant digits).</div>
</section>
<div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const NAMES = {encoder_self: "encoder self-attention", decoder_self: "decoder self-attention",
  cross: "cross-attention (target \\u2192 source)",
  encoder_rollout: "encoder rollout (input token \\u2192 position, through layers 0..L)",
  decoder_rollout: "decoder rollout (through layers 0..L)"};
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let focus = null;

function element(name, attributes, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}
function fill(select, options) {
  select.innerHTML = "";
  options.forEach(([value, label]) => select.add(new Option(label, value)));
}
function example() { return DATA.examples[+$("example").value]; }
function currentMap() {
  return example().maps.find((m) => m.kind === $("kind").value && m.layer === +$("layer").value);
}
function heads(map) {
  return $("head").value === "all" ? [...Array(map.weights.shape[0]).keys()] : [+$("head").value];
}
function masked(map, i, j) {
  const offset = map.keys.length - map.queries.length;
  if (map.mask === "causal") return j > i + offset;
  if (map.mask === "band") {
    const d = j - i, reach = example().window * example().dilation;
    return d !== 0 && (Math.abs(d) > reach || d % example().dilation !== 0);
  }
  return false;
}
function weight(map, h, i, j) { return tensor(map.weights).at(h, i, j); }
function showTip(event, text) {
  const tip = $("tip");
  tip.textContent = text; tip.style.display = "block";
  tip.style.left = event.clientX + 12 + "px"; tip.style.top = event.clientY + 12 + "px";
}
function hideTip() { $("tip").style.display = "none"; }

function drawLines(map) {
  const svg = $("lines"); svg.innerHTML = "";
  const rowHeight = 20, width = 420, rows = Math.max(map.queries.length, map.keys.length);
  svg.setAttribute("width", width); svg.setAttribute("height", rows * rowHeight + 30);
  const shown = heads(map), lineGroup = element("g", {}, svg);
  map.queries.forEach((_, i) => {
    if (focus !== null && focus !== i) return;
    map.keys.forEach((_, j) => {
      if (masked(map, i, j)) return;
      shown.forEach((h) => {
        const w = weight(map, h, i, j);
        if (w < 0.01) return;
        element("line", {x1: 140, y1: 25 + i * rowHeight, x2: 280, y2: 25 + j * rowHeight,
          stroke: COLOURS[h % COLOURS.length], "stroke-width": 1 + 3 * w,
          "stroke-opacity": Math.min(1, w * (focus === null ? 1 : 1.5)),
          "data-query": i, "data-key": j, "data-head": h, "data-weight": w.toFixed(4)}, lineGroup);
      });
    });
  });
  map.queries.forEach((token, i) => {
    const text = element("text", {x: 130, y: 29 + i * rowHeight, "text-anchor": "end",
      class: "token query" + (focus === i ? " active" : "") + (isCls(map, i) ? " cls" : ""),
      "data-index": i}, svg);
    text.textContent = token;
    text.addEventListener("mouseenter", () => { focus = i; drawLines(map); });
    text.addEventListener("click", () => { focus = focus === i ? null : i; drawLines(map); });
  });
  map.keys.forEach((token, j) => {
    const text = element("text", {x: 290, y: 29 + j * rowHeight, class: "token key"}, svg);
    text.textContent = token;
  });
  svg.onmouseleave = () => { if (focus !== null) { focus = null; drawLines(map); } };
}
function isCls(map, i) {
  return example().pooling === "cls" && map.kind === "encoder_self" && i === 0;
}
function drawMatrix(map) {
  const svg = $("matrix"); svg.innerHTML = "";
  const cell = 18, left = 110, top = 110, shown = heads(map);
  svg.setAttribute("width", left + cell * map.keys.length + 20);
  svg.setAttribute("height", top + cell * map.queries.length + 20);
  const defs = element("defs", {}, svg);
  const hatch = element("pattern", {id: "masked", width: 6, height: 6,
    patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)"}, defs);
  element("rect", {width: 6, height: 6, fill: "#eee"}, hatch);
  element("line", {x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#aaa", "stroke-width": 2}, hatch);
  map.keys.forEach((token, j) => {
    const text = element("text", {class: "token", "text-anchor": "start",
      transform: `translate(${left + j * cell + 13},${top - 6}) rotate(-60)`}, svg);
    text.textContent = token;
  });
  map.queries.forEach((token, i) => {
    const text = element("text", {x: left - 6, y: top + i * cell + 13, "text-anchor": "end",
      class: "token" + (isCls(map, i) ? " cls" : "")}, svg);
    text.textContent = token;
    map.keys.forEach((_, j) => {
      const isMasked = masked(map, i, j);
      const values = shown.map((h) => weight(map, h, i, j));
      const w = values.reduce((a, b) => a + b, 0) / values.length;
      const colour = shown.length === 1 ? "31,119,180" : "60,60,60";
      const rect = element("rect", {x: left + j * cell, y: top + i * cell, width: cell - 1,
        height: cell - 1, class: isMasked ? "cell masked" : "cell",
        fill: isMasked ? "url(#masked)" : `rgba(${colour},${w.toFixed(4)})`,
        "data-query": i, "data-key": j, "data-weight": w.toFixed(4)}, svg);
      rect.addEventListener("mousemove", (event) => showTip(event, isMasked
        ? `${map.queries[i]} \\u2192 ${map.keys[j]}: masked`
        : `${map.queries[i]} \\u2192 ${map.keys[j]}: ` + shown.map(
            (h, n) => `head ${h} ${values[n].toFixed(4)}`).join(", ")));
      rect.addEventListener("mouseleave", hideTip);
    });
  });
}
// --- one head, step by step --------------------------------------------------------------------
const unpackedCache = new WeakMap();
function half(bits) {  // IEEE 754 binary16 → number
  const sign = bits & 0x8000 ? -1 : 1, exponent = (bits >> 10) & 31, fraction = bits & 1023;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}
function tensor(item) {  // {shape, type, data} → {shape, at(...index)}; little-endian bytes
  if (!item) return null;
  if (unpackedCache.has(item)) return unpackedCache.get(item);
  const bytes = Uint8Array.from(atob(item.data), (c) => c.charCodeAt(0));
  const values = item.type === "f32" ? new Float32Array(bytes.buffer)
    : item.type === "f16" ? Float32Array.from(new Uint16Array(bytes.buffer), half) : bytes;
  const shape = item.shape;
  const at = (...index) => values[index.reduce((flat, i, n) => flat * shape[n] + i, 0)];
  const row = (...index) => {  // the last axis at `index`
    const start = index.reduce((flat, i, n) => flat * shape[n] + i, 0) * shape[shape.length - 1];
    return Array.from(values.subarray(start, start + shape[shape.length - 1]));
  };
  const result = {shape, at, row};
  unpackedCache.set(item, result);
  return result;
}
const SELF = {encoder_self: true, decoder_self: true};
function describe(map, h) {
  const steps = map.steps, scale = steps.scale[h], dk = tensor(steps.q).shape[2];
  const bias = steps.bias !== undefined;
  const rope = DATA.positions === "rope" && SELF[map.kind];
  const scoreTerm = {scaled_dot: "QK\\u1d40/\\u221ad\\u2096", dot: "QK\\u1d40",
    cosine: "s\\u00b7cos(Q, K)"}[DATA.score];
  const positionTerm = !bias ? "" : DATA.positions === "alibi" ? " \\u2212 m\\u00b7|j \\u2212 i|"
    : " + b(j \\u2212 i)";
  const scaling = {scaled_dot: `\\u00d7 1/\\u221ad\\u2096 = 1/\\u221a${dk} = ${scale.toPrecision(4)}`,
    dot: "\\u00d7 1 (dot: unscaled)",
    cosine: `\\u00d7 s = ${scale.toPrecision(4)} (this head's learned scale; q and k have unit length)`
  }[DATA.score];
  const position = !bias ? "no position term inside attention" + (rope
    ? " (RoPE: q and k are rotated by their positions, so q\\u00b7k depends on j \\u2212 i)"
    : map.kind === "cross" ? " (cross-attention compares two sentences)"
    : DATA.positions === "none" ? "" : " (positions were added to the embeddings)")
    : DATA.positions === "alibi" ? "ALiBi: \\u2212m\\u2095\\u00b7|j \\u2212 i|, a fixed slope per head"
    : "T5 relative bias b\\u2095(j \\u2212 i), learned per distance bucket";
  return {
    formula: `Attention(Q, K, V) = softmax(${scoreTerm}${positionTerm})\\u00b7V` +
      " \\u2014 below for one head h and one query i",
    vectors: `1. The query q\\u1d62 = x\\u1d62W_Q and the keys k\\u2c7c = x\\u2c7cW_K of head ${h}` +
      ` (d\\u2096 = ${dk}${rope ? ", after the rotation of RoPE" : ""}` +
      `${DATA.score === "cosine" ? ", scaled to unit length" : ""})`,
    scores: `2. score\\u2c7c = q\\u1d62\\u00b7k\\u2c7c ${scaling}; ${position}; masked keys ` +
      "get \\u2212\\u221e; then w = softmax(score), which sums to 1",
    output: "3. The values v\\u2c7c = x\\u2c7cW_V weighted by w\\u2c7c, their sum o\\u1d62 = \\u03a3\\u2c7c " +
      "w\\u2c7cv\\u2c7c (the head's output), and W_O\\u00b7o\\u1d62: this head's share of the layer's " +
      "output (the shares of all heads plus the output bias sum to it)",
  };
}
function colourOf(value, largest) {
  const depth = Math.min(1, Math.abs(value) / (largest || 1));
  return value >= 0 ? `rgba(214,39,40,${depth.toFixed(3)})` : `rgba(31,119,180,${depth.toFixed(3)})`;
}
function strips(svg, rows, cellWidth) {  // rows: [{label, values, cls}] drawn with one colour scale
  svg.innerHTML = "";
  const largest = Math.max(...rows.flatMap((r) => r.values.map(Math.abs)));
  const left = 230, height = 16, width = Math.max(...rows.map((r) => r.values.length)) * cellWidth;
  svg.setAttribute("width", left + width + 10); svg.setAttribute("height", rows.length * height + 4);
  rows.forEach((r, n) => {
    const label = element("text", {x: left - 6, y: n * height + 12, "text-anchor": "end",
      class: "token"}, svg);
    label.textContent = r.label;
    const group = element("g", {class: "strip " + (r.cls || ""), "data-row": n}, svg);
    r.values.forEach((value, d) => {
      const cell = element("rect", {x: left + d * cellWidth, y: n * height + 1,
        width: cellWidth, height: height - 3, fill: colourOf(value, largest),
        "data-value": value}, group);
      cell.addEventListener("mousemove", (event) => showTip(event,
        `${r.label} [${d}] = ${value.toPrecision(4)}`));
      cell.addEventListener("mouseleave", hideTip);
    });
  });
}
function drawSteps(map) {
  const note = $("steps-note"), body = $("steps-body");
  if (!map.steps || $("head").value === "all") {
    body.style.display = "none"; $("steps-controls").style.display = map.steps ? "" : "none";
    note.textContent = map.steps ? "Pick one head above to follow its computation."
      : map.kind.endsWith("rollout")
      ? "A rollout combines every head and layer: pick a layer's attention for this view."
      : "This page was written without the step-by-step terms (they make it large): " +
        "minitx attention RUN TEXT --html writes them for one text.";
    return;
  }
  body.style.display = ""; $("steps-controls").style.display = ""; note.textContent = "";
  const h = +$("head").value, i = +$("query").value, steps = map.steps;
  const q = tensor(steps.q), k = tensor(steps.k), v = tensor(steps.v), raw = tensor(steps.raw);
  const bias = tensor(steps.bias), allowed = tensor(steps.allowed), w = tensor(map.weights);
  const headOut = tensor(steps.head_out), share = tensor(steps.share), scale = steps.scale[h];
  const text = describe(map, h);
  $("formula").textContent = text.formula;
  $("step-vectors-title").textContent = text.vectors;
  strips($("step-vectors"), [
    {label: `q (${map.queries[i]})`, values: q.row(h, i), cls: "query"},
    ...map.keys.map((token, j) => ({label: `k${j} (${token})`, values: k.row(h, j), cls: "key"})),
  ], 5);
  $("step-scores-title").textContent = text.scores;
  const table = $("scores"); table.innerHTML = "";
  const header = table.insertRow();
  ["key", "q\\u00b7k", "\\u00d7 scale", "+ position", "mask", "= score", "softmax weight"]
    .forEach((name) => { const th = document.createElement("th"); th.textContent = name;
      header.appendChild(th); });
  let total = 0;
  map.keys.forEach((token, j) => {
    const open = !allowed || allowed.at(i, j) === 1;
    const product = raw.at(h, i, j);
    const position = bias ? bias.at(h, j - i + map.queries.length - 1) : 0;  // by distance
    const weightValue = w.at(h, i, j);
    total += weightValue;
    const row = table.insertRow();
    row.className = "score-row" + (open ? "" : " masked");
    row.dataset.key = j; row.dataset.raw = product; row.dataset.weight = weightValue;
    const cells = [`${j}: ${token}`, product.toFixed(4), (product * scale).toFixed(4),
      bias ? position.toFixed(4) : "\\u2014", open ? "" : "masked",
      open ? (product * scale + position).toFixed(4) : "\\u2212\\u221e", weightValue.toFixed(4)];
    cells.forEach((value, n) => { const cell = row.insertCell(); cell.textContent = value;
      if (n === 0) cell.className = "token"; });
    const bar = document.createElement("span"); bar.className = "bar";
    bar.style.width = (120 * weightValue).toFixed(1) + "px";
    row.cells[6].append(" ", bar);
  });
  const sum = table.insertRow(); sum.id = "weight-sum";
  sum.insertCell().textContent = "sum"; for (let n = 0; n < 5; n++) sum.insertCell();
  sum.insertCell().textContent = total.toFixed(4);
  $("step-output-title").textContent = text.output;
  const outputs = [
    ...map.keys.map((token, j) => ({label: `${w.at(h, i, j).toFixed(3)} \\u00d7 v${j} (${token})`,
      values: v.row(h, j).map((x) => x * w.at(h, i, j)), cls: "weighted"})),
    {label: `o = \\u03a3 w\\u00b7v`, values: headOut.row(h, i), cls: "output"},
  ];
  strips($("step-output"), outputs, 5);
  const shareValues = share.row(h, i);
  const shareSvg = element("g", {}, $("step-output"));
  const top = outputs.length * 16 + 10, largest = Math.max(...shareValues.map(Math.abs));
  $("step-output").setAttribute("height", top + 40);
  $("step-output").setAttribute("width", Math.max(+$("step-output").getAttribute("width"),
    240 + shareValues.length * 2));
  const label = element("text", {x: 224, y: top + 12, "text-anchor": "end", class: "token"},
    shareSvg);
  const norm = Math.hypot(...shareValues);
  label.textContent = `W_O\\u00b7o (share, |\\u00b7| = ${norm.toFixed(3)})`;
  const group = element("g", {class: "strip share"}, shareSvg);
  shareValues.forEach((value, d) => {
    const cell = element("rect", {x: 230 + d * 2, y: top + 1, width: 2, height: 13,
      fill: colourOf(value, largest), "data-value": value}, group);
    cell.addEventListener("mousemove", (event) => showTip(event,
      `share [${d}] = ${value.toPrecision(4)}`));
    cell.addEventListener("mouseleave", hideTip);
  });
}
function chooseQuery() { drawSteps(currentMap()); }
function draw() {
  focus = null;
  const map = currentMap();
  drawLines(map); drawMatrix(map);
  const previous = $("query").value;
  fill($("query"), map.queries.map((token, i) => [i, `${i}: ${token}`]));
  if (previous !== "" && +previous < map.queries.length) $("query").value = previous;
  drawSteps(map);
}
function chooseKind() {
  const layers = [...new Set(example().maps.filter((m) => m.kind === $("kind").value)
    .map((m) => m.layer))];
  fill($("layer"), layers.map((l) => [l, l]));
  chooseLayer();
}
function chooseLayer() {
  const map = currentMap();
  const heads = [...Array(map.weights.shape[0]).keys()];
  fill($("head"), [["all", "all heads"], ...heads.map((h) => [h, "head " + h])]);
  draw();
}
function chooseExample() {
  const ex = example(), kinds = [...new Set(ex.maps.map((m) => m.kind))];
  fill($("kind"), kinds.map((k) => [k, NAMES[k]]));
  let outcome = "source: " + ex.source_tokens.join(" ");
  if (ex.translation !== null) outcome += "  \\u2192  translation: " + ex.translation;
  if (ex.prediction) outcome += `  \\u2192  ${ex.prediction.label} (${ex.prediction.probability})`;
  if (ex.pooling) outcome += `  \\u00b7 pooling: ${ex.pooling}`;
  $("outcome").textContent = outcome;
  chooseKind();
}
fill($("example"), DATA.examples.map((ex, n) => [n, `${n + 1}: ${ex.source_tokens.join(" ")
  .slice(0, 60)}`]));
$("example").onchange = chooseExample; $("kind").onchange = chooseKind;
$("layer").onchange = chooseLayer; $("head").onchange = draw; $("query").onchange = chooseQuery;
const wanted = /#example=(\\d+)/.exec(location.hash);  // a link to one example (the run report)
if (wanted && +wanted[1] < DATA.examples.length) $("example").value = wanted[1];
chooseExample();
</script></body></html>
"""
