"""`minitx attention --html`: the numbers in the page are the model's, the page is self-contained
and light, and in a real browser (headless Chromium) it draws, switches and shows weights."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import minitx
from minitx.views.attention_page import page_data, unpacked, write_attention_page

from test_cli import minitx as run_cli

TEXT = "ein kind spielt im park"


@pytest.fixture(scope="module")
def page(tiny_translation_run, tmp_path_factory) -> dict:
    """The session's tiny run (2+2 layers), and its page for one sentence written by the command
    line (outside the run directory)."""
    run, out = tiny_translation_run.run, tmp_path_factory.mktemp("page") / "out"
    result = run_cli("attention", run, TEXT, "--html", "--out", out, "-q")
    assert result.returncode == 0, result.stderr
    html = (out / "attention.html").read_text(encoding="utf-8")
    return {"run": run, "out": out, "html": html, "data": _embedded(html)}


def _embedded(html: str) -> dict:
    match = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S)
    assert match, "no embedded data"
    return json.loads(match.group(1))


def test_the_page_holds_the_weights_the_model_computes(page):
    maps = minitx.load(page["run"]).attention(TEXT)  # the model's own forward pass, again
    (example,) = page["data"]["examples"]
    assert example["source_tokens"] == maps["source_tokens"]
    assert example["target_tokens"] == maps["target_tokens"]
    assert example["translation"] == maps["translation"]
    recorded = example["maps"][: len(maps["maps"])]  # then the rollout views
    assert [(m["kind"], m["layer"]) for m in recorded] == [
        (m["kind"], m["layer"]) for m in maps["maps"]
    ]
    for shown, computed in zip(recorded, maps["maps"], strict=True):
        weights = unpacked(shown["weights"])
        assert weights.shape == computed["weights"].shape
        assert torch.equal(weights, computed["weights"])  # float32, exactly
    masks = {m["kind"]: m["mask"] for m in example["maps"]}
    assert masks == {
        "encoder_self": "none",
        "decoder_self": "causal",
        "cross": "none",
        "encoder_rollout": "none",
        "decoder_rollout": "causal",
    }


def test_the_step_terms_on_the_page_reproduce_each_layer_output(page):
    """For every layer and kind: the page's raw scores, scale, position bias and mask give its
    weights through a softmax; its head outputs, through the model's own output projection, give
    the output the layer computed (within 1e-5); its half-precision values and shares agree with
    them to their 3 digits."""
    model = minitx.load(page["run"])
    network = model.engine.model
    modules = {("encoder_self", i): layer.self_attention for i, layer in
               enumerate(network.encoder.layers)}  # fmt: skip
    for i, layer in enumerate(network.decoder.layers):
        modules[("decoder_self", i)], modules[("cross", i)] = (
            layer.self_attention,
            layer.cross_attention,
        )
    outputs, hooks = {}, []
    for key, module in modules.items():
        hooks.append(module.register_forward_hook(
            lambda m, args, out, key=key: outputs.__setitem__(key, out[0].detach())))  # fmt: skip
    model.attention(TEXT)
    for hook in hooks:
        hook.remove()
    (example,) = page["data"]["examples"]
    recorded = [m for m in example["maps"] if m["steps"] is not None]
    assert {(m["kind"], m["layer"]) for m in recorded} == set(modules)
    for item in recorded:
        steps = {name: unpacked(t) for name, t in item["steps"].items() if isinstance(t, dict)}
        weights, scale = unpacked(item["weights"]), torch.tensor(item["steps"]["scale"])
        scores = steps["raw"] * scale[:, None, None]
        queries, keys = scores.shape[1:]
        if "bias" in steps:  # one value per distance j − i, at index j − i + Tq − 1
            distance = torch.arange(keys)[None, :] - torch.arange(queries)[:, None]
            scores = scores + steps["bias"][:, distance + queries - 1]
        if "allowed" in steps:
            scores = scores.masked_fill(~steps["allowed"], float("-inf"))
        torch.testing.assert_close(scores.softmax(-1), weights, atol=1e-5, rtol=0)
        module = modules[(item["kind"], item["layer"])]
        heads = steps["head_out"].transpose(0, 1).reshape(queries, -1)  # (Tq, H·Dh)
        with torch.no_grad():
            layer_output = module.out_proj(heads)
        torch.testing.assert_close(layer_output, outputs[(item["kind"], item["layer"])],
                                   atol=1e-5, rtol=0)  # fmt: skip
        torch.testing.assert_close(weights @ steps["v"], steps["head_out"], atol=2e-3, rtol=2e-2)
        shares = steps["share"].sum(0) + module.out_proj.bias.detach()
        torch.testing.assert_close(shares, layer_output, atol=2e-3, rtol=2e-2)


def test_rollout_multiplies_the_layers_head_means_with_the_residual_as_identity(page):
    """Abnar & Zuidema's rollout, recomputed here from the recorded weights: after layer l,
    (½W̄_l + ½I) · … · (½W̄_0 + ½I); its rows still sum to 1."""
    maps = minitx.load(page["run"]).attention(TEXT)
    (example,) = page["data"]["examples"]
    for kind in ("encoder", "decoder"):
        layers = [m["weights"].double() for m in maps["maps"] if m["kind"] == f"{kind}_self"]
        shown = [m for m in example["maps"] if m["kind"] == f"{kind}_rollout"]
        assert [m["layer"] for m in shown] == list(range(len(layers))) and len(layers) == 2
        identity = torch.eye(layers[0].shape[-1], dtype=torch.float64)
        flow = identity
        for weights, item in zip(layers, shown, strict=True):
            flow = (0.5 * weights.mean(0) + 0.5 * identity) @ flow
            got = unpacked(item["weights"]).double()[0]
            assert torch.allclose(got, flow, atol=1e-5)
            assert torch.allclose(got.sum(-1), torch.ones(len(got), dtype=torch.float64), atol=1e-5)


def test_the_json_beside_the_page_has_the_same_numbers(page):
    beside = json.loads((page["out"] / "attention.json").read_text(encoding="utf-8"))
    assert beside == page["data"]


def test_the_page_loads_nothing_from_the_network(page):
    html = page["html"]
    # The SVG namespace is a name, not a request; nothing else may point outside the file.
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html)) - {"http://www.w3.org/2000/svg"}
    assert urls == set()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)


def _forty_token_example(with_steps: bool, heads=4, d_model=256, layers=3) -> dict:
    """A 40-token sentence and a 40-token translation through a 3+3-layer, 4-head, d_model 256
    model (the Multi30k model's shape), with a relative position bias in self-attention: the
    largest record that model can have for it."""
    tokens = [f"▁w{i}" for i in range(39)] + ["</s>"]
    torch.manual_seed(0)
    d_head, length = d_model // heads, 40

    def attention_map(kind, layer, queries, keys, bias):
        steps = {
            "q": torch.randn(heads, length, d_head),
            "k": torch.randn(heads, length, d_head),
            "v": torch.randn(heads, length, d_head),
            "raw": torch.randn(heads, length, length),
            "scale": torch.full((heads,), d_head**-0.5),
            "head_out": torch.randn(heads, length, d_head),
            "share": torch.randn(heads, length, d_model),
            "out_bias": torch.randn(d_model),
        }
        if bias:
            distance = torch.arange(length)[None, :] - torch.arange(length)[:, None]
            steps["bias"] = torch.randn(heads, 2 * length - 1)[:, distance + length - 1]
        if kind == "decoder_self":
            steps["allowed"] = torch.ones(length, length, dtype=torch.bool).tril()
        return {"kind": kind, "layer": layer, "queries": queries, "keys": keys,
                "weights": torch.rand(heads, length, length).softmax(-1),
                "steps": steps if with_steps else None}  # fmt: skip

    maps = [attention_map("encoder_self", i, "source", "source", True) for i in range(layers)]
    for i in range(layers):
        maps.append(attention_map("decoder_self", i, "target", "target", True))
        maps.append(attention_map("cross", i, "target", "source", False))
    return {"source_tokens": tokens, "target_tokens": tokens, "translation": "x", "maps": maps}


@pytest.mark.parametrize(("with_steps", "limit"), [(True, 3_000_000), (False, 1_000_000)])
def test_a_forty_token_sentence_of_the_multi30k_model_shape_stays_small(
    with_steps, limit, tmp_path
):
    data = page_data([_forty_token_example(with_steps)], "size", None, 1, "scaled_dot", "relative")
    path = write_attention_page(data, tmp_path / "a.html")
    assert path.stat().st_size <= limit, path.stat().st_size


def test_text_in_the_data_cannot_end_the_script(tmp_path):
    example = {"source_tokens": ["</script><b>"], "target_tokens": [], "maps": []}
    path = write_attention_page(
        page_data([example], "<title>", None, 1, "dot", "none"), tmp_path / "a.html"
    )
    html = path.read_text(encoding="utf-8")
    assert html.count("</script>") == 2  # the data's and the code's own
    assert _embedded(html)["examples"][0]["source_tokens"] == ["</script><b>"]


# --- in a real browser ---------------------------------------------------------------------------


def _chromium():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="browser tests need selenium: pip install 'minitx[browser]'"
    )
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_binary = shutil.which("chromedriver")
    if not binary or not driver_binary:
        pytest.skip("browser tests need Chromium and its driver (Debian: chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver_binary)
    return webdriver.Chrome(options=options, service=service)


@pytest.fixture(scope="module")
def browser():
    driver = _chromium()
    yield driver
    driver.quit()


def _select(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", element_id)).select_by_value(value)


def test_in_chromium_the_page_draws_switches_and_shows_the_weights(page, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get((page["out"] / "attention.html").as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    example = page["data"]["examples"][0]
    lines = browser.find_elements("css selector", "#lines line")
    cells = browser.find_elements("css selector", "#matrix rect.cell")
    n = len(example["source_tokens"])
    assert lines and len(cells) == n * n  # encoder self-attention, layer 0, all heads
    browser.save_screenshot(str(tmp_path / "encoder.png"))

    # Decoder self-attention, layer 1, head 0: the future is masked, not drawn as zeros.
    _select(browser, "kind", "decoder_self")
    _select(browser, "layer", "1")
    _select(browser, "head", "0")
    shown = next(m for m in example["maps"] if m["kind"] == "decoder_self" and m["layer"] == 1)
    t = len(shown["queries"])
    assert t >= 2
    masked = browser.find_elements("css selector", "#matrix rect.masked")
    assert len(masked) == t * (t - 1) // 2
    # Hovering the last query token keeps only its lines, each with the weight the JSON holds.
    last = t - 1
    token = browser.find_elements("css selector", "#lines text.query")[last]
    ActionChains(browser).move_to_element(token).perform()
    drawn = browser.find_elements("css selector", "#lines line")
    assert drawn and {line.get_attribute("data-query") for line in drawn} == {str(last)}
    for line in drawn:
        key, head = int(line.get_attribute("data-key")), int(line.get_attribute("data-head"))
        expected = float(unpacked(shown["weights"])[head, last, key])
        assert head == 0 and key <= last  # only the past and itself
        assert float(line.get_attribute("data-weight")) == pytest.approx(expected, abs=1e-3)
    browser.save_screenshot(str(tmp_path / "decoder.png"))
    assert (tmp_path / "decoder.png").stat().st_size > 10_000
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_in_chromium_no_request_leaves_the_file(page, browser):
    browser.get((page["out"] / "attention.html").as_uri())
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    assert resources == []
    assert Path(browser.execute_script("return location.pathname")).name == "attention.html"


def test_in_chromium_the_step_view_shows_one_heads_numbers(page, browser):
    """Decoder self-attention, layer 1, head 1, the last query: one table row per key with the
    page's raw score and weight, the future masked, the weights summing to 1; strips for q and
    every key, and for each weighted value, the output and the share."""
    browser.get((page["out"] / "attention.html").as_uri())
    assert browser.find_element("id", "steps-body").value_of_css_property("display") == "none"
    _select(browser, "kind", "decoder_self")
    _select(browser, "layer", "1")
    _select(browser, "head", "1")
    (example,) = page["data"]["examples"]
    shown = next(m for m in example["maps"] if m["kind"] == "decoder_self" and m["layer"] == 1)
    last = len(shown["queries"]) - 1
    _select(browser, "query", str(last - 1))
    query = last - 1
    raw, weights = unpacked(shown["steps"]["raw"]), unpacked(shown["weights"])
    rows = browser.find_elements("css selector", "#scores tr.score-row")
    assert len(rows) == len(shown["keys"])
    for key, row in enumerate(rows):
        assert int(row.get_attribute("data-key")) == key
        assert float(row.get_attribute("data-raw")) == pytest.approx(float(raw[1, query, key]))
        assert float(row.get_attribute("data-weight")) == pytest.approx(
            float(weights[1, query, key]), abs=1e-7
        )
        assert ("masked" in row.get_attribute("class")) == (key > query)
    total = browser.find_element("css selector", "#weight-sum td:last-child").text
    assert float(total) == pytest.approx(1.0, abs=1e-4)
    vectors = browser.find_elements("css selector", "#step-vectors g.strip")
    assert len(vectors) == 1 + len(shown["keys"])
    d_head = shown["steps"]["q"]["shape"][-1]
    cells = vectors[0].find_elements("css selector", "rect")
    q = unpacked(shown["steps"]["q"])[1, query]
    assert [float(c.get_attribute("data-value")) for c in cells] == pytest.approx(
        q.tolist(), abs=1e-6
    ) and len(cells) == d_head
    outputs = browser.find_elements("css selector", "#step-output g.strip")
    assert len(outputs) == len(shown["keys"]) + 2  # weighted values, the output, the share
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_in_chromium_the_rollout_view_draws_the_flow_without_steps(page, browser):
    browser.get((page["out"] / "attention.html").as_uri())
    _select(browser, "kind", "encoder_rollout")
    _select(browser, "layer", "1")
    (example,) = page["data"]["examples"]
    shown = next(m for m in example["maps"] if m["kind"] == "encoder_rollout" and m["layer"] == 1)
    flow = unpacked(shown["weights"])[0]
    cells = browser.find_elements("css selector", "#matrix rect.cell")
    assert len(cells) == flow.numel()
    for cell in cells:
        i, j = int(cell.get_attribute("data-query")), int(cell.get_attribute("data-key"))
        assert float(cell.get_attribute("data-weight")) == pytest.approx(
            float(flow[i, j]), abs=1e-4
        )
    assert browser.find_element("id", "steps-body").value_of_css_property("display") == "none"
    assert "rollout" in browser.find_element("id", "steps-note").text


def test_a_classifier_page_holds_the_step_terms_of_its_encoder(tiny_classification_run, tmp_path):
    run, out = tiny_classification_run.run, tmp_path / "out"
    result = run_cli("attention", run, "a gorgeous movie", "--html", "--out", out, "-q")
    assert result.returncode == 0, result.stderr
    (example,) = _embedded((out / "attention.html").read_text(encoding="utf-8"))["examples"]
    recorded = [m for m in example["maps"] if m["steps"] is not None]
    assert recorded and {m["kind"] for m in recorded} == {"encoder_self"}
    for item in recorded:
        scale = torch.tensor(item["steps"]["scale"])[:, None, None]
        scores = unpacked(item["steps"]["raw"]) * scale
        queries, keys = scores.shape[1:]
        if "bias" in item["steps"]:
            distance = torch.arange(keys)[None, :] - torch.arange(queries)[:, None]
            scores = scores + unpacked(item["steps"]["bias"])[:, distance + queries - 1]
        if "allowed" in item["steps"]:
            scores = scores.masked_fill(~unpacked(item["steps"]["allowed"]), float("-inf"))
        weights = unpacked(item["weights"])
        torch.testing.assert_close(scores.softmax(-1), weights, atol=1e-5, rtol=0)
        assert example["prediction"]["label"] in ("neg", "pos")
