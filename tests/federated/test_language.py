"""The federated character-level LSTM language model on the standard library's docstrings."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.federated.language import (
    DEFAULT_MODULES,
    UNKNOWN,
    Vocabulary,
    language_data,
    module_path,
    prose,
    run_language_demo,
    stdlib_corpus,
    windows,
)

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
