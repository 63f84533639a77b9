"""Run every lesson and shrink its main figure into ``lessons/thumbnails/``, for ``lessons/README.md``.

    python lessons/make_thumbnails.py [--fast] [LESSON ...]    # e.g. 12_epochs 13_schedules; none: all

Each lesson writes its figures to ``runs/lessons/<lesson>/`` (ignored by git); its main figure ``<lesson>.png`` is
scaled to 480 pixels wide and stored with a 64-colour palette, which keeps a thumbnail under 30 KB.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
WIDTH = 480


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="run the lessons with --fast")
    parser.add_argument("lessons", nargs="*", help="lesson names (file stems); none: every lesson")
    args = parser.parse_args()
    (HERE / "thumbnails").mkdir(exist_ok=True)
    lessons = sorted(HERE.glob("[0-9][0-9]_*.py"))
    unknown = set(args.lessons) - {p.stem for p in lessons}
    if unknown:
        parser.error(f"no such lesson: {', '.join(sorted(unknown))}")
    for lesson in [p for p in lessons if not args.lessons or p.stem in args.lessons]:
        out = HERE.parent / "runs" / "lessons" / lesson.stem
        command = [sys.executable, str(lesson), "--out", str(out)] + (["--fast"] if args.fast else [])
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        image = Image.open(out / f"{lesson.stem}.png").convert("RGB")
        image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
        target = HERE / "thumbnails" / f"{lesson.stem}.png"
        image.quantize(colors=64).save(target, optimize=True)
        print(f"{target.relative_to(HERE.parent)}: {target.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
