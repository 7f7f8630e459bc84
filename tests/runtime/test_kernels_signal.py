"""Signal kernels (DFT, STFT, the windows, MelWeightMatrix) beyond the ONNX conformance cases:
batches, odd lengths, padding and cutting, float64 and other output types against onnxruntime;
round trips and numpy's closed forms; invalid nodes, which must fail with a specific ModelError.
"""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from edgerun.runtime.errors import ModelError, ValueNeeded
from edgerun.runtime.kernels import TensorSpec, resolve
from tests.runtime.test_kernels import onnx_model

I64, I32, F32, F64 = np.int64, np.int32, np.float32, np.float64
RNG = np.random.default_rng(11)
TOLERANCE = {np.dtype(F32): (1e-4, 1e-5), np.dtype(F64): (1e-10, 1e-12)}


def signal(*shape, dtype=F32):
    x = RNG.standard_normal(shape).astype(dtype)
    x.flags.writeable = False
    return x


def scalar(value, dtype=I64):
    return np.array(value, dtype)


def run_ours(op, arrays, attrs, opset, consts):
    """resolve -> prepare -> run, with `consts` known at prepare; outputs start as NaN (or the
    dtype's largest value) so an element the kernel leaves unwritten shows."""
    kernel = resolve("", op, opset, "n")(op, "n", dict(attrs), opset)
    specs = [None if a is None else TensorSpec(a.dtype, a.shape) for a in arrays]
    out_specs = kernel.prepare(specs, [a if i in consts else None for i, a in enumerate(arrays)])
    outputs = [np.full(s.shape, np.nan if s.dtype.kind == "f" else np.iinfo(s.dtype).max, s.dtype)
               for s in out_specs]
    kernel.run(arrays, outputs)
    return outputs


def as_complex(y):
    return y[..., 0] + 1j * y[..., 1]


def compare_with_onnxruntime(op, arrays, attrs, opset, consts):
    """Our output against onnxruntime's for one node; `consts` are initializers (and known at prepare).
    onnxruntime computes windows in float32 whatever the output type, so those compare at that precision."""
    (ours,) = run_ours(op, arrays, attrs, opset, consts)
    model, feeds = onnx_model(op, arrays, attrs, opset, consts, [ours])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    (theirs,) = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    rtol, atol = TOLERANCE.get(np.dtype(F32) if op.endswith("Window") else ours.dtype, (0, 0))
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)


# --- against onnxruntime ----------------------------------------------------------------------

ORT_CASES = [
    # op, inputs, attrs, opset, constant inputs
    ("DFT", [signal(3, 7, 1)], {"axis": 1}, 17, ()),
    ("DFT", [signal(2, 5, 4, 2)], {"axis": 2, "inverse": 1}, 17, ()),
    ("DFT", [signal(2, 5, 4, 2)], {"axis": -3}, 17, ()),
    ("DFT", [signal(7, 1)], {"axis": 0}, 17, ()),
    ("DFT", [signal(3, 7, 1), scalar(12)], {"axis": 1}, 17, (1,)),
    ("DFT", [signal(3, 7, 2), scalar(4, I32)], {"axis": 1, "inverse": 1}, 17, (1,)),
    ("DFT", [signal(2, 9, 3, 1), scalar(9)], {"axis": 1, "onesided": 1}, 17, (1,)),
    ("DFT", [signal(2, 8, 1)], {"axis": 1, "onesided": 1}, 17, ()),
    ("DFT", [signal(3, 6, 2, dtype=F64)], {"axis": 1}, 17, ()),
    ("DFT", [signal(2, 3, 5, 1)], {}, 20, ()),
    ("DFT", [signal(2, 3, 5, 2, dtype=F64), None, scalar(0)], {"inverse": 1}, 20, (2,)),
    ("DFT", [signal(4, 5, 1), scalar(11), scalar(-3)], {"onesided": 1}, 20, (1, 2)),
    ("STFT", [signal(2, 37, 1), scalar(3), None, scalar(10)], {}, 17, (1, 3)),
    ("STFT", [signal(2, 37, 1), scalar(4), signal(9)], {"onesided": 0}, 17, (1,)),
    ("STFT", [signal(3, 20, 2), scalar(5, I32), signal(7), scalar(7, I32)], {"onesided": 0}, 17, (1, 3)),
    ("STFT", [signal(2, 40, 1, dtype=F64), scalar(6), signal(15, dtype=F64)], {}, 17, (1,)),
    ("STFT", [signal(1, 16, 1), scalar(16), None, scalar(16)], {}, 17, (1, 3)),
    *[(op, [scalar(size)], attrs, 17, (0,))
      for op in ("HannWindow", "HammingWindow", "BlackmanWindow")
      for size, attrs in [(7, {}), (7, {"periodic": 0}), (2, {}), (1, {}),
                          (33, {"output_datatype": TensorProto.DOUBLE}),
                          (12, {"output_datatype": TensorProto.DOUBLE, "periodic": 0})]],
    ("HannWindow", [scalar(9, I32)], {"output_datatype": TensorProto.INT32}, 17, (0,)),
    ("BlackmanWindow", [scalar(9)], {"output_datatype": TensorProto.UINT8}, 17, (0,)),
]


