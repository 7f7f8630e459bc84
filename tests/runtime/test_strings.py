"""String tensors end to end: the .erm STRING dtype (length-prefixed UTF-8, verified before it
is read), string inputs and outputs of an Interpreter, and the string kernels (StringNormalizer,
StringSplit, StringConcat, RegexFullMatch, TfIdfVectorizer, Cast, Equal) against onnxruntime
on inputs the conformance cases do not cover."""

from __future__ import annotations

import struct
import sys
import time
import tracemalloc
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgerun.runtime import Interpreter, dtypes, serialize
from edgerun.runtime.errors import InputError, MemoryBudgetError, ModelError, WorkBudgetError
from edgerun.runtime.graph import GraphBuilder
from edgerun.runtime.kernels import TensorSpec, strings
from edgerun.runtime.loader import load_model
from edgerun.runtime.verifier import verify_model
from tests.runtime.fuzz_cases import mutate, outcome, strings_graph
from tests.runtime.mutate import raw_model, vector_offset

WORDS = np.array([["", "é€😀", "plain"], ["tab\there", "x" * 300, "Ωmega ß"]], dtype=object)


def objects(items, shape=None) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array if shape is None else array.reshape(shape)


def const_graph(data: np.ndarray, name: str = "words"):
    g = GraphBuilder("consts", opset=20)
    g.output(g.op("Identity", [g.constant(name, data)]), "y")
    return g.build()


def encoded(items) -> bytes:
    return b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in items)


# --- the .erm format ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [WORDS, objects(["only"], ()), objects([], (0, 3)), objects(["a", ""])],
                         ids=["2d-unicode", "scalar", "empty", "empty-string"])
def test_string_constant_round_trips_bit_exact(data):
    first = serialize(const_graph(data), inline_limit=0)  # strings stay inline regardless
    loaded = next(v for v in load_model(first).values() if v.name == "words")
    assert loaded.dtype == np.dtype(object) and loaded.data.shape == data.shape
    assert all(type(s) is str for s in loaded.data.flat)
    assert loaded.data.tolist() == data.tolist()
    assert not loaded.data.flags.writeable
    raw = raw_model(first)
    buffer = raw["buffers"][raw["subgraphs"][0]["tensors"][0]["buffer"]]
    assert buffer["offset"] == 0 and bytes(buffer["data"]) == encoded(data.flat)
    assert serialize(load_model(first), inline_limit=0) == first


def test_writer_refuses_non_str_elements():
    with pytest.raises(ModelError, match=r"tensor 'mixed': cannot store as strings: element 1 is a int, not a str"):
        serialize(const_graph(objects(["a", 3]), "mixed"))
    with pytest.raises(ModelError, match=r"tensor 'lone': .*element 0 cannot be encoded as UTF-8"):
        serialize(const_graph(objects(["\ud800"]), "lone"))


def two_strings_model() -> tuple[bytes, int]:
    """A model whose only constant holds ["a", "bc"] (4+1+4+2 = 11 bytes), and its position."""
    data = serialize(const_graph(objects(["a", "bc"]), "pair"))
    raw = raw_model(data)
    vector = raw["buffers"][raw["subgraphs"][0]["tensors"][0]["buffer"]]["data"]
    assert bytes(vector) == encoded(["a", "bc"])
    return data, vector_offset(data, vector)


def patched(data: bytes, pos: int, raw: bytes) -> bytes:
    out = bytearray(data)
    out[pos : pos + len(raw)] = raw
    return bytes(out)


