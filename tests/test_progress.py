"""progress.Bar: a bar on a terminal, a line at least every HEARTBEAT_S seconds where bars are off."""
import progress


class Clock:
    """A fake monotonic clock that advances 25 s per reading."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 25.0
        return self.t


def test_without_a_terminal_a_long_loop_prints_a_line_every_minute(capsys):
    items = list(progress.Bar(range(10), "train", verbose=True, clock=Clock()))  # pytest's output is no terminal
    assert items == list(range(10))
    lines = capsys.readouterr().out.splitlines()
    # readings at 50, 75, ... s after the start (25): a line when 60 s have passed since the last one
    assert lines == ["train: 3/10 (30%), 75 s", "train: 6/10 (60%), 150 s", "train: 9/10 (90%), 225 s"]


def test_verbose_false_prints_nothing(capsys):
    assert list(progress.Bar(iter(range(5)), "features", verbose=False, clock=Clock())) == list(range(5))
    assert capsys.readouterr().out == ""