@pytest.mark.parametrize("op, arrays, attrs, opset, consts", ORT_CASES,
                         ids=[f"{c[0]}{c[3]}-{i}" for i, c in enumerate(ORT_CASES)])
def test_signal_ops_match_onnxruntime(op, arrays, attrs, opset, consts):
    compare_with_onnxruntime(op, arrays, attrs, opset, consts)


def test_irfft_of_a_real_spectrum_matches_onnxruntime():
    # an odd length, padded past the spectrum: the complex-to-real inverse with dft_length 9
    spectrum = np.fft.rfft(RNG.standard_normal((2, 7, 3)), axis=1)
    x = np.stack([spectrum.real, spectrum.imag], axis=-1).astype(F32)
    compare_with_onnxruntime("DFT", [x, scalar(9)], {"axis": 1, "inverse": 1, "onesided": 1}, 17, (1,))


def test_irfft_shorter_than_the_spectrum_reads_its_first_bins_as_onnx_does():
    # dft_length 4 reads bins 0..2 as one half of a Hermitian spectrum (ONNX's reference does the
    # same; onnxruntime instead takes the real part of a full inverse DFT of bins 0..3).
    x = signal(2, 5, 3, 2, dtype=F64)
    (y,) = run_ours("DFT", [x, scalar(4)], {"axis": 1, "inverse": 1, "onesided": 1}, 17, (1,))
    z = as_complex(x)
    full = np.concatenate([z[:, :3], np.conj(z[:, 1:2])], axis=1)  # [z0, z1, z2, conj(z1)]
    np.testing.assert_allclose(y[..., 0], np.fft.ifft(full, axis=1).real, rtol=1e-12, atol=1e-12)


MEL = [  # num_mel_bins, dft_length, sample_rate, lower, upper
    (8, 16, 8192, 0.0, 4096.0),
    (5, 31, 16000, 100.0, 7000.0),
    (40, 512, 16000, 20.0, 8000.0),
    (13, 400, 22050, 0.0, 11000.0),
    (3, 64, 8000, 300.0, 300.0),
]


@pytest.mark.parametrize("mels, length, rate, lower, upper", MEL)
def test_mel_weight_matrix_matches_onnxruntime(mels, length, rate, lower, upper):
    inputs = [scalar(mels), scalar(length), scalar(rate), scalar(lower, F32), scalar(upper, F32)]
    compare_with_onnxruntime("MelWeightMatrix", inputs, {}, 17, (0, 1, 2, 3, 4))


