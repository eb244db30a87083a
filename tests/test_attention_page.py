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
from minitx.views.attention_page import SCALE, page_data, write_attention_page

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
        weights = torch.tensor(shown["weights"], dtype=torch.float64) / page["data"]["scale"]
        assert weights.shape == computed["weights"].shape
        assert torch.allclose(weights, computed["weights"].double(), atol=0.6 / SCALE)
    masks = {m["kind"]: m["mask"] for m in example["maps"]}
    assert masks == {
        "encoder_self": "none",
        "decoder_self": "causal",
        "cross": "none",
        "encoder_rollout": "none",
        "decoder_rollout": "causal",
    }


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
            got = torch.tensor(item["weights"], dtype=torch.float64)[0] / SCALE
            assert torch.allclose(got, flow, atol=1e-3)
            assert torch.allclose(got.sum(-1), torch.ones(len(got), dtype=torch.float64), atol=2e-3)


def test_the_json_beside_the_page_has_the_same_numbers(page):
    beside = json.loads((page["out"] / "attention.json").read_text(encoding="utf-8"))
    assert beside == page["data"]


def test_the_page_loads_nothing_from_the_network(page):
    html = page["html"]
    # The SVG namespace is a name, not a request; nothing else may point outside the file.
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html)) - {"http://www.w3.org/2000/svg"}
    assert urls == set()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)


def test_a_forty_token_sentence_of_a_3_plus_3_layer_4_head_model_stays_under_1_mb(tmp_path):
    tokens = [f"▁w{i}" for i in range(39)] + ["</s>"]
    torch.manual_seed(0)

    def weights(queries, keys):
        return torch.rand(4, queries, keys).softmax(-1)

    maps = [{"kind": "encoder_self", "layer": i, "queries": "source", "keys": "source",
             "weights": weights(40, 40)} for i in range(3)]  # fmt: skip
    for i in range(3):
        maps.append({"kind": "decoder_self", "layer": i, "queries": "target", "keys": "target",
                     "weights": weights(40, 40)})  # fmt: skip
        maps.append({"kind": "cross", "layer": i, "queries": "target", "keys": "source",
                     "weights": weights(40, 40)})  # fmt: skip
    example = {"source_tokens": tokens, "target_tokens": tokens, "translation": "x", "maps": maps}
    path = write_attention_page(page_data([example], "size", None, 1), tmp_path / "a.html")
    assert path.stat().st_size <= 1_000_000, path.stat().st_size


def test_text_in_the_data_cannot_end_the_script(tmp_path):
    example = {"source_tokens": ["</script><b>"], "target_tokens": [], "maps": []}
    path = write_attention_page(page_data([example], "<title>", None, 1), tmp_path / "a.html")
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
        expected = shown["weights"][head][last][key] / page["data"]["scale"]
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
