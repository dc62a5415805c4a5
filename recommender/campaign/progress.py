"""The progress bar a campaign shows on the terminal: customers done, rate, time left."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from tqdm import tqdm

from ..data.book import CustomerBatch


class _Bar(tqdm):
    """tqdm without its monitor thread, which it starts for every bar (a bar updated once a
    chunk needs none), and with a thread lock for its default multiprocessing one, which would
    fix this process's multiprocessing start method."""

    monitor_interval = 0


_Bar.set_lock(threading.RLock())


def with_progress(chunks: Iterable[CustomerBatch], total: int, stream) -> Iterator[CustomerBatch]:
    """``chunks``, with a bar of the customers done on ``stream`` (no bar when it is None)."""
    if stream is None:
        yield from chunks
        return
    with _Bar(total=total, file=stream, unit=" customers", unit_scale=True) as bar:
        for chunk in chunks:
            yield chunk
            bar.update(len(chunk))
