"""What every lesson shares: its two flags, where its figures go, a banner per step and a check that says what it
checked.

A lesson is run as ``python lessons/NN_topic.py [--out DIR] [--fast]``. ``--fast`` shrinks the sizes and the step
counts so that the test suite can run every lesson in seconds; the numbers a lesson asserts hold in both modes.
Figures are written to ``DIR`` (default ``runs/lessons/NN_topic/``, which git ignores), the lesson's main figure as
``NN_topic.png``: ``make_thumbnails.py`` shrinks that one for ``lessons/README.md``.

Each check raises ``AssertionError`` itself rather than relying on ``assert``, so a lesson stays self-checking under
``python -O`` too.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

IN_NOTEBOOK = "ipykernel" in sys.modules
if not IN_NOTEBOOK:
    matplotlib.use("Agg")  # files only; a notebook keeps its inline backend
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parents[1] if "__file__" in globals() else Path.cwd()


@dataclass
class Lesson:
    """One run of a lesson: its name, whether it runs small (``fast``) and where its figures go (``out``)."""

    name: str
    fast: bool
    out: Path

    def save(self, fig, suffix: str = "") -> Path:
        """Write ``fig`` to ``out/<name>[_suffix].png`` and close it; the figure without a suffix is the main one."""
        path = self.out / f"{self.name}{'_' + suffix if suffix else ''}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        if not IN_NOTEBOOK:
            plt.close(fig)
        print(f"  figure: {path}")
        return path


def start(name: str, title: str) -> Lesson:
    """Parse ``--out`` and ``--fast`` for lesson ``name`` (its file's stem), make the output folder, print the title.

    The name is spelled out rather than taken from ``__file__``, which a notebook kernel does not define.
    """
    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "lessons" / name, help="folder for the figures")
    parser.add_argument("--fast", action="store_true", help="small sizes: a few seconds, the same checks")
    args, _ = parser.parse_known_args([] if IN_NOTEBOOK else None)  # a notebook kernel passes its own flags
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{name}: {title}{'  (--fast)' if args.fast else ''}")
    return Lesson(name, args.fast, args.out)


def section(title: str) -> None:
    """A banner between the steps of a lesson, so its printout reads like its cells."""
    print(f"\n--- {title} " + "-" * max(0, 74 - len(title)))


def check(what: str, ok: bool, detail: str = "") -> None:
    """Print ``what`` and raise AssertionError unless ``ok``: the lesson's claim, checked."""
    print(f"  [{'ok' if ok else 'FAILED'}] {what}{'  ' + detail if detail else ''}")
    if not ok:
        raise AssertionError(f"{what} {detail}".strip())


def check_close(what: str, got: float, want: float, atol: float = 0.0, rtol: float = 1e-9) -> None:
    """``check`` that ``got`` lies within ``atol + rtol·|want|`` of ``want``, printing both."""
    got, want = float(got), float(want)
    check(what, abs(got - want) <= atol + rtol * abs(want), f"got {got:.6g}, expected {want:.6g}")
