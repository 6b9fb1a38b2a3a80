"""How far a job has got: a live bar on a terminal, a JSON line at a steady interval elsewhere (a log
collector reads it), nothing with --quiet; and the summary at the end.

Progress is measured on the input read (bytes of the files on disk, compressed where they are; one unit
per image), so the ETA needs no first pass to count rows.
"""
import json
import sys
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Meter:
    """Counters the job's stages update; `total` and `read` are in progress units."""
    total: int = 0
    read: int = 0
    rows: int = 0
    predicted: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    read_at_start: int | None = None  # units already done when this run started (skipped by --resume)

    def snapshot(self) -> dict:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        base = self.read_at_start or 0
        rate_units = (self.read - base) / elapsed
        eta = (self.total - self.read) / rate_units if rate_units > 0 else None
        return {"rows": self.rows, "predicted": self.predicted, "failed": self.failed,
                "rows_per_s": round(self.rows / elapsed, 1), "read_percent": round(100 * self.read / max(1, self.total), 1),
                "eta_s": None if eta is None else round(eta, 1), "elapsed_s": round(elapsed, 1)}


class Display:
    """Shows a Meter until `stop()`: `mode` is "bar" (rich, on a terminal), "lines" (a JSON line every
    `interval` s on stderr) or "quiet"."""

    def __init__(self, meter: Meter, mode: str, interval: float):
        self.meter, self.mode, self.interval = meter, mode, interval
        self._stop = threading.Event()
        self._thread = None
        if mode == "bar":
            self._thread = threading.Thread(target=self._bar, name="progress", daemon=True)
        elif mode == "lines":
            self._thread = threading.Thread(target=self._lines, name="progress", daemon=True)

    @staticmethod
    def choose(quiet: bool) -> str:
        return "quiet" if quiet else "bar" if sys.stderr.isatty() else "lines"

    def start(self) -> "Display":
        if self._thread:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _lines(self) -> None:
        while not self._stop.wait(self.interval):
            print(json.dumps({"event": "predict-files progress", **self.meter.snapshot()}), file=sys.stderr, flush=True)

    def _bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        columns = (TextColumn("predict-files"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[status]}"))
        with Progress(*columns, console=Console(file=sys.stderr), transient=False) as bar:
            task = bar.add_task("", total=self.meter.total or None, status="")
            while True:
                stopping = self._stop.wait(0.25)
                snap = self.meter.snapshot()
                bar.update(task, completed=self.meter.read, status=(
                    f"{snap['rows']:,} rows  {snap['rows_per_s']:,.0f} rows/s  {snap['failed']:,} failed"))
                if stopping:
                    break


def summary_line(summary: dict) -> str:
    """One line for a person: rows, predicted, failed, rows/s, elapsed, and how it ended."""
    rows = summary["rows"]
    share = f" ({100 * summary['failed'] / rows:.2f}%)" if rows else ""
    this_run = f" ({summary['rows_this_run']:,} this run)" if summary["rows_this_run"] != rows else ""
    return (f"predict-files {summary['outcome']}: rows {rows:,}{this_run}, predicted {summary['predicted']:,}, "
            f"failed {summary['failed']:,}{share}, {summary['rows_per_s']:,.0f} rows/s, elapsed "
            f"{summary['elapsed_s']:.1f} s; output in {summary['output']} (exit {summary['exit']})")
