"""Models made by TensorFlow's own converter (scripts/make_tflite_fixtures.py: a mobile
block in float32, with float16 weights and in int8; many element-wise, shape and reduction
ops; WHILE and IF; two signatures over two subgraphs; sparse weights; a fused LSTM), run by
edgerun and by LiteRT through each model's signatures, at batch 1 and 2 where the batch is
dynamic (two random draws otherwise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgerun import Interpreter

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FLOAT = ["mobile_block_f32", "mobile_block_fp16", "ops_f32", "while_f32", "if_f32", "signatures_f32",
         "sparse_f32", "lstm_f32"]


def _feeds(details: dict, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    feeds = {}
    for name, detail in details.items():
        shape = [d if d > 0 else batch for d in detail["shape_signature"]]
        if detail["dtype"] == np.bool_:
            feeds[name] = rng.random(shape) > 0.5
        elif np.issubdtype(detail["dtype"], np.integer):
            feeds[name] = rng.integers(-5, 6, shape).astype(detail["dtype"])
        else:
            feeds[name] = rng.uniform(-2, 2, shape).astype(detail["dtype"])
    return feeds


@pytest.mark.parametrize("name", FLOAT)
def test_fixture_matches_litert(name):
    from ai_edge_litert.interpreter import Interpreter as LiteRT

    data = (FIXTURES / f"{name}.tflite").read_bytes()
    ours = Interpreter(data)
    anchor = LiteRT(model_content=data)
    signatures = anchor.get_signature_list()
    assert signatures and set(signatures) <= set(ours.signatures)
    rng = np.random.default_rng(7)
    for key in signatures:
        for batch in (1, 2):
            # A fresh LiteRT interpreter per call: it keeps a fused LSTM's state in variable
            # tensors from call to call, while edgerun runs each call from the zero state, as
            # the Keras layer (stateful=False) does.
            runner = LiteRT(model_content=data).get_signature_runner(key)
            feeds = _feeds(runner.get_input_details(), rng, batch)
            expected = runner(**feeds)
            got = ours.run(feeds, signature=key)
            assert set(got) == set(expected)
            for out, want in expected.items():
                assert got[out].dtype == want.dtype, out
                np.testing.assert_allclose(got[out], want, rtol=1e-4, atol=1e-5, err_msg=f"{key}: {out}")