@pytest.mark.parametrize("at, raw, message", [
    (0, struct.pack("<I", 5), r"element 1: its length prefix at byte 9 is cut off"),
    (0, struct.pack("<I", 1000), r"element 0: length 1000 at byte 0 runs past the end of the 11-byte buffer"),
    (5, struct.pack("<I", 3), r"element 1: length 3 at byte 5 runs past the end"),
    (5, struct.pack("<I", 2**32 - 1), r"element 1: length 4294967295"),
    (4, b"\xff", r"element 0 is not valid UTF-8 \(invalid start byte at byte 4\)"),
    (9, b"\xc3(", r"element 1 is not valid UTF-8"),
    (0, struct.pack("<I", 7), r"buffer \d+ holds 1 strings, shape \[2\] needs 2"),
])
def test_verifier_refuses_bad_string_buffers_naming_the_tensor(at, raw, message):
    data, pos = two_strings_model()
    with pytest.raises(ModelError, match=r"tensor 0 \('pair'\).*" + message):
        load_model(patched(data, pos + at, raw))


def test_verifier_refuses_external_string_buffer():
    data = serialize(const_graph(objects(["a", "bc"]), "pair"))
    raw = raw_model(data)
    index = raw["subgraphs"][0]["tensors"][0]["buffer"]
    raw["buffers"][index] = {"data": None, "offset": 64, "size": 11}
    with pytest.raises(ModelError, match=rf"'pair'\): string data must be inline, buffer {index} is external"):
        verify_model(raw, len(data) + 128)


def test_mutated_string_buffers_give_only_model_errors_or_run():
    data = serialize(strings_graph())
    raw = raw_model(data)
    buffer = next(raw["buffers"][t["buffer"]] for t in raw["subgraphs"][0]["tensors"] if t["name"] == "words")
    start, size = vector_offset(data, buffer["data"]), len(buffer["data"])
    rng = np.random.default_rng(7)
    results = []
    for _ in range(400):  # bytes of the string data only: prefixes, UTF-8 sequences
        out = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            out[start + rng.integers(size)] = rng.integers(256)
        results.append(outcome(bytes(out)))
    results += [outcome(mutate(data, rng)) for _ in range(300)]  # the whole file
    bugs = [r for r in results if r.startswith("BUG")]
    assert not bugs, bugs[:5]
    assert sum(r == "ModelError" for r in results) > 200 and sum(r == "ran" for r in results) > 20


# --- Interpreter inputs and outputs -------------------------------------------------------------


def concat_model():
    """y = StringConcat(x, suffix), m = RegexFullMatch(y): planned (no run-time shapes), so its
    string values are planned arrays outside the byte arena."""
    g = GraphBuilder("io", opset=20)
    x = g.input("x", object, (-1,))
    y = g.op("StringConcat", [x, g.constant("suffix", objects(["!"]))])
    g.output(y, "y")
    g.output(g.op("RegexFullMatch", [g.op("Identity", [y])], pattern=r"\w+!"), "m")
    return Interpreter(g.build())


def test_interpreter_string_input_and_output():
    it = concat_model()
    assert not it._plans["serving_default"].eager  # string values planned beside the arena, not eager
    assert it.signatures["serving_default"].inputs["x"].dtype == np.dtype(object)
    first = it.run({"x": objects(["ab", "é", ""])})
    second = it.run({"x": ["zz"]})  # a list of str, another length
    assert first["y"].tolist() == ["ab!", "é!", "!"] and first["m"].tolist() == [True, False, False]
    assert second["y"].tolist() == ["zz!"] and second["m"].tolist() == [True]
    assert first["y"].dtype == np.dtype(object) and first["y"].tolist() == ["ab!", "é!", "!"]  # not overwritten


@pytest.mark.parametrize("feed", [np.array(["ab", "cd"]), np.array([b"ab", b"cd"]), [b"ab", "cd"]],
                         ids=["str-array", "bytes-array", "mixed-list"])
def test_interpreter_accepts_str_and_utf8_bytes(feed):
    assert concat_model().run({"x": feed})["y"].tolist() == ["ab!", "cd!"]


@pytest.mark.parametrize("feed, message", [
    (np.array([1, 2]), r"input 'x': expected strings, got an array of int64"),
    (objects(["a", None]), r"input 'x': element 1 is a NoneType, expected str or UTF-8 bytes"),
    ([b"\xff"], r"input 'x': element 0: bytes are not valid UTF-8"),
    (np.array([1.5], dtype=object), r"input 'x': element 0 is a float"),
])
def test_interpreter_refuses_non_strings(feed, message):
    with pytest.raises(InputError, match=message):
        concat_model().run({"x": feed})


