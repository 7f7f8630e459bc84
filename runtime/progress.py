"""Progress of a long command: a tqdm bar on a terminal, plain lines everywhere.

    with Progress(total=batches, unit="batch") as progress:
        progress.update(1, loss=0.31)          # the bar (a terminal only)
        progress.line("epoch 1/5: loss 0.3")   # one line on stdout, terminal or log file

The bar goes to stderr and is drawn only when stderr is a terminal (tqdm's `disable=None`), so a
log file gets the `line`s and nothing else: one line per epoch or round, no carriage returns.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class Progress:
    """A progress bar of `total` steps (on a terminal), and one-line reports (always)."""

    def __init__(self, total: int, unit: str, desc: str = "") -> None:
        self.bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, disable=None, leave=False,
                        dynamic_ncols=True)

    def update(self, steps: int = 1, **postfix: Any) -> None:
        """Advance the bar by `steps`; `postfix` (name: value) is shown after it. No-op off a terminal."""
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(steps)

    def restart(self, desc: str) -> None:
        """Start the bar again from 0 (a new epoch), labelled `desc`."""
        self.bar.set_description_str(desc, refresh=False)
        self.bar.reset()

    def line(self, text: str) -> None:
        """Print `text` as one line on stdout (above the bar on a terminal)."""
        self.bar.write(text, file=sys.stdout)
        sys.stdout.flush()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
