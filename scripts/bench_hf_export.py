"""A run against its `--format transformers` export: BLEU/chrF and sentences/s on a split.

    python scripts/bench_hf_export.py RUN EXPORT [--split test] [--beam 5] [--threads 2]

minitx translates with the run (`minitx.load(RUN).translate`); `transformers` translates with the
export alone (AutoModelForSeq2SeqLM + AutoTokenizer + `generate()`, length-sorted batches of the
run's decode batch size, the export's generation_config). Both are scored by sacreBLEU against the
raw references. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import sacrebleu
import torch

import minitx
from minitx.data.sources import load_pairs


def _cpu() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    return names[0] if names else platform.processor()


def _transformers_translate(folder: str, texts: list[str], beam: int, batch_size: int) -> list[str]:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    outputs = [""] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in chosen], return_tensors="pt", padding=True)
            found = model.generate(**batch, num_beams=beam)
            for i, text in zip(
                chosen, tokenizer.batch_decode(found, skip_special_tokens=True), strict=True
            ):
                outputs[i] = text
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("export")
    parser.add_argument("--split", default="test")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    run = minitx.load(args.run)
    split = run.config.data.splits.get(args.split, args.split)
    pairs = load_pairs(run.config.data, split)
    sources, references = list(pairs["src"]), list(pairs["tgt"])
    results = {"cpu": _cpu(), "threads": args.threads, "split": split, "beam": args.beam}
    engines = {
        "minitx": lambda: [t.text for t in run.translate(sources, beam_size=args.beam)],
        "transformers": lambda: _transformers_translate(
            args.export, sources, args.beam, run.config.decode.batch_size
        ),
    }
    hypotheses = {}
    for name, translate in engines.items():
        start = time.perf_counter()
        hypotheses[name] = translate()
        seconds = time.perf_counter() - start
        results[name] = {
            "bleu": round(sacrebleu.corpus_bleu(hypotheses[name], [references]).score, 2),
            "chrf": round(sacrebleu.corpus_chrf(hypotheses[name], [references]).score, 2),
            "seconds": round(seconds, 1),
            "sentences_per_s": round(len(sources) / seconds, 1),
        }
    same = sum(a == b for a, b in zip(*hypotheses.values(), strict=True))
    results["identical_outputs"] = f"{same} of {len(sources)}"
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