# --- kernels against onnxruntime ----------------------------------------------------------------


def onnx_type(array: np.ndarray) -> int:
    return TensorProto.STRING if array.dtype == object else helper.np_dtype_to_tensor_dtype(array.dtype)


def ort_run(op, arrays, n_out=1, opset=20, **attrs):
    names = [f"in{i}" for i in range(len(arrays))]
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    inputs = [helper.make_tensor_value_info(n, onnx_type(a), a.shape) for n, a in zip(names, arrays, strict=True)]
    graph = helper.make_graph([node], "g", inputs, [helper.make_value_info(o, helper.TypeProto()) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(names, arrays, strict=True)))


def ours(op, arrays, n_out=1, opset=20, **attrs):
    """The op on graph inputs (not constants), through .erm and an Interpreter."""
    g = GraphBuilder("one", opset=opset)
    ins = [g.input(f"in{i}", a.dtype, a.shape) for i, a in enumerate(arrays)]
    outs = g.op(op, ins, num_outputs=n_out, **attrs)
    for i, value in enumerate(outs if n_out > 1 else [outs]):
        g.output(value, f"out{i}")
    result = Interpreter(g.build()).run({f"in{i}": a for i, a in enumerate(arrays)})
    return [result[f"out{i}"] for i in range(n_out)]


def assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, (a, b)
        np.testing.assert_array_equal(a, b)


UNICODE = objects(["Monday", "ÉCLAIR", "", "straße", "İstanbul", "ΣΟΦΟΣ", "ǅungla", "ﬁne", "monday", "日本"])
# onnxruntime's default locale (en_US.UTF-8) is not installed everywhere; C.UTF-8 maps case as en_US does
C_LOCALE = {"locale": "C.UTF-8"}


@pytest.mark.parametrize("attrs", [
    {"case_change_action": "LOWER"}, {"case_change_action": "UPPER"}, {"case_change_action": "NONE"}, {},
    {"case_change_action": "UPPER", "stopwords": ["monday", "日本"]},
    {"case_change_action": "LOWER", "stopwords": ["MONDAY", "éclair"], "is_case_sensitive": 0},
    {"stopwords": ["monday", "ÉCLAIR"], "is_case_sensitive": 1},
    {"stopwords": ["", "İstanbul"], "is_case_sensitive": 1, "case_change_action": "LOWER"},
])
@pytest.mark.parametrize("shape", [(10,), (1, 10)])
def test_string_normalizer_matches_onnxruntime(attrs, shape):
    x = UNICODE.reshape(shape)
    want = ort_run("StringNormalizer", [x], opset=10, **attrs, **C_LOCALE)
    assert_same(ours("StringNormalizer", [x], opset=10, **attrs), want)  # locale left at its default
    assert_same(ours("StringNormalizer", [x], opset=10, **attrs, locale="fr_FR"), want)


def test_string_normalizer_all_stopwords_leaves_one_empty_string():
    x = objects(["Mon", "MON"], (1, 2))
    want = ort_run("StringNormalizer", [x], opset=10, stopwords=["mon"], **C_LOCALE)
    assert want[0].tolist() == [[""]]
    assert_same(ours("StringNormalizer", [x], opset=10, stopwords=["mon"]), want)


SPLIT_INPUT = objects(["a b  c ", "  lead", "é€ x", "one", "x,,y,", ",", "€€a€b€", "no delimiter here"], (2, 4))


@pytest.mark.parametrize("attrs", [{}, {"maxsplit": 1}, {"delimiter": ","}, {"delimiter": ",", "maxsplit": 2},
                                   {"delimiter": "€"}, {"delimiter": "  "}, {"delimiter": ",", "maxsplit": 0}])
