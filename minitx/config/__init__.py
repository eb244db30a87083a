"""The config tree: its declaration (schema.py) and how a YAML file and `--set` overrides become
one validated, frozen `Config` (loading.py)."""

from minitx.config.loading import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    describe_keys,
    load_config,
    read_config_file,
    save_config,
    yaml_scalar,
)
from minitx.config.schema import (
    Config,
    CorpusConfig,
    DataConfig,
    DecodeConfig,
    ModelConfig,
    RunConfig,
    TokenizerConfig,
    TrainConfig,
    parse_duration,
)

__all__ = [
    "Config",
    "CorpusConfig",
    "DataConfig",
    "DecodeConfig",
    "ModelConfig",
    "RunConfig",
    "TokenizerConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "describe_keys",
    "load_config",
    "parse_duration",
    "read_config_file",
    "save_config",
    "yaml_scalar",
]