def test_mel_weight_matrix_types_match_onnxruntime():
    inputs = [scalar(6, I32), scalar(64, I32), scalar(8000, I32), scalar(50.0, F32), scalar(3900.0, F32)]
    for code in (TensorProto.DOUBLE, TensorProto.INT64, TensorProto.UINT8):
        compare_with_onnxruntime("MelWeightMatrix", inputs, {"output_datatype": code}, 17, (0, 1, 2, 3, 4))



def test_many_mel_bins_over_few_dft_bins_match_onnxruntime():
    # more filters than DFT bins: most rises and falls are empty (the filter is 1 at its centre)
    inputs = [scalar(1500), scalar(1024), scalar(16000), scalar(0.0, F32), scalar(7990.0, F32)]
    compare_with_onnxruntime("MelWeightMatrix", inputs, {}, 17, (0, 1, 2, 3, 4))


def test_mel_weight_matrix_allocates_only_its_output():
    # at the output limit (8193 x 8191 elements): prepare built it with float64 temporaries of
    # 512 MiB each (2 GiB peak) before the plan could check the output against its budget; now
    # prepare allocates next to nothing and run little beyond the output
    inputs = [scalar(8191), scalar(16384), scalar(16000), scalar(0.0, F32), scalar(7999.0, F32)]
    kernel = resolve("", "MelWeightMatrix", 17, "n")("MelWeightMatrix", "n", {}, 17)
    tracemalloc.start()
    try:
        (spec,) = kernel.prepare([TensorSpec(a.dtype, a.shape) for a in inputs], inputs)
        prepare_peak = tracemalloc.get_traced_memory()[1]
        assert spec.shape == (8193, 8191) and spec.dtype == F32
        out = np.full(spec.shape, np.nan, F32)
        tracemalloc.reset_peak()
        kernel.run(inputs, [out])
        run_peak = tracemalloc.get_traced_memory()[1] - out.nbytes
    finally:
        tracemalloc.stop()
    assert prepare_peak < 1 << 20, prepare_peak
    assert run_peak < 4 << 20, run_peak
    assert not np.isnan(out).any()
    np.testing.assert_array_equal(out.max(axis=0)[out.any(axis=0)], 1)  # every non-empty filter peaks at 1


# --- closed forms and round trips ---------------------------------------------------------------


def test_dft_of_a_float64_batch_is_numpys_fft_along_the_axis():
    x = signal(2, 3, 6, 2, dtype=F64)
    (y,) = run_ours("DFT", [x, None, scalar(2)], {}, 20, (2,))
    np.testing.assert_allclose(as_complex(y), np.fft.fft(as_complex(x), axis=2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 9, 16])
def test_dft_then_inverse_dft_is_the_identity(n):
    x = signal(3, n, 2, dtype=F64)
    (y,) = run_ours("DFT", [x], {"axis": 1}, 17, ())
    (back,) = run_ours("DFT", [y], {"axis": 1, "inverse": 1}, 17, ())
    np.testing.assert_allclose(back, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 7, 10])