def test_string_split_matches_onnxruntime(attrs):
    if attrs.get("maxsplit") is not None and "delimiter" not in attrs:
        x = objects(["a b c", "one", "x y"])  # with maxsplit, onnxruntime also strips the tail's whitespace
    else:
        x = SPLIT_INPUT
    assert_same(ours("StringSplit", [x], n_out=2, **attrs), ort_run("StringSplit", [x], n_out=2, **attrs))


def test_string_split_follows_python_where_onnxruntime_differs():
    y, z = ours("StringSplit", [objects(["a\tb\n c", ""])], n_out=2)
    assert y.tolist() == [["a", "b", "c"], ["", "", ""]] and z.tolist() == [3, 0]  # all whitespace separates
    y, z = ours("StringSplit", [objects(["", "a,"])], n_out=2, delimiter=",")
    assert y.tolist() == [["", ""], ["a", ""]] and z.tolist() == [1, 2]  # "" is one empty substring
    y, z = ours("StringSplit", [objects([], (0,))], n_out=2)
    assert y.shape == (0, 0) and z.shape == (0,)


def test_string_split_refuses_an_amplified_output_before_allocating_it():
    """One string of 2**18 commas among 63 one-letter strings: Y would be [64, 2**18 + 1], just
    over MAX_SPLIT_ELEMENTS (2**24) from a 262 KB input; refused at load (X is a constant)."""
    items = objects([","  * (1 << 18)] + ["a"] * 63)
    g = GraphBuilder("split", opset=20)
    y, z = g.op("StringSplit", [g.constant("x", items)], num_outputs=2, delimiter=",")
    g.output(z, "counts")
    with pytest.raises(ModelError, match=r"\(StringSplit\): Y would be \[64, 262145\] \(16777280 elements: "
                                         r"the 262145 substrings .*over the limit of 16777216"):
        Interpreter(g.build())
    assert strings.MAX_SPLIT_ELEMENTS == 1 << 24


def test_string_split_refuses_an_output_over_the_memory_budget():
    kernel = strings.StringSplit("StringSplit", "split", {"delimiter": ","}, 20)
    kernel.context = SimpleNamespace(backend="cpu", work_budget=None, num_threads=None, memory_budget=100)
    x = objects(["a,b,c", "d"])
    assert [s.shape for s in kernel.prepare([TensorSpec(x.dtype, (2,))], [x])] == [(2, 3), (2,)]  # 48 bytes
    x = objects(["a," * 10, "d"])
    with pytest.raises(MemoryBudgetError, match=r"\(StringSplit\): Y would be \[2, 11\] .*176 bytes of "
                                                r"references, over the memory budget of 100"):
        kernel.prepare([TensorSpec(x.dtype, (2,))], [x])


@pytest.mark.parametrize("a, b", [
    (objects(["a", "é", ""]), objects(["x", "😀"], (2, 1))),
    (objects(["", ""]), objects([""])),
    (objects(["日本", "语"] * 6, (2, 3, 2)), objects(["-", "+"], (2, 1, 1))),
])
def test_string_concat_matches_onnxruntime(a, b):
    assert_same(ours("StringConcat", [a, b]), ort_run("StringConcat", [a, b]))


REGEX_INPUT = objects(["abc", "ABC", "", "a\nb", "héllo", "HÉLLO", "user_1@gmail.com", "2024-01-31", " x ", "日本"])


# onnxruntime compiles the pattern with RE2's default options: the oracle for RE2-only syntax too
@pytest.mark.parametrize("pattern", [
    r"[a-z]*", r"\w+", r"\d{4}-\d{2}-\d{2}", r"(?i)abc", r"a.b", r".*", r"\S+@(gmail|yahoo)\.com",
    r"\s*x\s*", r"..", r"h.llo", r"(a|b|c)+", r"", r"\pL+", r"[[:alpha:]]+", r"(?i)héllo", r"\p{Han}+",
    r"(?s)a.b", r"\Qa.b\E|\w+", r"(a|a)*", r"[^a]*",
])
def test_regex_full_match_matches_onnxruntime(pattern):
    assert_same(ours("RegexFullMatch", [REGEX_INPUT], pattern=pattern),
                ort_run("RegexFullMatch", [REGEX_INPUT], pattern=pattern))


