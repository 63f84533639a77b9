"""Every lesson runs, checks what it teaches and writes its figures.

Each lesson is a script that asserts its own numbers, so running it with ``--fast`` is the test: exit code 0
means every check in it held. On top of that the test checks that the lesson wrote its main figure
(``<lesson>.png``) and only real PNG files, that the Triton lessons still run where Triton is missing, and that
``lessons/README.md`` shows a small thumbnail of every lesson.

The lessons run in subprocesses (a fresh interpreter each, as a learner runs them) with one BLAS/OpenMP thread:
on a 2-core CI machine a lesson's many small matrix products otherwise oversubscribe the cores and run several
times slower.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LESSONS_DIR = Path(__file__).resolve().parents[2] / "lessons"
LESSONS = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.py"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THUMBNAIL_BYTES = 60_000

# Runs a lesson as if Triton were not installed (as on macOS): the kernels package decides with find_spec.
WITHOUT_TRITON = """
import importlib.util, runpy, sys
find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *args: None if name == "triton" else find_spec(name, *args)
sys.argv = sys.argv[1:]
sys.path.insert(0, str(__import__("pathlib").Path(sys.argv[0]).parent))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def _check_ran(result: subprocess.CompletedProcess, lesson: Path, out: Path) -> None:
    assert result.returncode == 0, f"{lesson.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "every check passed" in result.stdout
    assert (out / f"{lesson.stem}.png").is_file(), f"{lesson.name} did not write its main figure"
    for figure in out.glob("*.png"):
        assert figure.read_bytes()[:8] == PNG_SIGNATURE, f"{figure.name} is not a PNG"
        assert figure.stat().st_size > 1000, f"{figure.name} is nearly empty"


# Part 1 is lessons 1-10; part 2 is 11-18.
NUMBERS = [*range(1, 19)]


def test_lessons_are_numbered_as_the_readme_path():
    assert [p.name[:2] for p in LESSONS] == [f"{i:02d}" for i in NUMBERS]


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_fast(lesson: Path, tmp_path: Path):
    result = _run([sys.executable, str(lesson), "--fast", "--out", str(tmp_path)], cwd=tmp_path)
    _check_ran(result, lesson, tmp_path)


@pytest.mark.parametrize("name", ["09_fused_loss", "10_attention"])
def test_triton_lessons_run_without_triton(name: str, tmp_path: Path):
    lesson = LESSONS_DIR / f"{name}.py"
    result = _run([sys.executable, "-c", WITHOUT_TRITON, str(lesson), "--fast", "--out", str(tmp_path)], cwd=tmp_path)
    _check_ran(result, lesson, tmp_path)
    assert "Triton is not installed here" in result.stdout


def test_readme_shows_every_lesson_with_a_small_thumbnail():
    readme = (LESSONS_DIR / "README.md").read_text()
    for lesson in LESSONS:
        thumbnail = LESSONS_DIR / "thumbnails" / f"{lesson.stem}.png"
        assert f"({lesson.name})" in readme, f"README.md does not link {lesson.name}"
        assert f"(thumbnails/{thumbnail.name})" in readme, f"README.md does not show {thumbnail.name}"
        assert thumbnail.read_bytes()[:8] == PNG_SIGNATURE
        assert thumbnail.stat().st_size < THUMBNAIL_BYTES, f"{thumbnail.name} is over {THUMBNAIL_BYTES} bytes"
