# SPDX-License-Identifier: Apache-2.0
"""Rows of paired ratios, the way every egress-guard benchmark reports them,
and the compiled loops they run (compile_tools):
per round a measured value and a baseline taken in the same round (and an
A/A baseline: a second copy of the baseline, the noise floor); a row's ratio
is the median of the per-round ratios, so drift and other work on the
machine hit both sides of a pair alike. Shared by bench/run.py and
bench/names.py."""
from __future__ import annotations

import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent


def compile_tools(out: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """bench/NAME.c -> out/NAME for each name (cc -O2 -Wall)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("the benchmarks need a C compiler (cc)")
    tools = {}
    for name in names:
        binary = out / name
        subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(HERE / f"{name}.c")],
                       check=True)
        tools[name] = binary
    return tools


@dataclass
class Row:
    name: str
    unit: str
    measured: list[float]        # per round
    baseline: list[float]        # per round, paired with measured
    aa: list[float] | None       # a second baseline per round: the noise floor
    target: str = "-"
    judge: Callable[["Row"], str] | None = None
    note: str = ""
    by_median: tuple[list[float], list[float]] | None = None  # per-op medians, if any

    def paired(self, samples: list[float], baseline: list[float] | None = None) -> list[float]:
        return [m / b for m, b in zip(samples, baseline or self.baseline)]

    @property
    def ratio(self) -> float:
        """The median of the per-round ratios."""
        return statistics.median(self.paired(self.measured))

    @property
    def aa_ratio(self) -> float | None:
        return statistics.median(self.paired(self.aa)) if self.aa else None

    def band(self, samples: list[float]) -> tuple[float, float]:
        """The middle half of the per-round ratios of samples."""
        ratios = self.paired(samples)
        if len(ratios) < 2:
            return ratios[0], ratios[0]
        q = statistics.quantiles(ratios, n=4)
        return q[0], q[2]

    @property
    def aa_band(self) -> tuple[float, float]:
        """The middle half of the per-round A/A ratios: the noise floor."""
        return self.band(self.aa or [])


def at_most(limit: float) -> Callable[[Row], str]:
    return lambda row: "met" if row.ratio <= limit else \
        f"NOT met ({(row.ratio - 1) * 100:+.1f}%)"


def within_noise(row: Row) -> str:
    """Met when the ratio lies inside the middle half of the A/A ratios."""
    low, high = row.aa_band
    return "met (in A/A IQR)" if low <= row.ratio <= high else \
        f"NOT met ({(row.ratio - 1) * 100:+.1f}%)"


def print_rows(rows: list[Row], name_width: int = 64, digits: int = 2) -> None:
    print("ratio: the median of the per-round ratios (measured/baseline of the same round); "
          "A/A: the same for a second baseline;\nmeasured, baseline: medians over rounds; "
          "IQR: the middle half of the per-round ratios\n")
    print(f"| {'benchmark':<{name_width}} | {'unit':<10} | {'measured':>8} | {'baseline':>8} | "
          f"{'ratio':>6} | {'A/A':>6} | {'target':>9} | {'verdict':<16} | note")
    print(f"|{'-' * (name_width + 2)}|{'-' * 12}|{'-' * 10}|{'-' * 10}|{'-' * 8}|{'-' * 8}|"
          f"{'-' * 11}|{'-' * 18}|------")
    for row in rows:
        aa = f"{row.aa_ratio:.3f}" if row.aa else "-"
        note = "IQR {:.3f}-{:.3f}".format(*row.band(row.measured))
        if row.aa:
            note += " (A/A {:.3f}-{:.3f})".format(*row.aa_band)
        note = "; ".join(filter(None, [note, row.note]))
        verdict = row.judge(row) if row.judge else "-"
        print(f"| {row.name:<{name_width}} | {row.unit:<10} | "
              f"{statistics.median(row.measured):>8.{digits}f} | "
              f"{statistics.median(row.baseline):>8.{digits}f} | {row.ratio:>6.3f} | {aa:>6} | "
              f"{row.target:>9} | {verdict:<16} | {note}")
