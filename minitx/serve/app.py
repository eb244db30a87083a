"""`minitx serve`: an HTTP API over a run or an export, with requests that arrive together decoded
as one batch.

POST /translate {"texts": [...], decode options} → {"translations": [[{text, score}, …], …]}
                (with "alignments": true, each hypothesis has its "alignment" too; steering:
                "target_prefix", "constraints", "banned", lists with one entry per text)
POST /predict   {"texts": [...]}                 → {"predictions": [{label, probability, …}, …]}
GET  /health, GET /info, GET /metrics (Prometheus); OpenAPI docs at /docs (FastAPI).

Dynamic batching: a request's texts join a queue; one worker takes what has arrived (waiting up to
`max_wait_ms` for more, up to `max_batch_texts` texts) and decodes requests with the same decode
settings (validated once per request, when it arrives) in one call, on one thread, since the model
is not made for concurrent calls. A bad request gets a 4xx naming what to fix and never reaches
the model; on SIGTERM uvicorn stops accepting, the requests in flight are answered, and the
process exits 0.
"""

from dataclasses import asdict

from minitx.api import Model
from minitx.errors import UserError
from minitx.inference.alignments import format_alignments
from minitx.inference.searches import search_for
from minitx.inference.steering import Steering, check_steering
from minitx.serve.batching import Batcher, DeadlineExceeded, Overloaded, ServeOptions
from minitx.serve.keys import ApiKeys
from minitx.serve.limits import BodyLimit
from minitx.serve.metrics import Metrics


def create_app(model: Model, info: dict, options: ServeOptions, keys: ApiKeys | None = None):
    """The FastAPI application serving `model`; `info` is what GET /info reports. With `keys`,
    every route but GET /health needs one of them."""
    from fastapi import FastAPI, HTTPException
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse

    from minitx.serve.schema import request_models

    TranslateRequest, PredictRequest = request_models(options)
    translator = Batcher(
        lambda items, decode: model.translate(
            [text for text, _ in items],
            decode=decode,
            steering=[steering for _, steering in items],
        ),
        options,
    )
    classifier = Batcher(lambda texts, _: model.predict(texts), options)

    async def lifespan(app):
        translator.start()
        classifier.start()
        yield
        await translator.stop()
        await classifier.stop()

    app = FastAPI(title="minitx", summary=f"{model.task.name} model", lifespan=lifespan)
    app.state.batchers = {"translate": translator, "predict": classifier}

    if keys is not None:
        keys.guard(app)
    app.add_middleware(BodyLimit, limit=options.max_body_bytes)
    metrics = Metrics()
    metrics.watch(app)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, error: RequestValidationError):
        # FastAPI's own handler echoes each bad value back; one that JSON cannot carry (a lone
        # surrogate from a "\\ud800" escape) made that answer a 500. Where and why is enough.
        problems = [{k: v for k, v in e.items() if k != "input"} for e in error.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(problems)})

    def require(writes_text: bool, route: str) -> None:
        if model.task.generates_text != writes_text:
            raise HTTPException(
                404, f"this server holds a {model.task.name} model; {route} is not served"
            )

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    async def show_info() -> dict:
        return info

    @app.get("/metrics", response_class=PlainTextResponse)
    async def show_metrics() -> str:
        return metrics.render(app.state.batchers)

    @app.post("/translate")
    async def translate(request: TranslateRequest) -> dict:
        require(True, "/translate")
        decode, steering = _checked(model, request)  # a bad request never reaches a batch
        items = list(zip(request.texts, steering, strict=True))
        found = await _queued(translator, model, request, items, decode)
        return {"translations": [[_hypothesis(h) for h in t.hypotheses] for t in found]}

    @app.post("/predict")
    async def predict(request: PredictRequest) -> dict:
        require(False, "/predict")
        found = await _queued(classifier, model, request, request.texts, None)
        return {"predictions": [_prediction(p) for p in found]}

    return app


async def _queued(batcher: Batcher, model: Model, request, items: list, options) -> list:
    """`items` through `batcher`, counted in source tokens, within the request's deadline (the
    server's, or the shorter one the client sends as `timeout_s`). A full queue is a 429 with
    Retry-After, a missed deadline a 504, a model-side refusal a 400."""
    from fastapi import HTTPException

    tokens = sum(len(ids) for ids in model.codecs.src.encode(list(request.texts)))
    timeout = batcher.options.request_timeout
    if request.timeout_s is not None:
        timeout = min(timeout, request.timeout_s)
    try:
        return await batcher.submit(items, options, tokens, timeout)
    except UserError as error:
        raise HTTPException(400, str(error)) from None
    except Overloaded as error:
        headers = {"Retry-After": str(error.retry_after)}
        raise HTTPException(429, str(error), headers=headers) from None
    except DeadlineExceeded as error:
        raise HTTPException(504, str(error)) from None


def _checked(model: Model, request) -> tuple:
    """A translate request's decode settings and steering, validated once, here, each batch then
    reusing them: a bad option is a 400, bad steering a 422 (as a bad field), with the reason."""
    from fastapi import HTTPException

    steered = {"target_prefix", "constraints", "banned"}
    given = request.model_dump(exclude={"texts", "timeout_s", *steered}, exclude_none=True)
    try:
        decode = model.decode_config(**given)
    except UserError as error:
        raise HTTPException(400, str(error)) from None
    try:
        return decode, _steering(request, decode)
    except UserError as error:
        raise HTTPException(422, str(error)) from None


def _steering(request, decode) -> list[Steering | None]:
    """Each text's Steering from the request's per-text lists, checked as the CLI checks them."""
    texts = len(request.texts)
    columns = {}
    for name in ("target_prefix", "constraints", "banned"):
        values = getattr(request, name)
        if values is not None and len(values) != texts:
            raise UserError(f"{name} has {len(values)} entries for {texts} texts: one per text")
        columns[name] = values or [None] * texts
    steering = []
    for number, (prefix, constraints, banned) in enumerate(
        zip(*columns.values(), strict=True), start=1
    ):
        one = Steering(prefix or "", tuple(constraints or ()), tuple(banned or ()))
        check_steering(one, decode.max_phrases, f"text {number}")
        steering.append(one or None)
    if any(one and one.constraints for one in steering):
        search_for(decode, constrained=True)  # refuses settings no constrained search serves
    return steering


def _hypothesis(hypothesis) -> dict:
    found = {"text": hypothesis.text, "score": round(hypothesis.score, 4)}
    if hypothesis.alignment is not None:
        found["alignment"] = format_alignments(hypothesis.alignment)
    return found


def _prediction(prediction) -> dict:
    return {
        "label": prediction.label,
        "probability": round(prediction.probability, 4),
        "probabilities": {k: round(v, 4) for k, v in prediction.probabilities.items()},
    }


def server_info(model: Model) -> dict:
    """What GET /info says: the task, a summary of the model, the checkpoint, the engine, and
    the model's value of every decode option a request may set."""
    cfg = model.config
    return {
        "task": model.task.name,
        "source": str(model.run),
        "engine": model.engine.name,
        "checkpoint_step": model.checkpoint_step,
        **({"ensemble": list(model.members)} if model.members else {}),
        "model": model.task.model_summary(cfg),
        "decode": asdict(cfg.decode),
        "labels": model.labels,
    }
