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

from edgerun.converters import from_onnx
from edgerun.runtime.interpreter import Interpreter

DATA = os.path.join(importlib.util.find_spec("silero_vad").submodule_search_locations[0], "data")
MODELS = ["silero_vad.onnx", "silero_vad_16k_op15.onnx", "silero_vad_op18_ifless.onnx"]  # 16k_op15: 16 kHz only
CHUNKS = 40


def _resonate(x: np.ndarray, frequency: float, bandwidth: float, sample_rate: int) -> np.ndarray:
    """A two-pole resonator (one formant): y[n] = (1-r) x[n] + 2r cos(w) y[n-1] - r^2 y[n-2]."""
    r = np.exp(-np.pi * bandwidth / sample_rate)
    a1, a2, gain = 2 * r * np.cos(2 * np.pi * frequency / sample_rate), -r * r, 1 - r
    y = np.zeros_like(x)
    y1 = y2 = 0.0
    for n, value in enumerate(x.tolist()):
        y1, y2 = gain * value + a1 * y1 + a2 * y2, y1
        y[n] = y1
    return y


def _audio(sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Source-filter vowels: a glottal pulse train with a wandering pitch through the
    formants of /a/, /i/, /u/, /e/ in turn, in 4 Hz syllables, with a pause; the model
    reads it as speech (probabilities move from ~0 to ~1), so the comparison covers
    the whole range."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    f0 = 110 + 25 * np.sin(2 * np.pi * 0.7 * t) + 10 * np.sin(2 * np.pi * 5 * t)
    pulses = np.diff(np.floor(np.cumsum(f0) / sample_rate), prepend=0)
    source = np.zeros(n)
    for i in range(n):  # a leaky integrator: the glottal pulse's spectral tilt
        source[i] = pulses[i] + (0.97 * source[i - 1] if i else 0.0)
    source += 0.02 * rng.standard_normal(n)
    vowels = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480)]
    voiced = np.zeros(n)
    segment = int(0.18 * sample_rate)
    for k in range(0, n, segment):
        x = source[k : k + segment]
        for frequency, bandwidth in zip(vowels[(k // segment) % 4], (80, 100, 120), strict=True):
            x = _resonate(x, frequency, bandwidth, sample_rate)
        voiced[k : k + segment] = x
    envelope = (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)) * (((t > 0.2) & (t < 0.9)) | (t > 1.1))
    signal = voiced * envelope
    signal = 0.3 * signal / np.abs(signal).max() + 0.003 * rng.standard_normal(n)
    return signal.astype(np.float32)


def _stream(run, sample_rate: int, state_shape=(2, 1, 128)):
    """Feed the audio as the package's OnnxWrapper does: each chunk with the previous
    chunk's last 64 (16 kHz) or 32 (8 kHz) samples in front, the state carried over."""
    chunk, context_size = (512, 64) if sample_rate == 16000 else (256, 32)
    audio = _audio(sample_rate, CHUNKS * chunk / sample_rate)
    state = np.zeros(state_shape, np.float32)
    context = np.zeros((1, context_size), np.float32)
    probabilities, states = [], []
    for i in range(CHUNKS):
        x = np.concatenate([context, audio[None, i * chunk : (i + 1) * chunk]], axis=1)
        out, state = run(x, state, sample_rate)
        context = x[:, -context_size:]
        probabilities.append(float(out.reshape(-1)[0]))
        states.append(state)
    return np.array(probabilities), states


CASES = [(name, rate) for name in MODELS for rate in (16000, 8000) if not ("16k" in name and rate == 8000)]


@pytest.mark.parametrize(("name", "sample_rate"), CASES)
def test_streaming_probabilities_match_onnxruntime(name: str, sample_rate: int) -> None:
    path = os.path.join(DATA, name)
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
    assert want.min() < 0.1 and want.max() > 0.6, "the test signal must move the probability"