@pytest.mark.parametrize("pattern, message", [
    ("(a", r"pattern '\(a': RE2 cannot compile it \(missing \): \(a\)"),
    ("a(?=b)", r"RE2 cannot compile it \(invalid perl operator: \(\?="),
    (r"(a)\1", r"RE2 cannot compile it \(invalid escape sequence: \\1\)"),
    ("a{1001}", r"RE2 cannot compile it \(invalid repetition size: \{1001\}\)"),
    ("((a{100}){100}){100}", r"RE2 cannot compile it \(invalid repetition size: \{100\}\)"),  # nested: 10**6
    (r"\pL{1000}", r"RE2 cannot compile it \(pattern too large - compile failed\)"),  # over RE2's 8 MiB
])
def test_regex_full_match_refuses_patterns_re2_cannot_run(pattern, message):
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.Fail, match="Invalid regex pattern"):
        ort_run("RegexFullMatch", [REGEX_INPUT], pattern=pattern)  # onnxruntime's RE2 refuses them too
    with pytest.raises(ModelError, match=r"\(RegexFullMatch\).*" + message):
        ours("RegexFullMatch", [REGEX_INPUT], pattern=pattern)


def test_regex_full_match_without_re2_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "re2", None)  # `import re2` raises ImportError
    with pytest.raises(ModelError, match=r"RegexFullMatch needs google-re2: pip install 'edgerun\[strings\]'"):
        ours("RegexFullMatch", [REGEX_INPUT], pattern="a")


def test_regex_full_match_is_linear_on_a_pattern_python_re_backtracks_on():
    """(a|a)* on 'a' * 28 + '!': 2**28 paths for a backtracking engine (Python's re: ~25 s),
    linear for RE2; folded at load (a constant X) and run on a caller's input alike."""
    g = GraphBuilder("redos", opset=20)
    g.output(g.op("RegexFullMatch", [g.constant("x", objects(["a" * 28 + "!", "a" * 28]))], pattern="(a|a)*"), "y")
    start = time.perf_counter()
    assert Interpreter(g.build()).run({})["y"].tolist() == [False, True]
    texts = objects(["a" * 28 + "!", "a" * 10_000 + "!", "a" * 10_000])
    assert ours("RegexFullMatch", [texts], pattern="(a|a)*")[0].tolist() == [False, False, True]
    assert ours("RegexFullMatch", [texts], pattern="(a*)*b")[0].tolist() == [False, False, False]
    assert time.perf_counter() - start < 5


