"""A batch split over threads, one BLAS thread each: how the NumPy convolution uses more than one core.

A convolution in NumPy is two kinds of work. The matmuls go to BLAS, which spreads each one over its own threads
(OpenBLAS: as many as cores). Everything around them -- im2col's copies, Winograd's transforms (about half of a
Winograd convolution's time at 64 to 128 channels), the bias and the ReLU -- is NumPy's own elementwise code, which
runs on the calling thread alone. On two cores that half runs on one, and BLAS's threads wake and join for every
one of Winograd's 16 small matmuls per chunk.

Images of a batch are independent, so the other way round is simple: split the batch into ``threads`` contiguous
parts, run each part's whole convolution on its own Python thread, and limit BLAS to one thread meanwhile so the
two levels of threads do not compete for the same cores. NumPy releases the GIL inside its ufunc loops, copies
and matmuls, so the threads run in parallel wherever each operation is large enough (measured: two threads each
running a loop of float32 adds took 1.1-1.35x one thread's time on arrays of 256 KiB to 4 MiB, but 2.8x on
64 KiB, where taking and handing back the GIL dominates). On the benchmark machine an N = 16, 64 -> 64 channel
convolution at 64x64 took 35 ms split (Winograd in each half) where unsplit (im2col on two BLAS threads) it took
54, its backward 59 against 106 (medians of one run; ``benchmarks/README.md``, "NumPy engine").

The BLAS limit goes through threadpoolctl and is process-wide: while a split call runs, BLAS called from any
other thread of the process runs on one thread too. A part never splits again (a part's own convolution calls
run on its thread). ``split_over`` holds BLAS to one thread for a whole block, such as a training step.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext

_BLAS_CONTROLLER = []  # threadpoolctl's handles on NumPy's BLAS, looked up once (a few ms); [None] without it
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}  # per (process, thread count): a forked child's own
_HELD = []  # the thread counts of the split_over blocks entered (innermost last)
_PART = threading.local()  # .inside: this thread runs a part, which never splits again


def _controller():
    if not _BLAS_CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _BLAS_CONTROLLER.append(None)
        else:
            _BLAS_CONTROLLER.append(ThreadpoolController().select(user_api="blas"))
    controller = _BLAS_CONTROLLER[0]
    return controller if controller is not None and controller.lib_controllers else None


def blas_threads() -> int | None:
    """Threads NumPy's BLAS runs on now (the most of any BLAS library loaded), read through threadpoolctl (about
    1 us); None where threadpoolctl is not installed or sees no BLAS."""
    controller = _controller()
    if controller is None:
        return None
    return max(lib.num_threads for lib in controller.lib_controllers)


def batch_parts(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, stop) ranges covering range(n), sizes differing by at most one, none empty
    (fewer parts where n < parts): batch_parts(5, 2) == [(0, 2), (2, 5)]."""
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


def split_threads(n: int) -> int:
    """How many threads ``over_batch`` runs a batch of ``n`` on (at most n): inside a ``split_over`` block as many
    as BLAS ran before it; else as many as BLAS's threads, where threadpoolctl can hold BLAS to one meanwhile;
    1 (no split) inside a part or without threadpoolctl."""
    if getattr(_PART, "inside", False):
        return 1
    threads = _HELD[-1] if _HELD else blas_threads()
    return 1 if threads is None else max(1, min(threads, n))


@contextmanager
def split_over(n: int):
    """For a block that works on batches of ``n`` (a model's forward or backward pass): where ``over_batch`` would
    split them (``split_threads(n) > 1``), BLAS runs one thread throughout the block and ``over_batch`` splits
    over as many threads as BLAS ran before; else (one image, one BLAS thread) the block changes nothing.

    Between the split calls of a step a BLAS matmul on two threads leaves its second thread spinning for a while
    after it returns (OpenBLAS waits for more work before it sleeps), on a core that the next split needs: on the
    benchmark machine the default model's step took 317-340 ms with the convolutions split and BLAS on two
    threads elsewhere, against 266-279 ms unsplit. Held to one thread for the whole step, BLAS never spins, and
    whatever should use both cores splits its batch (the convolutions and up-convolutions of ``NumpyUNet``).
    Without threadpoolctl the block changes nothing.
    """
    count = split_threads(n)
    if count == 1 or _HELD:
        yield
        return
    _HELD.append(count)
    try:
        with _controller().limit(limits=1):
            yield
    finally:
        _HELD.pop()


def _run_part(fn, start: int, stop: int):
    _PART.inside = True
    try:
        return fn(start, stop)
    finally:
        _PART.inside = False


def over_batch(fn: Callable[[int, int], object], n: int) -> list:
    """``[fn(start, stop) for start, stop in batch_parts(n, split_threads(n))]``, the parts run concurrently on
    that many threads with BLAS on one thread each (restored after, unless a ``split_over`` block holds it); a
    single part is just ``[fn(0, n)]``, on the calling thread.

    ``fn`` must touch only its own part of any output (e.g. write ``y[start:stop]``) or return what the caller
    combines. An exception in a part is raised here, after every part has finished.
    """
    threads = split_threads(n)
    if threads == 1:
        return [fn(0, n)]
    key = (os.getpid(), threads)  # a pool's threads do not survive a fork: a child (a DataLoader worker) makes its own
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="unet-batch")
    with _controller().limit(limits=1) if not _HELD else nullcontext():
        futures = [pool.submit(_run_part, fn, start, stop) for start, stop in batch_parts(n, threads)]
        wait(futures)
    return [future.result() for future in futures]
