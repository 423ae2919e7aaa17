"""The one family of user errors: a bad setting, unusable data, a wrong checkpoint, a prediction
that cannot be made. Each is raised where the fault is found and ends the program with one line
on stderr ("<kind> error: <what and how to fix it>"), no traceback.

They derive from SystemExit, so an entry script needs no handler of its own: Python prints the
line once and exits with status 1. Code that calls main() (tests, notebooks) can catch them.

`printable` makes a path safe to put in any message (file names that are not UTF-8); `counted` says "1 epoch",
"2 epochs".
"""


class UserError(SystemExit):
    """Base class; the `kind` given by a subclass (class XError(UserError, kind="x")) names the family."""

    kind = ""

    def __init_subclass__(cls, kind="", **kwargs):
        super().__init_subclass__(**kwargs)
        cls.kind = kind

    def __init__(self, msg):
        self.msg = msg
        super().__init__(f"{self.kind} error: {msg}" if self.kind else f"error: {msg}")


class ConfigError(UserError, kind="config"):
    """A setting that cannot work (cfg.py, the probe's layer, --init weights that do not fit)."""


class DataError(UserError, kind="data"):
    """Images that cannot be used: a missing or empty folder, no decodable file, k above the image count."""


class CheckpointError(UserError, kind="checkpoint"):
    """A checkpoint that is missing, cannot be read, is not train.py's, or was made with other model settings."""


class PredError(UserError, kind="pred"):
    """A prediction that cannot be made: a pred_dir holding foreign files, pred_k too large, features not finite."""


class TrainingError(UserError, kind="training"):
    """Training that cannot go on (a diverging loss); the last good checkpoint stays."""


class BusyError(UserError, kind="busy"):
    """A folder that another run holds (see checkpoint.hold_lock)."""


def printable(text):
    """A path or message as valid UTF-8 text: bytes of a file name that are not UTF-8 (which Python
    holds as surrogate escapes) become \\xNN, so that logs, CSV files and terminals never fail on them."""
    text = str(text)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name produced
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def counted(n, noun):
    """ "1 image", "0 images", "2 images": n and the noun, plural unless n is 1 (nouns whose plural adds an s)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
