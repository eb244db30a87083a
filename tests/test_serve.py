"""`minitx serve`: the HTTP API, its dynamic batching, bad requests, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from minitx.api import load  # noqa: E402
from minitx.config import DecodeConfig  # noqa: E402
from minitx.serve.app import Batcher, ServeOptions, create_app, server_info  # noqa: E402

from test_cli import assert_user_error, minitx  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tiny_translation_run):
    return tiny_translation_run.run  # read only: served, never written


@pytest.fixture(scope="module")
def model(run_dir):
    return load(run_dir)


@pytest.fixture(scope="module")
def client(model):
    app = create_app(model, server_info(model), ServeOptions(max_texts=4, max_chars=50))
    with TestClient(app) as client:
        yield client


def test_health_info_and_a_translation_as_the_api_gives_it(client, model):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["task"] == "translation" and info["engine"] == "pytorch"
    assert info["checkpoint_step"] == 6
    # every decode option a request may set, with the model's value
    assert info["decode"] == dataclasses.asdict(model.config.decode)
    assert info["decode"]["beam_size"] == 2
    texts = ["ein hund rennt", "eine katze schläft"]
    reply = client.post("/translate", json={"texts": texts, "beam_size": 2, "n_best": 2})
    assert reply.status_code == 200
    expected = model.translate(texts, beam_size=2, n_best=2)
    assert [[h["text"] for h in t] for t in reply.json()["translations"]] == [
        [h.text for h in t.hypotheses] for t in expected
    ]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 422, "JSON decode error"),
        (json.dumps({"texts": "one text"}).encode(), 422, "valid list"),
        (json.dumps({"texts": []}).encode(), 422, "at least 1 item"),
        (json.dumps({"texts": ["a"] * 5}).encode(), 422, "at most 4 items"),
        (json.dumps({"texts": ["a" * 51]}).encode(), 422, "at most 50 characters"),
        (json.dumps({"texts": ["a"], "beam": 3}).encode(), 422, "Extra inputs"),
        (json.dumps({"texts": ["a"], "beam_size": "3"}).encode(), 422, "valid integer"),
        (json.dumps({"texts": ["a"], "beam_size": 65}).encode(), 422, "less than or equal to 64"),
        (json.dumps({"texts": ["a"], "top_p": 0}).encode(), 422, "greater than 0"),
        (json.dumps({"texts": ["a"], "n_best": 3}).encode(), 400, "decode.n_best"),
        (b'{"texts": ["\\ud800 one"]}', 422, "unable to parse raw data as a unicode string"),
    ],
)
def test_a_bad_request_gets_a_4xx_and_the_next_one_is_served(client, body, status, fragment):
    headers = {"content-type": "application/json"}
    reply = client.post("/translate", content=body, headers=headers)
    assert reply.status_code == status and fragment in reply.text
    assert client.post("/translate", json={"texts": ["ein hund rennt"]}).status_code == 200


def test_a_request_is_validated_once_and_its_settings_reach_the_batch(client, model, monkeypatch):
    """The route checks the options; the batch decodes with that DecodeConfig, unchecked again."""
    checks, decoded = [], []
    decode_config, translate = model.decode_config, model.translate
    monkeypatch.setattr(model, "decode_config", lambda **o: checks.append(o) or decode_config(**o))
    monkeypatch.setattr(
        model, "translate", lambda texts, **k: decoded.append(k) or translate(texts, **k)
    )
    body = {"texts": ["ein hund rennt"], "beam_size": 2, "n_best": 2, "alignments": True}
    reply = client.post("/translate", json=body)
    assert reply.status_code == 200 and checks == [
        {"beam_size": 2, "n_best": 2, "alignments": True}
    ]
    assert [set(k) for k in decoded] == [{"decode", "steering"}]
    assert decoded[0]["steering"] == [None]
    assert (decoded[0]["decode"].n_best, decoded[0]["decode"].alignments) == (2, True)
    hypotheses = reply.json()["translations"][0]
    assert len(hypotheses) == 2 and all("alignment" in h for h in hypotheses)


def test_predict_is_not_served_by_a_translation_model(client):
    reply = client.post("/predict", json={"texts": ["a"]})
    assert reply.status_code == 404 and "translation model" in reply.text


@pytest.mark.parametrize("batching", [True, False])
def test_requests_that_arrive_together_are_decoded_together(batching):
    calls = []

    def run_group(texts, decode):
        calls.append(list(texts))
        return [f"{text}!{decode.beam_size}" for text in texts]

    async def scenario():
        batcher = Batcher(run_group, ServeOptions(max_wait_ms=200, batching=batching))
        batcher.start()
        usual, wide = DecodeConfig(), DecodeConfig(beam_size=2)
        requests = [(["a", "b"], usual), (["c"], usual), (["d"], wide), (["e"], DecodeConfig())]
        results = await asyncio.gather(*(batcher.submit(t, o) for t, o in requests))
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert results == [["a!5", "b!5"], ["c!5"], ["d!2"], ["e!5"]]
    # together: one call per distinct decode setting; alone: one per request
    assert len(calls) == (2 if batching else 4)


def test_one_bad_request_in_a_batch_fails_alone():
    def run_group(texts, options):
        if "bad" in texts:
            raise ValueError("bad input")
        return [text.upper() for text in texts]

    async def scenario():
        batcher = Batcher(run_group, ServeOptions(max_wait_ms=200))
        batcher.start()
        requests = [batcher.submit([text], None) for text in ("a", "bad", "c")]
        results = await asyncio.gather(*requests, return_exceptions=True)
        await batcher.stop()
        return results

    good, bad, other = asyncio.run(scenario())
    assert good == ["A"] and other == ["C"] and isinstance(bad, ValueError)


def test_a_full_queue_refuses_at_once_and_a_late_request_is_dropped_unprocessed():
    """One request at a time: the second is refused (Overloaded) without waiting; a request whose
    deadline passes while queued is answered DeadlineExceeded and never reaches run_group."""
    import time

    from minitx.serve.batching import DeadlineExceeded, Overloaded

    seen = []

    def run_group(texts, options):
        seen.extend(texts)
        time.sleep(0.3)
        return list(texts)

    async def scenario():
        batcher = Batcher(run_group, ServeOptions(max_wait_ms=0, max_concurrent_requests=1))
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["a"], None))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(Overloaded):
            await batcher.submit(["b"], None)
        refused_in = time.monotonic() - started
        assert await first == ["a"]
        # tokens: a second request past the token bound is refused; a lone one is always taken
        tight = Batcher(run_group, ServeOptions(max_wait_ms=0, max_queued_tokens=5))
        tight.start()
        big = asyncio.ensure_future(tight.submit(["c"], None, tokens=50))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await tight.submit(["d"], None, tokens=1)
        assert await big == ["c"]
        # a deadline: "f" waits behind "e" past its 0.1 s and is dropped unprocessed
        queue = Batcher(run_group, ServeOptions(max_wait_ms=0))
        queue.start()
        slow = asyncio.ensure_future(queue.submit(["e"], None))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceeded):
            await queue.submit(["f"], None, timeout=0.1)
        await slow
        for each in (batcher, tight, queue):
            await each.stop()
        return refused_in, queue.dropped

    refused_in, dropped = asyncio.run(scenario())
    assert refused_in < 0.1 and dropped == 1
    assert seen == ["a", "c", "e"]


def test_limits_over_http_are_429_504_and_413(model):
    from minitx.serve.batching import Overloaded

    options = ServeOptions(max_body_bytes=300)
    app = create_app(model, server_info(model), options)
    with TestClient(app) as client:
        reply = client.post("/translate", json={"texts": ["ein hund " * 40]})
        assert reply.status_code == 413 and "over 300 bytes" in reply.text
        chunks = (part for part in [b'{"texts": ["', b"x" * 400, b'"]}'])
        reply = client.post(
            "/translate", content=chunks, headers={"content-type": "application/json"}
        )
        assert reply.status_code == 413
        batcher = app.state.batchers["translate"]

        async def busy(*args, **kwargs):
            raise Overloaded(retry_after=2)

        batcher.submit = busy
        reply = client.post("/translate", json={"texts": ["ein hund"]})
        assert reply.status_code == 429 and reply.headers["retry-after"] == "2"
        del batcher.submit
        reply = client.post("/translate", json={"texts": ["ein hund"], "timeout_s": 1e-9})
        assert reply.status_code == 504 and "no answer within" in reply.text
        assert client.post("/translate", json={"texts": ["ein hund"]}).status_code == 200
        reply = client.post("/translate", json={"texts": ["ein hund"], "timeout_s": 0})
        assert reply.status_code == 422


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sigterm_answers_the_request_in_flight_and_exits_0(run_dir):
    port = _free_port()
    server = subprocess.Popen(
        # A request waits up to 1 s for others to batch with: SIGTERM comes while it waits.
        [sys.executable, "-m", "minitx", "serve", str(run_dir), "--port", str(port), "-q"]
        + ["--max-wait-ms", "1000"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        replies = []

        def slow_request():
            body = json.dumps({"texts": ["ein kind spielt im park"], "beam_size": 2}).encode()
            request = urllib.request.Request(
                f"{base}/translate", body, {"content-type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=60) as reply:
                replies.append(reply.status)

        client = threading.Thread(target=slow_request)
        client.start()
        time.sleep(0.3)  # accepted and queued, not yet decoded
        server.send_signal(signal.SIGTERM)
        client.join(60)
        assert server.wait(60) == 0, server.stderr.read()
        assert replies == [200]
    finally:
        server.kill()


def test_a_port_in_use_is_one_error_line(run_dir):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = minitx("serve", str(run_dir), "--port", str(port))
    finally:
        taken.close()
    assert_user_error(result, f"cannot listen on 127.0.0.1:{port}", "choose another --port")


def test_predict_serves_a_classifier(tiny_classification_run):
    model = load(tiny_classification_run.run)
    with TestClient(create_app(model, server_info(model), ServeOptions())) as client:
        reply = client.post("/predict", json={"texts": ["a good film", "a bad film"]})
        assert client.post("/translate", json={"texts": ["a"]}).status_code == 404
    expected = model.predict(["a good film", "a bad film"])
    found = reply.json()["predictions"]
    assert [p["label"] for p in found] == [p.label for p in expected]
    assert set(found[0]["probabilities"]) == {"neg", "pos"}


def test_with_api_keys_every_route_but_health_needs_one_and_keys_rotate(model, tmp_path):
    from minitx.serve.keys import ApiKeys

    key_file = tmp_path / "keys.txt"
    key_file.write_text("# operators\nfirst-key\nsecond-key\n")
    keys = ApiKeys(path=key_file)
    body = {"texts": ["ein hund rennt"]}
    with TestClient(create_app(model, server_info(model), ServeOptions(), keys)) as client:
        assert client.get("/health").status_code == 200  # open for probes
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "first-key"}):
            reply = client.post("/translate", json=body, headers=headers)
            assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
            assert "first-key" not in reply.text and "second-key" not in reply.text
        assert client.get("/info").status_code == 401
        good = {"Authorization": "Bearer second-key"}
        assert client.post("/translate", json=body, headers=good).status_code == 200
        key_file.write_text("third-key\n")
        keys.reload()  # what SIGHUP does
        assert client.post("/translate", json=body, headers=good).status_code == 401
        third = {"Authorization": "Bearer third-key"}
        assert client.post("/translate", json=body, headers=third).status_code == 200
        key_file.write_text("")  # a file emptied by mistake keeps the keys that were there
        keys.reload()
        assert client.post("/translate", json=body, headers=third).status_code == 200


def test_a_missing_key_file_is_one_error_line(run_dir, tmp_path):
    result = minitx("serve", str(run_dir), "--api-key-file", str(tmp_path / "none.txt"))
    assert_user_error(result, "cannot read the API key file")


def test_listening_beyond_loopback_without_a_key_warns(run_dir):
    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))  # taken, so the server stops right after its checks
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = minitx("serve", str(run_dir), "--host", "0.0.0.0", "--port", str(port))
    finally:
        taken.close()
    assert result.returncode == 2
    assert "without an API key: anyone who reaches port" in result.stderr


def test_steering_fields_steer_each_text_as_the_api_does(client, model):
    from minitx.inference.steering import Steering

    texts = ["ein hund rennt", "eine katze schläft"]
    body = {"texts": texts, "beam_size": 2, "target_prefix": ["a dog", ""],
            "constraints": [[], ["park"]], "banned": [["cat"], []]}  # fmt: skip
    reply = client.post("/translate", json=body)
    assert reply.status_code == 200, reply.text
    steering = [Steering("a dog", (), ("cat",)), Steering("", ("park",), ())]
    expected = model.translate(texts, beam_size=2, steering=steering)
    assert [t[0]["text"] for t in reply.json()["translations"]] == [t.text for t in expected]
    assert reply.json()["translations"][1][0]["text"].count("park") >= 1


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"constraints": [["park"]]}, "constraints has 1 entries for 2 texts"),
        ({"constraints": [[""], []]}, "at least 1 character"),
        ({"banned": [["a"] * 9, []]}, "at most 8"),
        ({"constraints": [["dog"], []], "beam_size": 1}, "need beam search"),
    ],
)
def test_bad_steering_is_refused_with_a_message(client, extra, fragment):
    reply = client.post("/translate", json={"texts": ["ein hund", "eine katze"], **extra})
    assert reply.status_code == 422 and fragment in reply.text, reply.text
    assert client.post("/translate", json={"texts": ["ein hund"]}).status_code == 200


def test_an_ensemble_is_served_and_named_in_info(run_dir, model):
    pair = load([run_dir, run_dir])
    with TestClient(create_app(pair, server_info(pair), ServeOptions())) as client:
        assert client.get("/info").json()["ensemble"] == [str(run_dir)] * 2
        reply = client.post("/translate", json={"texts": ["ein hund rennt"], "beam_size": 2})
        assert (
            reply.json()["translations"][0][0]["text"]
            == model.translate(["ein hund rennt"], beam_size=2)[0].text
        )


def test_metrics_count_answers_by_status_latency_and_queues(model):
    options = ServeOptions(max_body_bytes=300)
    with TestClient(create_app(model, server_info(model), options)) as client:
        assert client.post("/translate", json={"texts": ["ein hund"]}).status_code == 200
        assert client.post("/translate", json={"texts": ["x" * 400]}).status_code == 413
        assert client.post("/translate", json={"texts": []}).status_code == 422
        text = client.get("/metrics").text
    assert 'minitx_requests_total{route="/translate",status="200"} 1' in text
    assert 'minitx_requests_total{route="/translate",status="413"} 1' in text
    assert 'minitx_requests_total{route="/translate",status="422"} 1' in text
    assert 'minitx_request_seconds_count{route="/translate"} 3' in text
    assert 'minitx_request_seconds_bucket{route="/translate",le="+Inf"} 3' in text
    assert 'minitx_queue_requests{route="/translate"} 0' in text
    assert 'minitx_batches_total{route="/translate"} 1' in text
    for line in text.splitlines():  # the exposition format: comments, or a name, labels, a number
        assert line.startswith("# ") or float(line.rsplit(" ", 1)[1]) >= 0
