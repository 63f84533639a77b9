"""The batch split over threads (reference/threads.py): the parts, BLAS held to one thread while they run (or for
a whole split_over block) and restored after, errors, and the split convolution and up-convolution against
torch."""

import os
import threading
import time

import numpy as np
import pytest
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import unet_from_scratch.reference.conv as conv
import unet_from_scratch.reference.upconv as upconv
from tests.helpers import assert_matches_torch
from unet_from_scratch.reference import threads

threadpoolctl = pytest.importorskip("threadpoolctl")


def test_batch_parts_by_hand():
    assert threads.batch_parts(5, 2) == [(0, 2), (2, 5)]
    assert threads.batch_parts(16, 2) == [(0, 8), (8, 16)]
    assert threads.batch_parts(1, 4) == [(0, 1)]
    assert threads.batch_parts(7, 1) == [(0, 7)]


@settings(deadline=None)
@given(st.integers(1, 200), st.integers(1, 16))
def test_batch_parts_cover_the_batch_in_order_with_sizes_one_apart(n, parts):
    ranges = threads.batch_parts(n, parts)
    assert len(ranges) == min(n, parts)
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [stop - start for start, stop in ranges]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_over_batch_runs_the_parts_at_once_on_one_blas_thread_each_and_restores_blas():
    seen = []
    barrier = threading.Barrier(2, timeout=10)  # both parts must be running at the same time to pass it

    def part(start, stop):
        barrier.wait()
        seen.append((start, stop, threading.get_ident(), threads.blas_threads()))
        return start * 10 + stop

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        assert threads.split_threads(5) == 2 and threads.split_threads(1) == 1
        assert threads.over_batch(part, 5) == [2, 25]  # in the parts' order
        assert threads.blas_threads() == 2
    assert sorted(s[:2] for s in seen) == [(0, 2), (2, 5)]
    assert len({s[2] for s in seen}) == 2 and {s[3] for s in seen} == {1}


def test_an_error_in_a_part_is_raised_after_every_part_has_finished():
    finished = []

    def part(start, stop):
        if start == 0:
            raise ValueError("bad part")
        time.sleep(0.05)
        finished.append(start)

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        with pytest.raises(ValueError, match="bad part"):
            threads.over_batch(part, 4)
        assert finished == [2] and threads.blas_threads() == 2


def test_one_blas_thread_or_no_threadpoolctl_means_no_split(monkeypatch):
    calls = []
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert threads.over_batch(lambda a, b: calls.append((a, b, threading.get_ident())), 6) == [None]
    monkeypatch.setattr(threads, "_controller", lambda: None)
    assert threads.blas_threads() is None and threads.split_threads(6) == 1
    threads.over_batch(lambda a, b: calls.append((a, b, threading.get_ident())), 6)
    assert calls == [(0, 6, threading.get_ident())] * 2  # the whole batch, on the calling thread


# (C_in, C_out, padding) -> the Winograd functions that run on 64 or more input channels (choose_method):
# forward, the backward's dx (a correlation with C_out channels in) and dw
SPLIT_CASES = {
    (64, 64, "same"): {"correlate_winograd": 2, "weight_gradient_winograd": 1},
    (64, 32, "valid"): {"correlate_winograd": 1, "weight_gradient_winograd": 1},
    (8, 64, "same"): {},
}


