"""The one family of user errors: a bad setting, unusable data, a wrong checkpoint, a prediction
that cannot be made. Each is raised where the fault is found and ends the program with one line
on stderr ("<kind> error: <what and how to fix it>"), no traceback.

They derive from SystemExit, so an entry script needs no handler of its own: Python prints the
line once and exits with status 1. Code that calls main() (tests, notebooks) can catch them.
"""


class UserError(SystemExit):
    """Base class; `kind` names the family in the printed line."""

    kind = ""

    def __init__(self, msg):
        self.msg = msg
        super().__init__(f"{self.kind} error: {msg}" if self.kind else f"error: {msg}")


class ConfigError(UserError):
    kind = "config"


class DataError(UserError):
    kind = "data"


class CheckpointError(UserError):
    kind = "checkpoint"


class PredError(UserError):
    kind = "pred"


class TrainingError(UserError):
    """Training that cannot go on (a diverging loss); the last good checkpoint stays."""

    kind = "training"


class BusyError(UserError):
    """A folder that another run holds (see checkpoint.hold_lock)."""

    kind = "busy"