def tfidf_attrs(rng, pool_items, min_n, max_n, skip, mode, weights):
    """A random pool of 1..max_n-grams over `pool_items`, indexes permuted, optional weights."""
    pool, counts, n_grams = [], [], 0
    for n in range(1, max_n + 1):
        counts.append(len(pool))
        grams = {tuple(rng.choice(pool_items, n).tolist()) for _ in range(int(rng.integers(1, 6)))}
        for gram in sorted(grams, key=str):  # onnxruntime refuses a pool listing an n-gram twice
            pool.extend(gram)
            n_grams += 1
    attrs = {"min_gram_length": min_n, "max_gram_length": max_n, "max_skip_count": skip, "mode": mode,
             "ngram_counts": counts, "ngram_indexes": rng.permutation(n_grams).tolist()}
    if weights:
        attrs["weights"] = rng.uniform(0.5, 2, n_grams).round(3).tolist()
    key = "pool_strings" if isinstance(pool_items[0], str) else "pool_int64s"
    attrs[key] = [str(p) for p in pool] if key == "pool_strings" else [int(p) for p in pool]
    return attrs


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("kind", ["int64", "int32", "string"])
def test_tfidf_vectorizer_matches_onnxruntime(mode, weights, kind):
    rng = np.random.default_rng(len(mode) * 7 + weights * 3 + len(kind))
    items = ["é", "b", "", "日本"] if kind == "string" else [1, 2, 3, 70000]
    for min_n, max_n, skip, shape in [(1, 1, 0, (9,)), (1, 2, 1, (2, 8)), (2, 3, 2, (3, 10)), (1, 3, 3, (12,)),
                                      (3, 3, 0, (1, 6))]:
        attrs = tfidf_attrs(rng, items, min_n, max_n, skip, mode, weights)
        picks = rng.choice(items, shape)
        x = objects(picks.reshape(-1).tolist(), shape) if kind == "string" else picks.astype(kind)
        assert_same(ours("TfIdfVectorizer", [x], opset=9, **attrs), ort_run("TfIdfVectorizer", [x], opset=9, **attrs))


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
def test_tfidf_vectorizer_shared_columns_match_onnxruntime(mode):
    attrs = {"min_gram_length": 1, "max_gram_length": 2, "max_skip_count": 1, "mode": mode, "ngram_counts": [0, 3],
             "ngram_indexes": [0, 0, 1, 1], "pool_int64s": [1, 2, 3, 1, 2], "weights": [10.0, 20.0, 30.0, 0.5]}
    for x in (np.array([1, 1, 2], np.int64), np.array([[2, 3, 1, 5, 2], [1, 2, 2, 1, 1]], np.int64)):
        assert_same(ours("TfIdfVectorizer", [x], opset=9, **attrs), ort_run("TfIdfVectorizer", [x], opset=9, **attrs))


def tfidf_graph(x: np.ndarray, **attrs):
    """TfIdfVectorizer on a constant X (folded while the Interpreter loads)."""
    g = GraphBuilder("tfidf", opset=20)
    g.output(g.op("TfIdfVectorizer", [g.constant("x", x)], mode="TF", **attrs), "y")
    return g.build()


def test_tfidf_vectorizer_huge_skip_is_bounded_by_the_row():
    """max_skip_count 2**62 (a hang when every skip was tried) counts as the row allows."""
    attrs = {"min_gram_length": 1, "max_gram_length": 2, "pool_int64s": [1, 2, 3, 1, 3],
             "ngram_counts": [0, 1], "ngram_indexes": [0, 1, 2]}
    x = np.array([1, 2, 3, 1, 9, 3], np.int64)
    want = ort_run("TfIdfVectorizer", [x], opset=9, mode="TF", max_skip_count=5, **attrs)[0]
    assert want.tolist() == [2, 2, 3]  # (2, 3) 1 and 4 apart; (1, 3) 2, 2 and 5 (the whole row) apart
    start = time.perf_counter()
    np.testing.assert_array_equal(Interpreter(tfidf_graph(x, max_skip_count=2**62, **attrs)).run({})["y"], want)
    assert time.perf_counter() - start < 5


def test_tfidf_vectorizer_long_pool_ngram_takes_linear_memory():
    """One 3000-gram in the pool (max_gram_length far longer): every prefix as a tuple took
    3000**2 / 2 slots (36 MB); the trie takes one entry per item."""
    n = 3000
    attrs = {"min_gram_length": 1, "max_gram_length": 2**40, "max_skip_count": 0, "pool_int64s": list(range(n)),
             "ngram_counts": [0] * n, "ngram_indexes": [0]}
    x = np.concatenate([np.arange(n), np.arange(n - 1)]).astype(np.int64)
    tracemalloc.start()
    try:
        interpreter = Interpreter(tfidf_graph(x, **attrs))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert interpreter.run({})["y"].tolist() == [1.0]  # the whole 3000-gram once, its prefix never counts
    assert peak < 8 << 20, peak


