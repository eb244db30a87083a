"""The one user-error type: the CLI prints it as one `error: …` line and exits with code 2."""


class UserError(Exception):
    """Something the user can fix: a bad config, a missing file, a directory that is not a run."""


class ReportedElsewhere(UserError):
    """A user error that rank 0 of a torchrun group met and printed; the other ranks stop with it
    silently."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; exit with 128 + the signal."""

    def __init__(self, signal_number: int, message: str):
        super().__init__(message)
        self.signal_number = signal_number


EXTRAS = {  # pyproject.toml's optional dependencies, as a user needs to hear of them
    "export": "CTranslate2, ONNX, ONNX Runtime",
    "hf": "transformers, sentencepiece, protobuf",
    "sweep": "Optuna",
}


def require_extra(module: str, extra: str = "export") -> None:
    """Import `module` or say which extra to install (one line, exit 2)."""
    try:
        __import__(module)
    except ImportError:
        raise UserError(
            f"this needs {module}: pip install 'minitx[{extra}]' ({EXTRAS[extra]})"
        ) from None
