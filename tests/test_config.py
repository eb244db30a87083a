from pathlib import Path

import pytest
import yaml

from minitx.config import (
    Config,
    apply_overrides,
    config_from_dict,
    describe_keys,
    load_config,
    parse_duration,
)
from minitx.errors import UserError
from minitx.tasks import configured

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_defaults_are_valid_and_the_stopping_metric_follows_the_task():
    translation = config_from_dict({})
    assert translation.model == Config().model and translation.data == Config().data
    assert configured(translation).train.early_stopping_metric == "bleu"
    classification = config_from_dict({"task": "classification", "data": {"path": "/some/dir"}})
    assert configured(classification).train.early_stopping_metric == "accuracy"


def test_a_metric_of_the_other_task_is_refused():
    cfg = config_from_dict(
        {
            "task": "classification",
            "data": {"path": "/d"},
            "train": {"early_stopping_metric": "bleu"},
        }
    )
    with pytest.raises(UserError, match="bleu is not a classification metric"):
        configured(cfg)


def test_an_unknown_task_is_refused_naming_the_tasks():
    with pytest.raises(
        UserError, match="task: 'x' is not a task; use one of classification, translation"
    ):
        configured(config_from_dict({"task": "x"}))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.task == ("classification" if path.stem.startswith("sst2") else "translation")


def test_shipped_configs_exist():
    assert {"quickstart.yaml", "multi30k_de_en.yaml", "multi30k_de_en_raw.yaml"} <= {
        p.name for p in CONFIGS
    }


def test_unknown_key_names_nearest_valid_key():
    with pytest.raises(
        UserError, match=r"unknown key 'model.d_modle'; did you mean 'model.d_model'"
    ):
        config_from_dict({"model": {"d_modle": 64}})


def test_unknown_section_names_nearest_section():
    with pytest.raises(UserError, match=r"unknown key 'trian'; did you mean 'train'"):
        config_from_dict({"trian": {}})


def test_all_problems_reported_at_once():
    with pytest.raises(UserError) as info:
        config_from_dict(
            {
                "model": {"d_model": -1, "dropuot": 0.1},
                "train": {"lr": "fast"},
                "run": {"dtype": "fp8"},
            }
        )
    message = str(info.value)
    assert "4 problem(s)" in message
    assert "model.d_model: must be at least 8, got -1" in message
    assert "did you mean 'model.dropout'" in message
    assert "train.lr: expected a number, got 'fast'" in message
    assert "run.dtype: expected one of 'auto', 'fp32', 'bf16', 'fp16'" in message
    assert "\n" not in message


def test_wrong_types_are_named():
    with pytest.raises(UserError, match=r"model.n_heads: expected an integer, got 2.5"):
        config_from_dict({"model": {"n_heads": 2.5}})
    with pytest.raises(
        UserError, match=r"tokenizer.joint: expected true or false, got 'yes please'"
    ):
        config_from_dict({"tokenizer": {"joint": "yes please"}})
    with pytest.raises(UserError, match=r"the top level|data must be a mapping"):
        config_from_dict({"data": [1, 2]})


def test_heads_must_divide_width():
    with pytest.raises(
        UserError, match=r"d_model \(100\) must be divisible by model.n_heads \(3\)"
    ):
        config_from_dict({"model": {"d_model": 100, "n_heads": 3}})


def test_splits_need_all_roles():
    with pytest.raises(UserError, match=r"data.splits needs keys \['test'\]"):
        config_from_dict({"data": {"splits": {"train": "a", "validation": "b"}}})


def test_float_written_without_dot_is_a_number():
    assert config_from_dict({"train": {"lr": "2e-3"}}).train.lr == pytest.approx(0.002)


def test_integer_for_float_field_is_accepted():
    assert config_from_dict({"model": {"dropout": 0}}).model.dropout == 0.0


def test_durations():
    assert parse_duration("90") == 90
    assert parse_duration("1.5h") == 5400
    assert parse_duration("30m") == 1800
    with pytest.raises(UserError, match="train.max_time"):
        config_from_dict({"train": {"max_time": "soon"}})


def test_overrides_go_through_validation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {d_model: 64, n_heads: 4}\n")
    cfg = load_config(
        path, ["train.lr=3e-4", "model.n_heads=8", "data.splits={train: a, validation: b, test: c}"]
    )
    assert (cfg.train.lr, cfg.model.n_heads, cfg.data.splits["train"]) == (3e-4, 8, "a")
    with pytest.raises(UserError, match="did you mean 'train.max_steps'"):
        load_config(path, ["train.max_step=3"])
    with pytest.raises(UserError, match="--set expects KEY=VALUE"):
        load_config(path, ["train.lr"])


def test_apply_overrides_does_not_mutate_input():
    raw = {"train": {"lr": 1.0}}
    apply_overrides(raw, ["train.lr=2"])
    assert raw == {"train": {"lr": 1.0}}


def test_bad_yaml_is_one_line_with_position(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  d_model: [1, 2\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    assert "line" in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="top level must be a mapping"):
        load_config(path)


def test_every_key_is_documented():
    rows = describe_keys()
    keys = [key for key, _, _ in rows]
    assert "train.lr" in keys and "model.d_model" in keys and "task" in keys
    assert all(meaning for _, _, meaning in rows)


def test_saved_config_round_trips(tmp_path):
    from minitx.config import save_config

    cfg = config_from_dict({"model": {"d_model": 64}, "train": {"max_time": "5m"}})
    save_config(cfg, tmp_path / "config.yaml")
    assert config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())) == cfg
