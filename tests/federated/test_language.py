"""The federated character-level LSTM language model on the standard library's docstrings."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgerun.federated.language import (
    DEFAULT_MODULES,
    UNKNOWN,
    LanguageRound,
    Vocabulary,
    language_data,
    main,
    module_path,
    prose,
    report_language_demo,
    run_language_demo,
    stdlib_corpus,
    windows,
)
from edgerun.federated.language_plot import MISSING_MATPLOTLIB, plot_language_rounds

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = {"clients": 2, "rounds": 2, "epochs": 1, "max_chars": 600}  # a run of a few seconds

SOURCE = '''#!/usr/bin/env python
"""Module doc."""
# a comment
def f():
    """Function   doc."""
    return "not prose"  # trailing
'''


def test_prose_keeps_docstrings_and_comments_in_source_order():
    assert prose(SOURCE) == "Module doc.\na comment\nFunction doc.\ntrailing"


def test_corpus_reads_the_interpreters_own_modules():
    corpus = stdlib_corpus(["heapq", "json"], max_chars=200)
    assert module_path("json").name == "__init__.py" and module_path("heapq").name == "heapq.py"
    assert corpus["heapq"].startswith("Heap queue algorithm") and len(corpus["json"]) == 200
    with pytest.raises(FileNotFoundError, match="no_such_module"):
        module_path("no_such_module")


def test_vocabulary_and_windows_predict_the_next_character():
    vocab = Vocabulary.of(["abca"], max_size=3)
    assert vocab.chars == UNKNOWN + "ab" and vocab.decode(vocab.encode("abcz")) == "ab" + UNKNOWN * 2
    x, y = windows(np.arange(10), steps=3)
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]] and y.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_each_device_holds_one_module():
    data = language_data(DEFAULT_MODULES[:3], max_chars=600, steps=16)
    assert [m for m, _, _ in data.clients] == list(DEFAULT_MODULES[:3])
    firsts = {data.vocab.decode(x[0]) for _, x, _ in data.clients}
    assert len(firsts) == 3 and data.x_test.shape[1] == 16 and data.y_test.shape == data.x_test.shape


def test_federated_perplexity_falls_and_ends_near_the_central_run():
    rounds = run_language_demo(on_round=None)  # 3 devices, 8 rounds, secure aggregation
    federated = [r.federated_perplexity for r in rounds]
    assert all(b < a for a, b in zip(federated, federated[1:], strict=False)), federated
    assert federated[-1] < 0.7 * federated[0]
    assert federated[-1] <= 1.10 * rounds[-1].central_perplexity, (federated[-1], rounds[-1].central_perplexity)
    assert rounds[-1].federated_accuracy > 0.25  # always guessing ' ' gets 0.16
    assert all(r.upload_bytes_per_client > 0 for r in rounds) and "KiB per device" in str(rounds[0])


def made_up_rounds(count: int = 4) -> list[LanguageRound]:
    return [LanguageRound(r, 20.0 - 2 * r, 0.2 + 0.02 * r, 15.0 - r, 0.25 + 0.02 * r, 30_400.0)
            for r in range(1, count + 1)]


def share_near(image: np.ndarray, rgb: tuple[int, int, int]) -> float:
    """The share of pixels within 0.06 of colour `rgb` (0-255) in every channel."""
    return float(np.mean(np.all(np.abs(image[..., :3] - np.array(rgb) / 255) < 0.06, axis=-1)))


def test_plot_draws_federated_and_central_perplexity_and_accuracy(tmp_path):
    image_module = pytest.importorskip("matplotlib.image")
    path = plot_language_rounds(made_up_rounds(), tmp_path / "new folder" / "lm.png")
    assert path == tmp_path / "new folder" / "lm.png" and path.read_bytes()[:8] == PNG_SIGNATURE
    image = image_module.imread(path)
    assert image.shape[:2] == (288, 720)  # 9 x 3.6 inches at 80 dpi
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 100  # text, lines, markers: not blank
    assert share_near(image, (31, 119, 180)) > 0.002 and share_near(image, (255, 127, 14)) > 0.002  # both lines
    with pytest.raises(ValueError, match="no rounds"):
        plot_language_rounds([], tmp_path / "empty.png")


def test_report_prints_each_round_and_writes_the_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert report_language_demo(tmp_path / "lm.png", **TINY) == 0  # the federated perplexity fell
    out = capsys.readouterr().out
    assert "round  1  federated: perplexity" in out and "round  2  federated" in out and "central:" in out
    assert "after 2 rounds: test perplexity federated" in out and "KiB sent per device per round" in out
    assert (tmp_path / "lm.png").read_bytes()[:8] == PNG_SIGNATURE


def test_without_matplotlib_the_report_names_the_extra_instead_of_failing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["--clients", "2", "--rounds", "2", "--epochs", "1", "--max-chars", "600",
                 "--plot", str(tmp_path / "lm.png")]) == 0
    out = capsys.readouterr().out
    assert MISSING_MATPLOTLIB in out and ".[plot]" in MISSING_MATPLOTLIB and "after 2 rounds" in out
    assert not (tmp_path / "lm.png").exists()
