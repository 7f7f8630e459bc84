"""A real model: Silero VAD, the voice-activity detector the `silero-vad` package ships
as ONNX (If, Conv, LSTM, shape arithmetic). A stream of 512-sample chunks (256 at
8 kHz) runs with the recurrent state carried from call to call, as the package's
own iterator does; every chunk's speech probability and the state must match
onnxruntime's to 1e-4.

The package is installed without its dependencies (it would pull torch; see
tasks.py), and only its data files are read: nothing is imported from it.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import onnxruntime as ort
import pytest

from converters import from_onnx
from runtime.interpreter import Interpreter

DATA = os.path.join(importlib.util.find_spec("silero_vad").submodule_search_locations[0], "data")
MODELS = ["silero_vad.onnx", "silero_vad_16k_op15.onnx", "silero_vad_op18_ifless.onnx"]
CHUNKS = 24


def _audio(sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Silence, a voiced-like harmonic burst with vibrato, noise, another burst: the
    probabilities move across the whole range, so the comparison means something."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = ((t > 0.25) & (t < 0.7)) | ((t > 0.95) & (t < 1.3))
    signal = 0.3 * voiced * envelope + 0.01 * rng.standard_normal(t.size)
    return signal.astype(np.float32)


def _stream(run, sample_rate: int, state_shape=(2, 1, 128)):
    chunk = 512 if sample_rate == 16000 else 256
    audio = _audio(sample_rate, CHUNKS * chunk / sample_rate)
    state = np.zeros(state_shape, np.float32)
    probabilities, states = [], []
    for i in range(CHUNKS):
        out, state = run(audio[None, i * chunk : (i + 1) * chunk], state, sample_rate)
        probabilities.append(float(out.reshape(-1)[0]))
        states.append(state)
    return np.array(probabilities), states


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("sample_rate", [16000, 8000])
def test_streaming_probabilities_match_onnxruntime(name: str, sample_rate: int) -> None:
    path = os.path.join(DATA, name)
    if name == "silero_vad_16k_op15.onnx" and sample_rate == 8000:
        sample_rate = 16000  # a 16 kHz-only export: run it twice at 16 kHz instead
    interpreter = Interpreter(from_onnx(path), device="cpu")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def ours(x, state, sr):
        feeds = {"input": x, "state": state, "sr": np.array(sr, np.int64)}
        out = interpreter.run({k: v for k, v in feeds.items() if k in names})
        return out["output"], out["stateN"]

    def theirs(x, state, sr):
        feeds = {"input": x, "state": state, "sr": np.array(sr, np.int64)}
        return tuple(session.run(["output", "stateN"], {k: v for k, v in feeds.items() if k in names}))

    got, got_states = _stream(ours, sample_rate)
    want, want_states = _stream(theirs, sample_rate)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_states[-1], want_states[-1], atol=1e-4, rtol=0)
    assert want.max() - want.min() > 0.05, "the test signal must move the probability"
