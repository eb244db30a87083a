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
