"""The interactive attention page: one self-contained HTML file (data, script and styles inline;
nothing loaded from the network, so it works from file://) to explore every head of every layer.

Two views of the chosen map: lines between query and key tokens (hover or click a token to see
where it looks, as bertviz's head view does) and the weight matrix with its colour scale. Masked
positions (the causal future, keys outside a local window) are drawn as masked, not as zeros.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from minitx.inference.attention_maps import rollout_maps

# Weights are stored as integers in ten-thousandths: 4 digits of precision keep a 40-token
# sentence of a 3+3-layer, 4-head model near 300 KB.
SCALE = 10_000


def page_data(examples: list[dict], title: str, window: int | None, dilation: int) -> dict:
    """What the page embeds: per example its tokens, outcome and maps, weights scaled to ints and a
    per-map rule for masked positions."""
    return {
        "title": title,
        "scale": SCALE,
        "examples": [_example(example, window, dilation) for example in examples],
    }


def _example(maps: dict, window: int | None, dilation: int) -> dict:
    tokens = {"source": maps["source_tokens"], "target": maps.get("target_tokens", [])}
    return {
        "source_tokens": tokens["source"],
        "target_tokens": tokens["target"],
        "translation": maps.get("translation"),
        "prediction": maps.get("prediction"),
        "pooling": maps.get("pooling"),
        "maps": [
            {
                "kind": item["kind"],
                "layer": item["layer"],
                "queries": tokens[item["queries"]],  # "source"/"target" → the tokens
                "keys": tokens[item["keys"]],
                # causal: key after query; band: outside the local window (encoder self-attention)
                "mask": "causal"
                if item["kind"] in ("decoder_self", "decoder_rollout")
                else "band"
                if item["kind"] == "encoder_self" and window is not None
                else "none",
                "weights": [
                    [[round(w * SCALE) for w in row] for row in head]
                    for head in item["weights"].tolist()
                ],
            }
            for item in [*maps["maps"], *rollout_maps(maps["maps"])]
        ],
        "window": window,
        "dilation": dilation,
    }


def write_attention_page(data: dict, path: Path) -> Path:
    """Write the page for `page_data(...)` to `path`."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # A JSON string can hold "</script>"; escaping "<" keeps it inside the script element.
    payload = payload.replace("<", "\\u003c")
    page = TEMPLATE.replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


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
  return $("head").value === "all" ? map.weights.map((_, h) => h) : [+$("head").value];
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
function weight(map, h, i, j) { return map.weights[h][i][j] / DATA.scale; }
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
function draw() {
  focus = null;
  const map = currentMap();
  drawLines(map); drawMatrix(map);
}
function chooseKind() {
  const layers = [...new Set(example().maps.filter((m) => m.kind === $("kind").value)
    .map((m) => m.layer))];
  fill($("layer"), layers.map((l) => [l, l]));
  chooseLayer();
}
function chooseLayer() {
  const map = currentMap();
  fill($("head"), [["all", "all heads"], ...map.weights.map((_, h) => [h, "head " + h])]);
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
$("layer").onchange = chooseLayer; $("head").onchange = draw;
const wanted = /#example=(\\d+)/.exec(location.hash);  // a link to one example (the run report)
if (wanted && +wanted[1] < DATA.examples.length) $("example").value = wanted[1];
chooseExample();
</script></body></html>
"""
