"""`Job.wait()`'s progress display: a tqdm bar per phase with the server's ETA, else one line per change."""

from __future__ import annotations

import sys
import time
from typing import Any


class ProgressBar:
    """Percent of the current phase, with the server's ETA; a new bar per phase."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.phase: str | None = None
        self.phase_start = time.monotonic()
        self.bar: Any = None
        self.line: str | None = None
        try:
            import tqdm
        except ImportError:
            self.tqdm = None
        else:
            self.tqdm = tqdm.tqdm

    def update(self, job: dict[str, Any]) -> None:
        suite = job.get("suite")
        p = job.get("progress") or {}
        if suite:
            phase, percent, eta = "sub-jobs", suite.get("percent"), None
            detail = f"{suite.get('done')}/{suite.get('total')}"
        else:
            phase = p.get("phase") or job["status"]
            percent, eta = p.get("percent"), p.get("eta_seconds")
            detail = f"epoch {p['epoch']}/{p['epochs']}" if p.get("epochs") else p.get("detail", "")
        if phase != self.phase:
            self.close()
            self.phase, self.phase_start = phase, time.monotonic()
            if self.tqdm is not None:
                self.bar = self.tqdm(total=100.0, desc=f"{self.job_id[:8]} {phase}", unit="%",
                                     bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}{postfix}]")  # fmt: skip
        elapsed = time.monotonic() - self.phase_start
        if eta is None and percent and 0 < percent < 100 and elapsed > 0:
            eta = elapsed * (100 - percent) / percent  # no estimate from the server yet: this phase's rate
        if self.bar is None:
            line = f"{self.job_id} {job['status']}: {phase} {detail}".rstrip()
            if percent is not None:
                line += f" {percent:.0f}%"
            if eta is not None:
                line += f" eta {hms(eta)}"
            if line != self.line:
                print(line, file=sys.stderr, flush=True)
                self.line = line
            return
        if percent is not None:
            self.bar.n = min(float(percent), 100.0)
        self.bar.set_postfix_str(f"eta {hms(eta)}" if eta is not None else "eta ?", refresh=False)
        self.bar.set_description_str(f"{self.job_id[:8]} {phase} {detail}".rstrip(), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"
