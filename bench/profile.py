"""Optional profiling of a running service with py-spy, summarised per function.

`record(pid, seconds, out)` runs ``py-spy record --format raw`` (collapsed stacks) on a process;
`summarise(path)` turns the stacks into the functions with the most samples, on their own
(``self``) and with what they call (``inclusive``). py-spy is optional: ``pip install
py-spy`` into the virtualenv (`make bench BENCH_ARGS=--profile` does not install it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.common import Json

_LINE = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start_record(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy into the virtualenv)")
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _frame(text: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``."""
    name, _, where = text.partition(" (")
    where = _LINE.sub("", where.rstrip(")") + ")").rstrip(")")
    short = where.rsplit("/", 1)[-1]
    return f"{name} ({short})" if short else name


def summarise(path: Path, top: int = 15) -> Json:
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0, "self": [], "inclusive": []}
    for line in path.read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n

    def rows(counter: Counter[str]) -> list[list[object]]:
        # Leave out the frames every sample has (the process's entry point and main loop).
        shares = [(100.0 * c / total, f) for f, c in counter.most_common()]
        return [[round(p, 1), f] for p, f in shares if p < 97.0][:top]

    return (
        {"samples": total, "self": rows(own), "inclusive": rows(incl)}
        if total
        else {
            "samples": 0,
            "self": [],
            "inclusive": [],
        }
    )
