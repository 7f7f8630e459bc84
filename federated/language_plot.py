"""The plot of the federated language model (`federated/language.py`): test perplexity per round,
federated against central, beside next-character accuracy. Needs matplotlib (the `plot` extra,
also in `test`), imported only when a plot is drawn."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLOT_EXTRA = "plot"  # the extra of pyproject.toml that installs matplotlib
MISSING_MATPLOTLIB = f"matplotlib is not installed: no plot (pip install -e '.[{PLOT_EXTRA}]' installs it)"


def plot_language_rounds(rounds: Sequence[Any], path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of `rounds` (LanguageRound-like: round, federated_/central_ perplexity and
    accuracy, upload_bytes_per_client) to `path`, creating its folder: perplexity per round on the
    left (lower is better), next-character accuracy on the right. Returns the path written.
    ValueError for no rounds; ImportError without matplotlib (see MISSING_MATPLOTLIB)."""
    if not rounds:
        raise ValueError("plot_language_rounds: no rounds to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r.round for r in rounds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for axis, metric, label in ((left, "perplexity", "test perplexity"),
                                (right, "accuracy", "next-character accuracy")):
        axis.plot(x, [getattr(r, f"federated_{metric}") for r in rounds], "o-", label="federated (secure aggregation)")
        axis.plot(x, [getattr(r, f"central_{metric}") for r in rounds], "s--", label="central, same budget")
        axis.set_xlabel("round")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    left.legend()
    kib = rounds[-1].upload_bytes_per_client / 1024
    fig.suptitle(title or f"federated character LSTM: {kib:.1f} KiB sent per device per round")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
