"""`minitx report`: one self-contained page whose numbers are the run's own."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import sacrebleu
from test_attention_page import _chromium

from test_cli import minitx


@pytest.fixture(scope="module")
def reported(tiny_translation_run, tmp_path_factory):
    """A copy of the session's tiny translation run (12 steps, logged every 3), evaluated and
    reported."""
    root = tmp_path_factory.mktemp("report")
    tiny_translation_run.copy(root)
    assert minitx("eval", root / "run", "--beam", "1", "-q").returncode == 0
    result = minitx("report", root / "run", "-q")
    assert result.returncode == 0, result.stderr
    return root / "run"


def _events(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_curves_carry_the_logged_numbers(reported):
    page = (reported / "report.html").read_text(encoding="utf-8")
    chart = re.search(r'<svg class="chart" data-name="train loss".*?</svg>', page, re.S).group(0)
    drawn = [
        (int(s), float(v)) for s, v in re.findall(r'data-x="(\d+)" data-value="([^"]+)"', chart)
    ]
    logged = [(e["step"], e["loss"]) for e in _events(reported) if e["event"] == "train"]
    assert drawn == logged and len(logged) == 4
    assert 'data-name="validation bleu"' in page


def test_the_eval_results_and_samples_are_the_runs(reported):
    page = (reported / "report.html").read_text(encoding="utf-8")
    report = json.loads((reported / "eval/test.json").read_text())
    shown = re.search(r"data-key='bleu'>([^<]+)<", page).group(1)
    assert float(shown) == report["bleu"] and report["bleu_signature"] in page
    rows = re.findall(
        r"<tr><td>([\d.]+)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
        r"<td><a href='report_attention.html#example=(\d+)'>",
        page,
    )
    hypotheses = (reported / "eval/test.hyp").read_text().splitlines()
    assert len(rows) == len(hypotheses) == 3  # 3 test pairs: every one is among the best or worst
    scores = [float(chrf) for chrf, *_ in rows]
    assert scores == sorted(scores, reverse=True)
    for chrf, _, hypothesis, reference, _ in rows:
        assert hypothesis in hypotheses
        assert float(chrf) == round(sacrebleu.sentence_chrf(hypothesis, [reference]).score, 2)
    attention = (reported / "report_attention.html").read_text(encoding="utf-8")
    assert [int(r[4]) for r in rows] == [0, 1, 2] and attention.count('"source_tokens"') == 3


def test_the_report_loads_nothing_from_the_network(reported):
    page = (reported / "report.html").read_text(encoding="utf-8")
    assert re.findall(r"https?://", page) == []


def test_a_run_still_training_gets_a_report_of_what_is_there(reported, tmp_path):
    run = tmp_path / "running"
    shutil.copytree(reported, run)
    shutil.rmtree(run / "eval")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["event"] != "end"]
    (run / "metrics.jsonl").write_text("\n".join(kept) + '\n{"event": "tra')  # cut mid-write
    result = minitx("report", run, "-q")
    assert result.returncode == 0, result.stderr
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "training (or stopped without an end event)" in page and 'data-name="train loss"' in page


def test_in_chromium_the_report_shows_and_links_to_the_attention_of_a_sample(reported, tmp_path):
    browser = _chromium()
    try:
        browser.get((reported / "report.html").as_uri())
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
        assert len(browser.find_elements("css selector", "svg.chart")) >= 6
        browser.save_screenshot(str(tmp_path / "report.png"))
        link = browser.find_elements("css selector", "a[href^='report_attention.html']")[1]
        link.click()
        assert browser.find_element("id", "example").get_attribute("value") == "1"
        assert browser.find_elements("css selector", "#lines line")
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        browser.quit()


def test_a_classifier_report_shows_its_confusion_matrix(tiny_classification_run, tmp_path):
    run = tiny_classification_run.copy(tmp_path)  # eval and report write into the run directory
    assert minitx("eval", run, "-q").returncode == 0
    assert minitx("report", run, "-q").returncode == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    matrix = json.loads((run / "eval/test.json").read_text())["confusion_matrix"]
    table = re.search(r"<table class='confusion'>(.*?)</table>", page, re.S).group(1)
    cells = [
        [int(n) for n in re.findall(r"<td>(\d+)</td>", row)] for row in table.split("</tr>")[1:-1]
    ]
    assert cells == matrix["matrix"] and sum(map(sum, cells)) == 30
    assert "classification" in page and not (run / "report_attention.html").exists()
