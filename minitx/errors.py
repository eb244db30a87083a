"""The one user-error type: the CLI prints it as one `error: …` line and exits with code 2."""


class UserError(Exception):
    """Something the user can fix: a bad config, a missing file, a directory that is not a run."""