def test_tfidf_vectorizer_walks_over_the_work_budget_are_refused():
    """A 2000-gram of ones against 2000 ones: 2000 walks of up to 2000 steps each."""
    attrs = {"min_gram_length": 2000, "max_gram_length": 2000, "max_skip_count": 0, "pool_int64s": [1] * 2000,
             "ngram_counts": [0] * 2000, "ngram_indexes": [0]}
    graph = tfidf_graph(np.ones(2000, np.int64), **attrs)
    with pytest.raises(WorkBudgetError, match=r"\(TfIdfVectorizer\): up to 4000000 n-gram steps \(1 rows x 2000 "
                                              r"items x 1 skips x 2000 items per n-gram\), over the work budget"):
        Interpreter(graph, work_budget=10**6)
    assert Interpreter(tfidf_graph(np.ones(5, np.int64), **attrs), work_budget=10**6).run({})["y"].tolist() == [0.0]


@pytest.mark.parametrize("attrs, message", [
    ({"pool_int64s": [1], "pool_strings": ["a"]}, r"exactly one of pool_int64s and pool_strings is required"),
    ({"pool_strings": ["a"]}, r"X \(the pool is strings\): expected a string tensor, got int64"),
    ({"pool_int64s": [1, 2], "ngram_indexes": [0]}, r"one non-negative output index for each of the 2 pool n-grams"),
    ({"pool_int64s": [1, 2, 3], "ngram_counts": [0, 2]}, r"pool items 2..3 are not a whole number of 2-grams"),
    ({"pool_int64s": [1], "ngram_indexes": [0], "mode": "BM25"}, r"mode 'BM25' must be one of TF, IDF, TFIDF"),
    ({"pool_int64s": [1], "ngram_indexes": [3], "weights": [1.0, 2.0]}, r"weights has 2 entries, the pool 1 n-grams"),
    ({"pool_int64s": [1, 1], "ngram_indexes": [0, 1]}, r"the pool lists n-gram \[1\] twice"),
])
def test_tfidf_vectorizer_refuses_inconsistent_attributes(attrs, message):
    base = {"min_gram_length": 1, "max_gram_length": 1, "max_skip_count": 0, "mode": "TF", "ngram_counts": [0],
            "ngram_indexes": [0, 1]}
    with pytest.raises(ModelError, match=r"\(TfIdfVectorizer\).*" + message):
        ours("TfIdfVectorizer", [np.array([1, 2], np.int64)], opset=9, **{**base, **attrs})


NUMBERS = {
    np.float32: np.array([1.5, -0.1, 1e20, np.nan, np.inf, -np.inf, 3.0, 1 / 3, 0.0, -2.5e-8], np.float32),
    np.float64: np.array([1.5, -0.1, 1e300, np.nan, -np.inf, 3.0, 1 / 3, 123456789.123], np.float64),
    np.float16: np.array([0.1, 65504, -np.inf], np.float16),
    np.int64: np.array([0, -2, 2**40, -(2**63)], np.int64),
    np.int8: np.array([-128, 127, 5], np.int8),
    np.uint16: np.array([0, 65535], np.uint16),
    np.bool_: np.array([True, False]),
}


@pytest.mark.parametrize("dtype", list(NUMBERS), ids=lambda d: np.dtype(d).name)
def test_cast_to_string_matches_onnxruntime(dtype):
    x = NUMBERS[dtype]
    to = TensorProto.STRING
    assert_same(ours("Cast", [x], opset=19, to=to), ort_run("Cast", [x], opset=19, to=to))


TEXTS = objects(["1.5", "-1e3", " 2 ", "+7", "INF", "-inf", "+Inf", "1E-2", ".5", "123456789"])


@pytest.mark.parametrize("to, dtype", [(TensorProto.FLOAT, np.float32), (TensorProto.DOUBLE, np.float64),
                                       (TensorProto.FLOAT16, np.float16)])
def test_cast_from_string_to_float_matches_onnxruntime(to, dtype):
    got, want = ours("Cast", [TEXTS], opset=19, to=to), ort_run("Cast", [TEXTS], opset=19, to=to)
    assert got[0].dtype == dtype
    assert_same(got, want)
    nan = ours("Cast", [objects(["NaN", "nan"])], opset=19, to=to)[0]
    assert np.isnan(nan).all()