@pytest.mark.parametrize("c_in, c_out, padding", sorted(SPLIT_CASES))
def test_the_split_convolution_matches_torch(c_in, c_out, padding, rng, monkeypatch):
    # Two BLAS threads: a batch of 3 splits into parts of 1 and 2 images, each run with BLAS on one thread, so
    # "auto" takes winograd there from 64 input channels on, im2col or shifted below.
    batches = {}
    for name in ("correlate_winograd", "weight_gradient_winograd"):

        def spy(x, *args, _name=name, _fn=getattr(conv, name), **kwargs):
            batches.setdefault(_name, []).append(x.shape[0])
            return _fn(x, *args, **kwargs)

        monkeypatch.setattr(conv, name, spy)
    x = rng.uniform(-1, 1, size=(3, c_in, 10, 9)).astype(np.float32)
    w = rng.uniform(-0.05, 0.05, size=(c_out, c_in, 3, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, size=c_out).astype(np.float32)
    dy = rng.uniform(-1, 1, size=conv._output_shape(x, w, conv._padding(padding, 3, 3))).astype(np.float32)

    def ours(x, w, b, dout):
        y, cache = conv.conv2d(x, w, b, padding)
        return y, list(conv.conv2d_backward(dout, cache))

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        assert_matches_torch(
            ours, lambda x, w, b: F.conv2d(x, w, b, padding=padding), [x, w, b], wrt=[0, 1, 2], dout=dy,
            names=["dx", "dw", "db"],
        )  # fmt: skip
    # every call ran on a part: one image and two, once per pass
    expected = {name: [1, 2] * passes for name, passes in SPLIT_CASES[(c_in, c_out, padding)].items()}
    assert {name: sorted(sizes) for name, sizes in batches.items()} == {k: sorted(v) for k, v in expected.items()}


def test_split_over_holds_blas_to_one_thread_where_the_batch_splits():
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        with threads.split_over(4):
            assert threads.blas_threads() == 1 and threads.split_threads(4) == 2  # BLAS's count before the block
            with threads.split_over(4):  # nested: the outer block's hold stands
                assert threads.blas_threads() == 1 and threads.split_threads(3) == 2
            assert threads.blas_threads() == 1
            seen = threads.over_batch(lambda a, b: (a, b, threads.blas_threads()), 4)
            assert seen == [(0, 2, 1), (2, 4, 1)]
        assert threads.blas_threads() == 2
        with threads.split_over(1):  # one image: nothing to split, BLAS keeps its threads
            assert threads.blas_threads() == 2 and threads.split_threads(1) == 1
    with threadpoolctl.threadpool_limits(1, user_api="blas"), threads.split_over(4):
        assert threads.split_threads(4) == 1  # one BLAS thread asked for: no split either


def test_the_split_up_convolution_matches_torch(rng):
    # conv_transpose2d splits its batch too (forward: each part its images; backward: dx by part, dw and db summed)
    x = rng.uniform(-1, 1, size=(3, 6, 5, 4)).astype(np.float32)
    w = rng.uniform(-0.5, 0.5, size=(6, 4, 2, 2)).astype(np.float32)
    b = rng.uniform(-1, 1, size=4).astype(np.float32)
    dy = rng.uniform(-1, 1, size=(3, 4, 10, 8)).astype(np.float32)

    def ours(x, w, b, dout):
        y, cache = upconv.conv_transpose2d(x, w, b, 2)
        return y, list(upconv.conv_transpose2d_backward(dout, cache))

    with threadpoolctl.threadpool_limits(2, user_api="blas"), threads.split_over(3):
        assert threads.split_threads(3) == 2
        assert_matches_torch(
            ours, lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2), [x, w, b], wrt=[0, 1, 2], dout=dy,
            names=["dx", "dw", "db"],
        )  # fmt: skip


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_splits_on_its_own_threads():
    # The parent's pool threads do not exist in a child: the child must make its own pool, not wait on them.
    barrier = threading.Barrier(2, timeout=10)

    def both(a, b):  # the two parts meet, so the parent's pool has both its threads, both idle after
        barrier.wait()
        return b - a

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        for _ in range(2):
            assert threads.over_batch(both, 4) == [2, 2]
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only if the split ran and gave the parts
            code = 1
            try:
                code = 0 if threads.over_batch(lambda a, b: b - a, 4) == [2, 2] else 1
            finally:
                os._exit(code)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's split did not finish in 20 s")
        assert os.waitstatus_to_exitcode(status) == 0
