"""A batch split over threads, one BLAS thread each: how the NumPy convolution uses more than one core.

A convolution in NumPy is two kinds of work. The matmuls go to BLAS, which spreads each one over its own threads
(OpenBLAS: as many as cores). Everything around them -- im2col's copies, Winograd's transforms (about half of a
Winograd convolution's time at 64 to 128 channels), the bias and the ReLU -- is NumPy's own elementwise code, which
runs on the calling thread alone. On two cores that half runs on one, and BLAS's threads wake and join for every
one of Winograd's 16 small matmuls per chunk.

Images of a batch are independent, so the other way round is simple: split the batch into ``threads`` contiguous
parts, run each part's whole convolution on its own Python thread, and limit BLAS to one thread meanwhile so the
two levels of threads do not compete for the same cores. NumPy releases the GIL inside its ufunc loops, copies
and matmuls, so the threads run in parallel wherever the arrays are large (above about 100 KiB; a loop of many
tiny operations would be serialised by the GIL instead). On the benchmark machine two threads ran the halves of
an N = 16, 64 -> 64 channel Winograd convolution at 64x64 in 37 ms where one thread with two BLAS threads took
50 (``benchmarks/README.md``, "NumPy engine").

The BLAS limit goes through threadpoolctl and is process-wide: while a split call runs, BLAS called from any
other thread of the process runs on one thread too. A split inside a part sees BLAS on one thread and does not
split again.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

_BLAS_CONTROLLER = []  # threadpoolctl's handles on NumPy's BLAS, looked up once (a few ms); [None] without it
_POOLS: dict[int, ThreadPoolExecutor] = {}  # one pool per thread count, created on first use


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
    """How many threads ``over_batch`` runs a batch of ``n`` on: as many as BLAS's threads (at most n), where
    threadpoolctl can hold BLAS to one meanwhile; else 1 (no split)."""
    threads = blas_threads()
    return 1 if threads is None else max(1, min(threads, n))


def over_batch(fn: Callable[[int, int], object], n: int) -> list:
    """``[fn(start, stop) for start, stop in batch_parts(n, split_threads(n))]``, the parts run concurrently on
    that many threads with BLAS on one thread each (restored after); a single part is just ``[fn(0, n)]``.

    ``fn`` must touch only its own part of any output (e.g. write ``y[start:stop]``) or return what the caller
    combines. An exception in a part is raised here, after every part has finished.
    """
    threads = split_threads(n)
    if threads == 1:
        return [fn(0, n)]
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="unet-batch")
    with _controller().limit(limits=1):
        futures = [pool.submit(fn, start, stop) for start, stop in batch_parts(n, threads)]
        wait(futures)
    return [future.result() for future in futures]