def test_rfft_then_irfft_is_the_identity(n):
    x = signal(2, n, 4, 1, dtype=F64)
    dft_length = scalar(n)
    (spectrum,) = run_ours("DFT", [x, dft_length], {"axis": 1, "onesided": 1}, 17, (1,))
    assert spectrum.shape == (2, n // 2 + 1, 4, 2)
    (back,) = run_ours("DFT", [spectrum, dft_length], {"axis": 1, "onesided": 1, "inverse": 1}, 17, (1,))
    np.testing.assert_allclose(back, x, rtol=1e-12, atol=1e-12)


def test_dft_of_float16_runs_in_float32():
    x = signal(2, 5, 1).astype(np.float16)
    (y,) = run_ours("DFT", [x], {"axis": 1}, 17, ())
    assert y.dtype == np.float16
    expected = np.fft.fft(x[..., 0].astype(F64), axis=1)
    np.testing.assert_allclose(as_complex(y.astype(F64)), expected, rtol=2e-3, atol=5e-3)


def test_stft_is_the_dft_of_windowed_frames():
    x, window = signal(2, 23, 2, dtype=F64), signal(8, dtype=F64)
    (y,) = run_ours("STFT", [x, scalar(5), window], {"onesided": 0}, 17, (1,))
    z = as_complex(x)
    frames = np.stack([z[:, s : s + 8] * window for s in range(0, 23 - 8 + 1, 5)], axis=1)
    np.testing.assert_allclose(as_complex(y), np.fft.fft(frames, axis=-1), rtol=1e-12, atol=1e-12)


def test_stft_without_window_or_frame_length_takes_one_frame_of_the_whole_signal():
    x = signal(2, 9, 1, dtype=F64)
    (y,) = run_ours("STFT", [x, scalar(4)], {}, 17, (1,))
    np.testing.assert_allclose(as_complex(y), np.fft.rfft(x[..., 0], axis=1)[:, None], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op, numpy_window", [("HannWindow", np.hanning), ("BlackmanWindow", np.blackman)])
@pytest.mark.parametrize("size", [2, 5, 16])
def test_symmetric_windows_are_numpys(op, numpy_window, size):
    (w,) = run_ours(op, [scalar(size)], {"periodic": 0, "output_datatype": TensorProto.DOUBLE}, 17, (0,))
    np.testing.assert_allclose(w, numpy_window(size), rtol=1e-12, atol=1e-12)


def test_periodic_window_is_the_symmetric_one_a_sample_longer():
    (periodic,) = run_ours("HammingWindow", [scalar(10)], {"output_datatype": TensorProto.DOUBLE}, 17, (0,))
    n = np.arange(11)
    symmetric = 25 / 46 - 21 / 46 * np.cos(2 * np.pi * n / 10)
    np.testing.assert_allclose(periodic, symmetric[:10], rtol=1e-12, atol=1e-12)


def test_symmetric_window_of_one_sample_is_nan_as_onnx_defines_it():
    (w,) = run_ours("HannWindow", [scalar(1)], {"periodic": 0}, 17, (0,))
    assert w.shape == (1,) and np.isnan(w[0])


def test_mel_filters_peak_at_one_and_rise_linearly():
    inputs = [scalar(4), scalar(64), scalar(8000), scalar(0.0, F32), scalar(4000.0, F32)]
    (m,) = run_ours("MelWeightMatrix", inputs, {}, 17, (0, 1, 2, 3, 4))
    assert m.shape == (33, 4) and m.dtype == F32
    np.testing.assert_array_equal(m.max(axis=0), np.ones(4, F32))
    low_mel = 0.0
    high_mel = 2595 * np.log10(1 + 4000 / 700)
    hz = 700 * (10 ** ((low_mel + np.arange(6) * (high_mel - low_mel) / 6) / 2595) - 1)
    points = np.floor(65 * hz / 8000).astype(int)
    for i in range(4):
        left, centre, right = points[i : i + 3]
        np.testing.assert_allclose(m[left : centre + 1, i], np.linspace(0, 1, centre - left + 1), atol=1e-6)
        np.testing.assert_allclose(m[centre:right, i], (right - np.arange(centre, right)) / (right - centre))
        assert not m[:left, i].any() and not m[right:, i].any()


def test_shape_inputs_unknown_at_prepare_ask_for_their_values():
    kernel = resolve("", "DFT", 17, "n")("DFT", "n", {}, 17)
    with pytest.raises(ValueNeeded):
        kernel.prepare([TensorSpec(np.dtype(F32), (2, 8, 1)), TensorSpec(np.dtype(I64), ())], [None, None])


# --- invalid nodes ------------------------------------------------------------------------------


def spec(shape, dtype=F32):
    return TensorSpec(np.dtype(dtype), tuple(shape))


def known(value, dtype=I64):
    return spec(np.shape(value), dtype), np.array(value, dtype)


X = spec((2, 8, 1))
XC = spec((2, 8, 2))
MEL_OK = [6, 64, 8000, 0.0, 4000.0]

INVALID = [
    # op, opset, input specs, values by index, attrs, message
    ("DFT", 17, [X, spec(())], {1: np.array(0, I64)}, {}, "dft_length 0 is out of range [1, 67108864]"),
    ("DFT", 17, [X, spec(())], {1: np.array(-5, I64)}, {}, "dft_length -5 is out of range"),
    ("DFT", 17, [X, spec(())], {1: np.array(10**12, I64)}, {}, f"dft_length {10**12} is out of range"),
    ("DFT", 17, [X, spec((), F32)], {1: np.array(4.0, F32)}, {}, "dft_length: expected an int scalar"),
    ("DFT", 17, [X, spec((2,))], {1: np.array([4, 4], I64)}, {}, "dft_length: expected an int scalar"),
    ("DFT", 17, [spec((4096, 8, 1)), spec(())], {1: np.array(1 << 16, I64)}, {},
     "output shape (4096, 65536, 2) (536870912 elements) is too large"),
    ("DFT", 17, [X], {}, {"axis": 2}, "axis 2 is out of range [-3, -2] or [0, 1] for rank 3"),
    ("DFT", 17, [X], {}, {"axis": -1}, "axis -1 is out of range"),
    ("DFT", 17, [X], {}, {"axis": -4}, "axis -4 is out of range"),
    ("DFT", 20, [X, None, spec(())], {2: np.array(2, I64)}, {}, "axis 2 is out of range"),
    ("DFT", 20, [X, None, spec((), F32)], {2: np.array(1.0, F32)}, {}, "axis: expected an int scalar"),
    ("DFT", 17, [spec((2, 8, 3))], {}, {}, "the last axis must hold 1 (real) or 2 (real, imaginary) values"),
    ("DFT", 17, [spec((8,))], {}, {}, "the last axis must hold 1"),
    ("DFT", 17, [spec((2, 8, 1), I64)], {}, {}, "input: expected a float tensor"),
    ("DFT", 17, [XC], {}, {"onesided": 1}, "onesided=1 (real-to-complex DFT) needs real input"),
    ("DFT", 17, [X], {}, {"onesided": 1, "inverse": 1}, "needs complex input (last axis 2)"),
    ("DFT", 17, [spec((2, 1, 2))], {}, {"onesided": 1, "inverse": 1}, "dft_length 0 is out of range"),
    ("DFT", 17, [spec((2, 0, 2))], {}, {}, "dft_length 0 is out of range"),
    ("DFT", 17, [X], {}, {"inverse": 2}, "attribute 'inverse' must be 0 or 1"),
    ("DFT", 17, [X, spec(()), spec(())], {}, {}, "expected 1..2 inputs"),
    ("STFT", 17, [spec((2, 64, 1)), spec(())], {1: np.array(0, I64)}, {}, "frame_step must be >= 1, got 0"),
    ("STFT", 17, [spec((2, 64, 1)), spec(())], {1: np.array(-3, I64)}, {}, "frame_step must be >= 1, got -3"),
    ("STFT", 17, [spec((2, 64, 1)), spec(()), None, spec(())], {1: np.array(4, I64), 3: np.array(65, I64)}, {},
     "frame_length 65 is out of range [1, 64] (the signal's length)"),
    ("STFT", 17, [spec((2, 64, 1)), spec(()), None, spec(())], {1: np.array(4, I64), 3: np.array(0, I64)}, {},
     "frame_length 0 is out of range"),
    ("STFT", 17, [spec((2, 64, 1)), spec(()), spec((16,)), spec(())], {1: np.array(4, I64), 3: np.array(8, I64)},
     {}, "window has 16 values but frame_length is 8"),
    ("STFT", 17, [spec((2, 64, 1)), spec(()), spec((4, 4))], {1: np.array(4, I64)}, {},
     "window: expected a 1-D float32 tensor, got float32 of shape (4, 4)"),
    ("STFT", 17, [spec((2, 64, 1)), spec(()), spec((16,), F64)], {1: np.array(4, I64)}, {},
     "window: expected a 1-D float32 tensor, got float64"),
    ("STFT", 17, [spec((2, 64, 1)), spec(()), spec((0,))], {1: np.array(4, I64)}, {}, "frame_length 0 is out of range"),
    ("STFT", 17, [spec((64, 1)), spec(())], {1: np.array(4, I64)}, {}, "signal: expected shape [batch, signal_length"),
    ("STFT", 17, [spec((2, 64, 3)), spec(())], {1: np.array(4, I64)}, {}, "signal: the last axis must hold 1"),
    ("STFT", 17, [spec((1, 1 << 20, 1)), spec(()), None, spec(())], {1: np.array(1, I64), 3: np.array(4096, I64)},
     {}, "output shape (1, 1044481, 2049, 2) (4280283138 elements) is too large"),
    ("STFT", 17, [spec((2, 64, 1)), spec(())], {1: np.array(4, I64)}, {"onesided": 3}, "'onesided' must be 0 or 1"),
    ("HannWindow", 17, [spec((), I64)], {0: np.array(-3, I64)}, {}, "size -3 is out of range [1, 67108864]"),
    ("HannWindow", 17, [spec((), I32)], {0: np.array(0, I32)}, {}, "size 0 is out of range"),
    ("HammingWindow", 17, [spec((), I64)], {0: np.array(1 << 40, I64)}, {}, f"size {1 << 40} is out of range"),
    ("BlackmanWindow", 17, [spec((), F32)], {0: np.array(4.0, F32)}, {}, "size: expected an int scalar"),
    ("HannWindow", 17, [spec((), I64)], {0: np.array(4, I64)}, {"output_datatype": TensorProto.BOOL},
     "bool is not a window type"),
    ("HannWindow", 17, [spec((), I64)], {0: np.array(4, I64)}, {"output_datatype": TensorProto.STRING},
     "attribute 'output_datatype': element type 8 is not supported"),
    ("HannWindow", 17, [spec((), I64)], {0: np.array(4, I64)}, {"periodic": 2}, "'periodic' must be 0 or 1"),
]


def mel_case(index, value, message):
    values = list(MEL_OK)
    values[index] = value
    arrays = [np.array(v, I64 if i < 3 else F32) for i, v in enumerate(values)]
    return ("MelWeightMatrix", 17, [spec(a.shape, a.dtype) for a in arrays], dict(enumerate(arrays)), {}, message)


INVALID += [
    mel_case(0, -1, "num_mel_bins -1 is out of range [0, 67108864]"),
    mel_case(1, 0, "dft_length 0 is out of range [1, 67108864]"),
    mel_case(2, 0, "sample_rate must be >= 1, got 0"),
    mel_case(3, -10.0, "the edges must satisfy 0 <= lower_edge_hertz <= upper_edge_hertz, got -10.0 and 4000.0"),
    mel_case(3, 5000.0, "got 5000.0 and 4000.0"),
    mel_case(4, float("nan"), "got 0.0 and nan"),
    mel_case(4, 6000.0, "upper_edge_hertz 6000.0 falls in DFT bin 34, past the last (32) for dft_length 64"),
    mel_case(1, 1 << 25, "output shape (16777217, 6) (100663302 elements) is too large"),
]


@pytest.mark.parametrize("op, opset, specs, values, attrs, message", INVALID,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(INVALID)])
def test_invalid_nodes_raise_model_error(op, opset, specs, values, attrs, message):
    kernel = resolve("", op, opset, "bad")(op, "bad", attrs, opset)
    with pytest.raises(ModelError, match=f"node 'bad' \\({op}\\): .*{re.escape(message)}"):
        kernel.prepare(specs, [values.get(i) for i in range(len(specs))])
