"""Progress of long loops: a tqdm bar on a terminal, and where bars are off (output to a file or a pipe, as under
nohup, a job scheduler or a notebook's captured output) one line at least every HEARTBEAT_S seconds, so that a
long pass never looks stuck."""
import sys
import time

from tqdm import tqdm

HEARTBEAT_S = 60.0


class Bar(tqdm):
    """tqdm(iterable, desc=..., leave=False), shown when `verbose` and the output is a terminal. When verbose and
    there is no terminal, a line "<desc>: i/total (p%), s s" is printed to stdout every `every` seconds instead."""

    def __init__(self, iterable, desc, verbose=True, total=None, every=HEARTBEAT_S, clock=time.monotonic, **kwargs):
        super().__init__(iterable, desc=desc, total=total, leave=False, disable=not verbose or None, **kwargs)
        self.heartbeat = verbose and self.disable
        self.label, self.every, self.clock = desc, every, clock  # a disabled tqdm keeps no desc

    def __iter__(self):
        if not self.heartbeat:
            yield from super().__iter__()
            return
        start = last = self.clock()
        total = self.total if self.total is not None else len(self.iterable) if hasattr(self.iterable, "__len__") \
            else None
        for i, item in enumerate(self.iterable, 1):
            yield item
            now = self.clock()
            if now - last >= self.every:
                last = now
                done = f"{i}/{total} ({100 * i / total:.0f}%)" if total else f"{i}"
                print(f"{self.label}: {done}, {now - start:.0f} s", file=sys.stdout, flush=True)
