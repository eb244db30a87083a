"""minitx: train and evaluate small encoder-decoder Transformers from one YAML file.

    import minitx
    model = minitx.load("runs/quickstart")
    print(model.translate(["three hundred forty two"])[0].text)

See minitx.api for `load`, `train`, `export_run`, `import_model` and what they return.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from minitx.api import (
        Hypothesis,
        Model,
        Prediction,
        Translation,
        export_run,
        import_model,
        load,
        train,
    )

__all__ = [
    "Hypothesis",
    "Model",
    "Prediction",
    "Translation",
    "__version__",
    "export_run",
    "import_model",
    "load",
    "train",
]


def __getattr__(name: str):
    # The API loads torch and the model code; `minitx --version` and `--help` should not wait for
    # that, so it is imported on first use.
    if name in __all__:
        from minitx import api

        return getattr(api, name)
    raise AttributeError(f"module 'minitx' has no attribute {name!r}")
