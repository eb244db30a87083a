"""`minitx translate RUN --split S --output PREFIX`: a split's sources and their translations as a
parallel corpus that `data.path` reads, continued after a stop."""

import gzip

import pytest

import minitx
from minitx.data.parallel_output import ParallelOutput

from conftest import tiny_config
from test_cli import minitx as minitx_cli


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_a_split_becomes_a_parallel_corpus_the_config_reads(tiny_translation_run, tmp_path):
    model = minitx.load(tiny_translation_run.run)
    src_file, tgt_file = model.translate_split("train", tmp_path / "train")
    assert (src_file.name, tgt_file.name) == ("train.de", "train.en")
    with gzip.open(tiny_translation_run.data / "train.de.gz", "rt", encoding="utf-8") as handle:
        sources = handle.read().splitlines()
    assert _lines(src_file) == sources
    expected = [t.text for t in model.translate(sources)]
    assert _lines(tgt_file) == expected
    # The files are a training split for data.path, with the original validation data beside.
    from minitx.tasks import get_task

    (tmp_path / "val.de").write_text("\n".join(sources[:3]) + "\n")
    (tmp_path / "val.en").write_text("\n".join(expected[:3]) + "\n")
    cfg = tiny_config(tmp_path)
    pairs = get_task("translation").load_split(cfg, "train")
    assert list(pairs["src"]) == sources and list(pairs["tgt"]) == expected


def test_a_stopped_translation_goes_on_after_the_complete_pairs(tiny_translation_run, tmp_path):
    model = minitx.load(tiny_translation_run.run)
    whole = model.translate_split("train", tmp_path / "whole")
    # A stop mid-write: the source file has 7 lines and the start of an 8th, the target 5.
    src_lines, tgt_lines = _lines(whole[0]), _lines(whole[1])
    (tmp_path / "part.de").write_text("\n".join(src_lines[:7]) + "\n" + src_lines[7][:3])
    (tmp_path / "part.en").write_text("\n".join(tgt_lines[:5]) + "\n")
    assert ParallelOutput(tmp_path / "part", "de", "en").done == 5
    assert _lines(tmp_path / "part.de") == src_lines[:5]
    done = model.translate_split("train", tmp_path / "part")
    assert [_lines(path) for path in done] == [src_lines, tgt_lines]


def test_the_command_line_writes_the_corpus_and_refuses_mixed_inputs(
    tiny_translation_run, tmp_path
):
    run = tiny_translation_run.run
    out = tmp_path / "corpus" / "test"
    out.parent.mkdir()
    result = minitx_cli("translate", run, "--split", "test", "--output", out, "--beam", 1, "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out}.de and {out}.en"
    greedy = minitx.load(run).translate(_lines(out.with_suffix(".de")), beam_size=1)
    assert _lines(out.with_suffix(".en")) == [t.text for t in greedy]
    for args, fragment in [
        (["--split", "test"], "--split and --output go together"),
        (["--split", "test", "-o", out, "ein hund"], "leave out texts and --input"),
        (["--split", "test", "-o", tmp_path / "no" / "such"], "is not a directory"),
        (["--split", "nosuch", "-o", out], "nosuch"),
    ]:
        failed = minitx_cli("translate", run, *args)
        assert failed.returncode == 2 and fragment in failed.stderr, failed.stderr


@pytest.mark.parametrize("split", ["validation", "val"])
def test_a_role_or_the_datas_own_name_picks_the_split(tiny_translation_run, tmp_path, split):
    model = minitx.load(tiny_translation_run.run)
    src_file, _ = model.translate_split(split, tmp_path / "v")
    with gzip.open(tiny_translation_run.data / "val.de.gz", "rt", encoding="utf-8") as handle:
        assert _lines(src_file) == handle.read().splitlines()
