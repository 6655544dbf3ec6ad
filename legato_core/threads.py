"""Thread use for small, latency-bound work.

One image's inversion is a few hundred tiny forward/backward ops; on two cores the OpenMP hand-offs between
threads cost more than the second thread gains (measured on the 2-core CPU with ``OMP_WAIT_POLICY=PASSIVE``,
which the CLI and app set at the time: 1.33 s on two threads, 0.68 s on one; with a forget job training beside
it, 0.92 s and 0.71 s). They now spin briefly instead (:mod:`legato_core.openmp`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_lock = threading.Lock()
_depth = 0
_saved = 0


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with one torch thread; the previous count comes back afterwards (also on errors, and
    only when the outermost of nested or concurrent blocks ends)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                torch.set_num_threads(_saved)
