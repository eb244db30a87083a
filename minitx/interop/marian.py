"""`minitx import hf:SOURCE RUN`: a Marian (OPUS-MT) model as a minitx run directory.

The run computes Marian's function exactly with ordinary model options: `model.norm: post`,
`model.activation` as Marian's (OPUS-MT uses swish), `model.output_bias` for Marian's
`final_logits_bias`, sinusoidal positions (the model width permuted from Marian's halves layout
to minitx's interleaved one, see export/hf.py), and one tokenizer per side
(data/sentencepiece.py) over Marian's shared ids.

Marian starts the decoder from its pad token; minitx from `<s>`, which Marian's vocabulary lacks.
The import appends `<s>` as the last id, with the start token's embedding and an output bias of
-1e4 (it is never predicted, and the other tokens' probabilities are Marian's).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from minitx.config import Config, config_from_dict
from minitx.data.sentencepiece import spm_tokenizer
from minitx.data.tokenizer import BOS, EOS, PAD, UNK, Codecs, TextCodec
from minitx.errors import UserError, require_extra
from minitx.export.hf import to_halves, weight_map
from minitx.inference.engines.hf import quiet_transformers
from minitx.model.checkpoint import save_checkpoint
from minitx.model.positions import halves_order
from minitx.run_dir import RunDir, staged_directory
from minitx.tasks import get_task

NEVER = -1e4  # an output bias that keeps a token out of every prediction
MARIAN_FILES = ("config.json", "vocab.json", "source.spm", "target.spm")


def import_marian(source: str, out: Path) -> dict:
    """Write the Marian model `source` (hf:PATH or hf:HUB_ID) as a run in `out` (absent or empty);
    returns what import.json records. Nothing is left in `out` if anything fails."""
    for module in ("transformers", "sentencepiece", "google.protobuf"):  # protobuf: .spm files
        require_extra(module, "hf")
    if not source.startswith("hf:"):
        raise UserError(f"import takes hf:PATH or hf:HUB_ID (a Marian model), got '{source}'")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # before the slow part
        raise UserError(f"{out} exists and is not an empty directory; choose another run directory")
    marian, tokenizer = _load(source[3:])
    cfg = _config(marian, tokenizer)
    codecs = _codecs(tokenizer)
    network = get_task("translation").build_model(cfg, codecs, None)
    network.load_state_dict(_minitx_weights(marian, cfg, tokenizer))
    info = {"imported_from": source, "architecture": type(marian).__name__}
    with staged_directory(out, "run directory") as staging:
        run = RunDir(staging)
        run.save_config(cfg)
        codecs.save(run)
        save_checkpoint(run.checkpoint("best"), network, {"step": 0, **info})
        (staging / "import.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _load(where: str):
    """The MarianMTModel and MarianTokenizer of a local folder or a Hub id, checked."""
    from transformers import MarianMTModel, MarianTokenizer

    local = Path(where).expanduser()
    if local.is_dir():
        missing = [name for name in MARIAN_FILES if not (local / name).is_file()]
        if missing:
            raise UserError(
                f"{where} lacks {', '.join(missing)}; a Marian folder holds {', '.join(MARIAN_FILES)}"
            )
        try:
            model_type = json.loads((local / "config.json").read_text()).get("model_type")
        except (ValueError, AttributeError):  # not JSON, or not an object
            raise UserError(f"{local / 'config.json'} is not a JSON object") from None
        if model_type != "marian":
            raise UserError(
                f"{where} holds a {model_type} model; minitx imports Marian (OPUS-MT) models"
            )
        where = str(local)  # transformers does not expand ~
    elif local.exists() or where.startswith((".", "/", "~")):
        raise UserError(f"{where} is not a Marian model folder")
    try:
        with quiet_transformers(), warnings.catch_warnings():
            # MarianTokenizer recommends sacremoses for a normalize() its encoding never calls
            warnings.filterwarnings("ignore", message=".*sacremoses")
            marian = MarianMTModel.from_pretrained(where).eval()
            tokenizer = MarianTokenizer.from_pretrained(where)
    except Exception as exc:  # network, a damaged file, shapes that disagree with config.json
        reason = (str(exc).splitlines() or [""])[0][:300]
        raise UserError(
            f"cannot load {where} as a Marian model ({type(exc).__name__}: {reason})"
        ) from None
    _check(marian.config, tokenizer, where)
    return marian, tokenizer


def _check(config, tokenizer, where: str) -> None:
    vocab = tokenizer.encoder
    problems = [
        (tokenizer.separate_vocabs, "separate source and target vocabularies"),
        (
            len(vocab) != config.vocab_size,
            f"vocab.json has {len(vocab)} tokens, config.json's vocab_size is {config.vocab_size}",
        ),
        (BOS in vocab, f"vocab.json has {BOS}, which minitx keeps for the decoder start"),
        (not config.scale_embedding, "unscaled embeddings (scale_embedding: false)"),
        (
            config.encoder_attention_heads != config.decoder_attention_heads,
            "encoder and decoder head counts differ",
        ),
        (
            config.encoder_ffn_dim != config.decoder_ffn_dim,
            "encoder and decoder feed-forward widths differ",
        ),
        (
            config.activation_function not in ("relu", "gelu", "swish"),
            f"activation {config.activation_function}",
        ),
        (config.d_model % 2 == 1, "an odd d_model"),
    ]
    for found, what in problems:
        if found:
            raise UserError(f"{where}: {what}; minitx cannot import this Marian model")
    for token in (PAD, UNK, EOS):
        if token not in vocab:
            raise UserError(f"{where}: vocab.json lacks {token}")


def _config(marian, tokenizer) -> Config:
    config, generation = marian.config, marian.generation_config
    decode = {  # OPUS-MT's generation_config gives the beam; a field it leaves unset keeps minitx's
        "beam_size": generation.num_beams,
        "length_penalty": generation.length_penalty,
    }
    decode = {key: value for key, value in decode.items() if value is not None}
    return config_from_dict(
        {
            "task": "translation",
            "data": {"src": tokenizer.source_lang or "src", "tgt": tokenizer.target_lang or "tgt"},
            "tokenizer": {"joint": False, "vocab_size": config.vocab_size + 1},
            "model": {
                "d_model": config.d_model,
                "n_heads": config.encoder_attention_heads,
                "n_encoder_layers": config.encoder_layers,
                "n_decoder_layers": config.decoder_layers,
                "d_ff": config.encoder_ffn_dim,
                "dropout": config.dropout,
                "attention_dropout": config.attention_dropout,
                "activation_dropout": config.activation_dropout,
                "activation": config.activation_function,
                "norm": "post",
                "positions": "sinusoidal",
                "tie_embeddings": bool(config.tie_word_embeddings),
                "output_bias": True,
            },
            "decode": decode,
        },
        source="the imported Marian config",
    )


def _codecs(tokenizer) -> Codecs:
    # Target-language codes of multilingual models (>>fra<<) stay whole, as MarianTokenizer keeps
    # them.
    codes = [
        token for token in tokenizer.encoder if token.startswith(">>") and token.endswith("<<")
    ]
    sides = []
    for spm_file in tokenizer.spm_files:  # source, target
        side = spm_tokenizer(Path(spm_file), tokenizer.encoder, [UNK, EOS, PAD], codes)
        side.add_special_tokens([BOS])  # the last id: see the module's docstring
        sides.append(TextCodec(side))
    return Codecs(*sides)


def _minitx_weights(marian, cfg: Config, tokenizer) -> dict[str, torch.Tensor]:
    """Marian's state dict under minitx's names and in its interleaved layout, with `<s>` added."""
    inverse = halves_order(cfg.model.d_model).argsort()
    theirs = {name: tensor.detach().float() for name, tensor in marian.state_dict().items()}
    weights: dict[str, torch.Tensor] = {}
    halves: dict[str, list] = {}
    for name, source, kind, half in weight_map(cfg.model):
        tensor = to_halves(theirs[name], kind, inverse)
        if half is None:
            weights[source] = tensor
        else:
            halves.setdefault(source, [None, None])[half] = tensor
    weights.update({source: torch.cat(parts) for source, parts in halves.items()})
    start = marian.config.decoder_start_token_id

    def with_start(table: torch.Tensor) -> torch.Tensor:
        return torch.cat([table, table[start : start + 1]])[:, inverse]

    weights["encoder.embedding.tokens.weight"] = with_start(
        theirs["model.encoder.embed_tokens.weight"]
    )
    weights["decoder.embedding.tokens.weight"] = with_start(
        theirs["model.decoder.embed_tokens.weight"]
    )
    weights["decoder.output.weight"] = with_start(theirs["lm_head.weight"])
    bias = torch.cat([theirs["final_logits_bias"][0], torch.tensor([NEVER])])
    banned = marian.generation_config.bad_words_ids or []
    for ids in banned:  # OPUS-MT's generation config bans the pad token: so does the bias
        if len(ids) == 1:
            bias[ids[0]] = NEVER
    weights["decoder.output.bias"] = bias
    return weights
