"""Commands that take a run elsewhere or bring one in: `minitx export`, `minitx serve` and
`minitx import`."""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path

import typer

from minitx.cli.app import CHECKPOINT, QUIET, RUN_DIR, SETS, app, start
from minitx.errors import UserError

log = logging.getLogger(__name__)


@app.command()
def export(
    run_dir: Path = RUN_DIR,
    out: Path = typer.Option(..., "--out", "-o", help="The export directory (absent or empty)."),
    export_format: str | None = typer.Option(
        None,
        "--format",
        help="ctranslate2 or transformers (models that write text), onnx (classifiers) "
        "[default: the first that fits the run].",
    ),
    quantization: str = typer.Option(
        "none", "--quantization", help="CTranslate2 weights: none, int8, int8_float32, float16."
    ),
    checkpoint: str = CHECKPOINT,
    quiet: bool = QUIET,
) -> None:
    """Export a run for CTranslate2, ONNX Runtime or transformers.

    CTranslate2 and transformers run models that write text, ONNX Runtime classifiers. The
    directory holds the model, config, tokenizer and export.json; `minitx translate`, `minitx
    predict` and `minitx.load` take it in place of the run. A transformers export also loads with
    transformers alone (AutoModelForSeq2SeqLM, AutoTokenizer, pipeline) and carries a model card.
    Needs pip install 'minitx[export]' (CTranslate2, ONNX) or 'minitx[hf]' (transformers).

    Examples:

    \b
      minitx export runs/multi30k_de_en_raw --out exports/m30k_int8 --quantization int8
      minitx translate exports/m30k_int8 "Ein Hund rennt im Park."
      minitx export runs/sst2 --out exports/sst2_onnx
      minitx export runs/quickstart --format transformers --out exports/quickstart_hf
    """
    from minitx.api import export_run

    start(quiet)
    info = export_run(run_dir, out, export_format, quantization, checkpoint)
    typer.echo(f"wrote {out} ({info['format']}, step {info['step']} of {run_dir})")


@app.command()
def serve(
    run_dir: Path = typer.Argument(..., help="A run directory, or an export of one."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    max_batch_texts: int = typer.Option(
        64, "--max-batch-texts", min=1, help="Texts decoded together at most."
    ),
    max_wait_ms: float = typer.Option(
        5.0, "--max-wait-ms", min=0.0, help="How long a request waits for others to batch with."
    ),
    max_texts: int = typer.Option(64, "--max-texts", min=1, help="Texts one request may send."),
    max_chars: int = typer.Option(2000, "--max-chars", min=1, help="Characters one text may have."),
    batching: bool = typer.Option(
        True, "--batching/--no-batching", help="Decode requests that arrive together as one batch."
    ),
    max_concurrent_requests: int = typer.Option(
        128, "--max-concurrent-requests", min=1, help="Requests queued or decoding; more get 429."
    ),
    max_queued_tokens: int = typer.Option(
        32768, "--max-queued-tokens", min=1, help="Their source tokens; more get 429."
    ),
    request_timeout: float = typer.Option(
        60.0, "--request-timeout", min=0.001, help="Seconds a request may wait; then 504."
    ),
    max_body_bytes: int = typer.Option(
        2_000_000, "--max-body-bytes", min=1, help="Larger request bodies get 413."
    ),
    api_key_file: Path | None = typer.Option(
        None,
        "--api-key-file",
        help="Require one of these keys (one per line; SIGHUP reads the file again); "
        "else MINITX_API_KEY if set.",
    ),
    ensemble: list[Path] = typer.Option(
        None, "--ensemble", help="Another run to decode with, as one ensemble (repeatable)."
    ),
    checkpoint: str = CHECKPOINT,
    overrides: list[str] = SETS,
    quiet: bool = QUIET,
) -> None:
    """Serve a run or an export over HTTP.

    POST /translate or /predict, GET /health and /info, OpenAPI docs at /docs. With
    --api-key-file (or MINITX_API_KEY) every route but /health needs Authorization: Bearer KEY.
    Needs pip install 'minitx[serve]'.

    Examples:

    \b
      minitx serve runs/multi30k_de_en_raw --port 8000
      curl -s localhost:8000/translate -H 'content-type: application/json'
        -d '{"texts": ["Ein Hund rennt."], "beam_size": 5}'
    """
    from minitx.api import load

    start(quiet)
    try:
        import uvicorn

        from minitx.serve.app import ServeOptions, create_app, server_info
        from minitx.serve.keys import ApiKeys
    except ImportError:
        raise UserError(
            "minitx serve needs FastAPI and uvicorn: pip install 'minitx[serve]'"
        ) from None
    keys = ApiKeys.configured(api_key_file)
    if keys is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            f"serving on {host} without an API key: anyone who reaches port {port} can use the "
            "model; give --api-key-file or set MINITX_API_KEY"
        )
    listening = _listening_socket(host, port)  # before the model loads: a taken port fails fast
    model = load([run_dir, *(ensemble or [])], checkpoint, overrides=overrides)
    options = ServeOptions(
        max_batch_texts,
        max_wait_ms,
        max_texts,
        max_chars,
        batching,
        max_concurrent_requests,
        max_queued_tokens,
        request_timeout,
        max_body_bytes,
    )
    app_ = create_app(model, server_info(model), options, keys)
    if keys is not None:
        signal.signal(signal.SIGHUP, lambda *_: keys.reload())  # rotate keys without a restart
    # uvicorn answers SIGTERM by draining the requests in flight, then raises the signal again
    # with the handler it found: this one makes that a clean exit 0, as a process manager expects.
    signal.signal(signal.SIGTERM, lambda *_: None)
    config = uvicorn.Config(app_, log_level="warning" if quiet else "info")
    uvicorn.Server(config).run(sockets=[listening])


def _listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so that an address in use (or not this machine's) is one
    error line, not uvicorn's start-up and shutdown log."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as error:
        reason = error.strerror or str(error)
        raise UserError(
            f"cannot listen on {host}:{port} ({reason}); choose another --port or --host"
        ) from None
    return listening


@app.command("import")
def import_model(
    source: str = typer.Argument(
        ..., metavar="hf:SOURCE", help="hf:PATH (a Marian folder) or hf:HUB_ID (an OPUS-MT model)."
    ),
    run_dir: Path = typer.Argument(..., help="The run directory to write (absent or empty)."),
    quiet: bool = QUIET,
) -> None:
    """Import a Marian (OPUS-MT) model from transformers as a run.

    The run computes the Marian model's function (the same logits) with minitx's own model
    options and a tokenizer per side that segments as Marian's SentencePiece models do; then
    eval, translate, attention, export, serve and train.init_from work on it like on any run.
    Needs pip install 'minitx[hf]'.

    Examples:

    \b
      minitx import hf:Helsinki-NLP/opus-mt-de-en runs/opus_de_en
      minitx eval runs/opus_de_en --split test_2016_flickr --set data.path=../shared/data/multi30k
      minitx translate runs/opus_de_en "Ein Hund rennt durch den Park."
    """
    from minitx.interop.marian import import_marian

    start(quiet)
    info = import_marian(source, run_dir)
    typer.echo(f"wrote {run_dir} ({info['architecture']} from {source[3:]})")