@pytest.mark.parametrize("to", [TensorProto.INT64, TensorProto.INT32, TensorProto.INT8, TensorProto.UINT64])
def test_cast_from_string_to_int_matches_onnxruntime(to):
    texts = objects(["0", "17", " +42 ", "100", "9" * 15] + ([] if to == TensorProto.UINT64 else ["-3"]))
    assert_same(ours("Cast", [texts], opset=19, to=to), ort_run("Cast", [texts], opset=19, to=to))


def test_cast_string_round_trips_and_refuses_non_numbers():
    assert ours("Cast", [objects(["1", "0", "-2.5"])], opset=19, to=TensorProto.BOOL)[0].tolist() == [True, False, True]
    assert ours("CastLike", [np.array([7, -1], np.int64), objects(["?"])], opset=19)[0].tolist() == ["7", "-1"]
    with pytest.raises(ModelError, match=r"\(Cast\) failed: cannot convert string 'twelve' to a number"):
        ours("Cast", [objects(["1", "twelve"])], opset=19, to=TensorProto.FLOAT)
    with pytest.raises(ModelError, match=r"cannot reinterpret a string tensor's bits"):
        ours("BitCast", [objects(["1"])], opset=26, to=TensorProto.INT64)


@pytest.mark.parametrize("text", ["1" * 20_000 + "x", "1." + "1" * 20_000 + "x", "1e" + "1" * 20_000 + "x",
                                  "." + "1" * 20_000 + "x", "-" + "1" * 20_000 + ".x"])
def test_cast_refuses_long_non_numbers_in_linear_time(text):
    """Each took ~11 s when '\\d+\\.?\\d*' backtracked over the digits (quadratic)."""
    g = GraphBuilder("cast", opset=20)
    g.output(g.op("Cast", [g.constant("x", objects([text]))], to=TensorProto.FLOAT), "y")
    start = time.perf_counter()
    with pytest.raises(ModelError, match=r"\(Cast\) failed: cannot convert string '[-.1e]+' to a number"):
        Interpreter(g.build())
    assert time.perf_counter() - start < 2


def test_equal_and_identity_on_strings_match_onnxruntime():
    a, b = objects(["a", "é", "", "ab"], (2, 2)), objects(["a", "e\u0301"])  # no Unicode normalization
    assert_same(ours("Equal", [a, b], opset=19), ort_run("Equal", [a, b], opset=19))
    assert_same(ours("Identity", [WORDS]), ort_run("Identity", [WORDS]))


@pytest.mark.parametrize("op, arrays, attrs, message", [
    ("StringNormalizer", [objects(["a"] * 6, (2, 3))], {}, r"X: expected shape \[C\] or \[1, C\] .*got \[2, 3\]"),
    ("StringNormalizer", [objects([], (0,))], {}, r"X: expected shape \[C\] or \[1, C\] with C > 0, got \[0\]"),
    ("StringNormalizer", [objects(["a"])], {"case_change_action": "TITLE"},
     r"case_change_action 'TITLE' must be one of NONE, LOWER, UPPER"),
    ("StringConcat", [objects(["a"]), np.array([1], np.int64)], {}, r"Y: expected a string tensor, got int64"),
    ("StringSplit", [np.array([1.0], np.float32)], {}, r"X: expected a string tensor, got float32"),
    ("RegexFullMatch", [objects(["a"])], {}, r"attribute 'pattern': expected a string, got None"),
])
def test_string_kernels_refuse_bad_inputs(op, arrays, attrs, message):
    with pytest.raises(ModelError, match=rf"\({op}\).*{message}"):
        ours(op, arrays, n_out=2 if op == "StringSplit" else 1, opset=20, **attrs)


def test_string_dtype_helpers():
    assert dtypes.from_numpy(object) == 24 and dtypes.to_numpy(24) == np.dtype(object)
    assert not dtypes.is_supported("<U3")  # fixed-width numpy strings are converted, never stored
    assert dtypes.decode_strings(dtypes.encode_strings(WORDS)) == WORDS.reshape(-1).tolist()
