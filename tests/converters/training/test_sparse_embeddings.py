"""Row-sparse embedding training: GatherGradSparse against GatherGrad, the sparse update kernels
against SGDUpdate and a numpy lazy momentum / lazy Adam, and make_trainable's sparse_embeddings
choice (auto: exactly dense training; always: the lazy update; dense for tied tables)."""

from __future__ import annotations

import numpy as np
import pytest

import edgerun.runtime.kernels.optimizers  # noqa: F401  (registers the kernels)
import edgerun.runtime.kernels.shape_grad  # noqa: F401
from edgerun.converters.training import make_trainable
from edgerun.converters.training.trainable import SPARSE_MIN_ELEMENTS
from edgerun.runtime import GraphBuilder, Interpreter
from edgerun.runtime.errors import ConversionError, InputError, ModelError
from edgerun.runtime.graph import Graph, Node, Signature, Value
from tests.gradcheck import run_kernel

STEPS, STEPS_TOKENS, BATCH, CLASSES = 3, 4, 6, 5


# ------------------------------------------------------------------ GatherGradSparse
def sparse_grad(x: np.ndarray, *pairs: np.ndarray) -> list[np.ndarray]:
    return run_kernel("GatherGradSparse", [x, *pairs], domain="edgerun")


def densify(indices: np.ndarray, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, rows.dtype)
    keep = indices >= 0
    out[indices[keep]] = rows[keep]
    return out


def dense_grad(x: np.ndarray, dy: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return run_kernel("GatherGrad", [dy, x, indices], {"axis": 0}, domain="edgerun")[0]


INDEX_CASES = [
    np.array([3, 1, 3, 3, 0]),  # 1-D, duplicates
    np.array([[0, 4, -1], [4, 2, -5]]),  # 2-D, negative (and -1 meaning the last row, not padding)
    np.array(2),  # a scalar index
    np.array([], np.int64),  # no index at all
    np.array([[1, 1], [1, 1]], np.int32),  # one row only, int32
]


@pytest.mark.parametrize("indices", INDEX_CASES, ids=lambda a: f"{a.dtype}{list(a.shape)}")
@pytest.mark.parametrize("row_shape", [(3,), (2, 3), ()])
def test_sparse_gradient_is_the_dense_one_bit_for_bit(indices, row_shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, *row_shape))
    dy = rng.standard_normal(indices.shape + row_shape)
    got_indices, rows = sparse_grad(x, dy, indices)
    n = indices.size
    assert got_indices.dtype == np.int64 and got_indices.shape == (n,) and rows.shape == (n, *row_shape)
    distinct = np.unique(np.where(indices < 0, indices + 5, indices))
    k = distinct.size
    np.testing.assert_array_equal(got_indices[:k], distinct)  # ascending, then padding
    np.testing.assert_array_equal(got_indices[k:], -1)
    np.testing.assert_array_equal(rows[k:], 0)
    np.testing.assert_array_equal(densify(got_indices, rows, x.shape), dense_grad(x, dy, indices))


def test_sparse_gradient_of_several_gathers_is_the_sum_of_theirs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4))
    first, second = np.array([[5, 0], [0, 2]]), np.array([2, -1, 3])
    dy1, dy2 = rng.standard_normal((2, 2, 4)), rng.standard_normal((3, 4))
    indices, rows = sparse_grad(x, dy1, first, dy2, second)
    assert indices.shape == (7,) and list(indices[:4]) == [0, 2, 3, 5] and (indices[4:] == -1).all()
    want = dense_grad(x, dy1, first) + dense_grad(x, dy2, second)
    np.testing.assert_allclose(densify(indices, rows, x.shape), want, rtol=1e-15, atol=1e-15)


def test_sparse_gradient_float32():
    x = np.zeros((4, 2), np.float32)
    dy = np.arange(6, dtype=np.float32).reshape(3, 2)
    indices, rows = sparse_grad(x, dy, np.array([1, 3, 1]))
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(indices, [1, 3, -1])
    np.testing.assert_array_equal(rows, [[4, 6], [2, 3], [0, 0]])


@pytest.mark.parametrize("inputs, message", [
    ([np.ones((4, 2)), np.ones((2, 2)), np.array([0, 4])], "out of range"),
    ([np.ones((4, 2)), np.ones((3, 2)), np.array([0, 1])], "forward output"),
    ([np.ones((4, 2)), np.ones((2, 2)), np.array([0, 1]), np.ones((2, 2))], "pairs"),
    ([np.ones((4, 2)), np.ones((2, 2)), np.array([0.0, 1.0])], "indices"),
])
def test_sparse_gradient_refuses(inputs, message):
    with pytest.raises(ModelError, match=message):
        sparse_grad(*inputs)


# ------------------------------------------------------------------ sparse update kernels
def frozen(*arrays: np.ndarray) -> list[np.ndarray]:
    out = [np.array(a) for a in arrays]
    for a in out:
        a.flags.writeable = False
    return out


def sparse_update(op: str, inputs: list, attrs: dict, in_place: bool = False) -> list[np.ndarray]:
    """Run a sparse update kernel; `in_place` hands it its state inputs as outputs (as the plan does)."""
    if not in_place:
        return run_kernel(op, frozen(*inputs), attrs, domain="edgerun")
    from edgerun.runtime.kernels import TensorSpec, resolve

    kernel = resolve("edgerun", op, 1, "test")(op, "test", attrs, 1)
    arrays = [np.array(a) for a in inputs]
    outs = kernel.prepare([TensorSpec(a.dtype, a.shape) for a in arrays], [None] * len(arrays))
    storage = [arrays[j] for _, j in kernel.in_place if j < len(arrays)]
    assert len(storage) == len(outs)
    kernel.run(arrays, storage)
    return storage


P = np.arange(12, dtype=np.float64).reshape(6, 2) / 4 - 1
INDICES = np.array([0, 2, 5, -1, -1])
ROWS = np.array([[0.5, -1.0], [2.0, 0.25], [-3.0, 1.0], [0.0, 0.0], [0.0, 0.0]])


@pytest.mark.parametrize("in_place", [False, True])
def test_plain_sparse_sgd_is_dense_sgd(in_place):
    lr = np.array(0.1)
    (got,) = sparse_update("SGDUpdateSparse", [P, INDICES, ROWS, lr], {}, in_place)
    (want,) = run_kernel("SGDUpdate", frozen(P, densify(INDICES, ROWS, P.shape), lr), {}, domain="edgerun")
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("nesterov, weight_decay", [(0, 0.0), (1, 0.1)])
def test_sparse_momentum_is_lazy(in_place, nesterov, weight_decay):
    velocity = np.linspace(-1, 1, 12).reshape(6, 2)
    attrs = {"momentum": 0.9, "nesterov": nesterov, "weight_decay": weight_decay}
    got_p, got_v = sparse_update("SGDUpdateSparse", [P, INDICES, ROWS, np.array(0.1), velocity], attrs, in_place)
    want_p, want_v = P.copy(), velocity.copy()
    rows = [0, 2, 5]
    g = ROWS[:3] + weight_decay * P[rows]
    want_v[rows] = 0.9 * velocity[rows] + g
    want_p[rows] -= 0.1 * (g + 0.9 * want_v[rows] if nesterov else want_v[rows])
    np.testing.assert_allclose(got_p, want_p, rtol=1e-14)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-14)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("weight_decay, decoupled", [(0.0, 0), (0.1, 0), (0.1, 1)])
def test_sparse_adam_is_lazy(in_place, weight_decay, decoupled):
    m, v = np.linspace(-1, 1, 12).reshape(6, 2), np.linspace(0, 2, 12).reshape(6, 2)
    attrs = {"weight_decay": weight_decay, "decoupled": decoupled}
    inputs = [P, INDICES, ROWS, np.array(0.01), m, v, np.array(2.0, np.float32)]
    got = sparse_update("AdamUpdateSparse", inputs, attrs, in_place)
    want = [P.copy(), m.copy(), v.copy()]
    lazy_adam(want, np.array([0, 2, 5]), ROWS[:3], 0.01, 3, 0.9, 0.999, 1e-8, weight_decay, decoupled)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-13)


def lazy_adam(state: list[np.ndarray], rows: np.ndarray, grad: np.ndarray, lr: float, t: int, beta1: float,
              beta2: float, eps: float, weight_decay: float = 0.0, decoupled: int = 0) -> None:
    """PyTorch SparseAdam (with Adam's L2 or AdamW's decay on the touched rows), in place on
    [param, m, v]: only `rows` change."""
    p, m, v = state
    g = grad + weight_decay * p[rows] if weight_decay and not decoupled else grad
    m[rows] = beta1 * m[rows] + (1 - beta1) * g
    v[rows] = beta2 * v[rows] + (1 - beta2) * g**2
    base = p[rows] * (1 - lr * weight_decay) if decoupled else p[rows]
    p[rows] = base - lr * (m[rows] / (1 - beta1**t)) / (np.sqrt(v[rows] / (1 - beta2**t)) + eps)


@pytest.mark.parametrize("indices, message", [
    (np.array([0, 6, -1, -1, -1]), "out of range"),
    (np.array([2, 2, -1, -1, -1]), "twice"),
    (np.array([0, -2, -1, -1, -1]), r"row -2 is out of range \[0, 5\] \(only -1 marks padding\)"),
])
def test_sparse_update_refuses_bad_rows_before_writing(indices, message):
    param = P.copy()
    with pytest.raises(InputError, match=message):
        sparse_update("SGDUpdateSparse", [param, indices, ROWS, np.array(0.1)], {}, in_place=True)
    np.testing.assert_array_equal(param, P)  # (sparse_update copies: P itself must be untouched too)


def test_sparse_update_refuses_a_gradient_of_the_wrong_shape():
    with pytest.raises(ModelError, match="rows must be"):
        run_kernel("SGDUpdateSparse", [P, INDICES, ROWS[:, :1], np.array(0.1)], {}, domain="edgerun")
    with pytest.raises(ModelError, match="int64"):
        run_kernel("SGDUpdateSparse", [P, INDICES.astype(np.int32), ROWS, np.array(0.1)], {}, domain="edgerun")


# ------------------------------------------------------------------ whole models
def bag_of_words(vocab: int, dim: int, dtype=np.float64, tied: bool = False, seed: int = 0) -> Graph:
    """tokens (N, S) -> Gather(embedding) -> ReduceMean over S -> Gemm -> logits (N, CLASSES);
    `tied`: the logits also add h @ embedding^T[:, :CLASSES] (the table feeds a MatMul too)."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("bag", opset=17)
    tokens = g.input("tokens", np.int64, (-1, STEPS_TOKENS))
    table = g.constant("embedding", (rng.standard_normal((vocab, dim)) * 0.5).astype(dtype))
    h = g.op("ReduceMean", [g.op("Gather", [table, tokens], name="embed")], name="pool", axes=[1], keepdims=0)
    w = g.constant("fc.weight", (rng.standard_normal((CLASSES, dim)) * 0.5).astype(dtype))
    logits = g.op("Gemm", [h, w, g.constant("fc.bias", np.zeros(CLASSES, dtype))], name="fc", transB=1)
    if tied:
        scores = g.op("MatMul", [h, g.op("Transpose", [table], name="tied_t", perm=[1, 0])], name="tied")
        sliced = g.op("Slice", [scores, g.constant("s0", np.array([0])), g.constant("s1", np.array([CLASSES])),
                                g.constant("s2", np.array([1]))], name="first")
        logits = g.op("Add", [logits, sliced], name="tied_add")
    g.output(logits, "y")
    return g.build()


def batches(vocab: int, seed: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """STEPS batches over a few rows of the table only (rows 0..7 and the last one)."""
    rng = np.random.default_rng(seed)
    rows = np.r_[np.arange(8), vocab - 1]
    return [(rng.choice(rows, (BATCH, STEPS_TOKENS)), rng.integers(0, CLASSES, BATCH)) for _ in range(STEPS)]


def train(graph: Graph, data: list, lr: float = 0.5, **options) -> tuple[dict[str, np.ndarray], Interpreter]:
    trained = make_trainable(graph, **options)
    interpreter = Interpreter(trained, device="cpu")
    for tokens, labels in data:
        interpreter.run({"tokens": tokens, "labels": labels, "learning_rate": np.array(lr)}, signature="train")
    return interpreter.run({}, signature="save"), interpreter


def ops(graph: Graph) -> list[str]:
    return [n.op_type for n in graph.nodes]


BIG = (SPARSE_MIN_ELEMENTS // 64, 64)  # the smallest table "auto" makes sparse


def test_auto_with_plain_sgd_trains_exactly_as_dense():
    graph, data = bag_of_words(*BIG), batches(BIG[0])
    sparse, interpreter = train(graph, data, sparse_embeddings="auto")
    dense, _ = train(graph, data, sparse_embeddings="never")
    for name in dense:
        np.testing.assert_array_equal(sparse[name], dense[name])
    table = graph.nodes[0].inputs[0].data
    untouched = np.setdiff1d(np.arange(BIG[0]), np.r_[np.arange(8), BIG[0] - 1])
    np.testing.assert_array_equal(sparse["embedding"][untouched], table[untouched])
    assert not np.array_equal(sparse["embedding"][:8], table[:8])
    # no table-sized arena value: the gradient is rows, the update writes into the variable
    assert interpreter.arena_bytes("train") < table.nbytes // 10


def test_auto_graph_has_no_dense_gather_grad_for_a_large_table():
    trained = make_trainable(bag_of_words(*BIG), sparse_embeddings="auto")
    assert "GatherGrad" not in ops(trained)
    assert ops(trained).count("GatherGradSparse") == 1 and ops(trained).count("SGDUpdateSparse") == 1
    assert ops(make_trainable(bag_of_words(*BIG), sparse_embeddings="never")).count("GatherGrad") == 1


@pytest.mark.parametrize("options", [
    {},  # too small for auto
    {"optimizer": ("sgd", {"lr": 0.1, "momentum": 0.9})},  # lazy momentum would differ from dense
    {"optimizer": ("adam", {"lr": 0.1})},
    {"optimizer": ("sgd", {"lr": 0.1, "weight_decay": 0.01})},
    {"l2": 0.01},
    {"proximal": True},
])
def test_auto_stays_dense_where_sparse_would_differ(options):
    vocab = 64 if not options else BIG[0]
    trained = make_trainable(bag_of_words(vocab, 64 if options else 8), sparse_embeddings="auto", **options)
    assert "GatherGrad" in ops(trained) and "GatherGradSparse" not in ops(trained)


def test_always_makes_a_small_table_sparse():
    graph, data = bag_of_words(16, 3), batches(16)
    sparse, _ = train(graph, data, sparse_embeddings="always")
    dense, _ = train(graph, data, sparse_embeddings="never")
    assert "GatherGradSparse" in ops(make_trainable(graph, sparse_embeddings="always"))
    np.testing.assert_array_equal(sparse["embedding"], dense["embedding"])  # plain SGD: the same


@pytest.mark.parametrize("mode", ["auto", "always"])
def test_a_tied_table_stays_dense(mode):
    graph, data = bag_of_words(*BIG, tied=True), batches(BIG[0])
    trained = make_trainable(graph, sparse_embeddings=mode)
    assert "GatherGrad" in ops(trained) and "GatherGradSparse" not in ops(trained)
    sparse, _ = train(graph, data, sparse_embeddings=mode)
    dense, _ = train(graph, data, sparse_embeddings="never")
    np.testing.assert_array_equal(sparse["embedding"], dense["embedding"])


def test_a_table_read_by_two_gathers_gets_one_sparse_gradient():
    """h = mean(E[tokens]) + E[[0, -1]].sum(0): two Gathers, whose gradients the backward pass adds."""
    rng = np.random.default_rng(0)
    g = GraphBuilder("two_gathers", opset=17)
    tokens = g.input("tokens", np.int64, (-1, STEPS_TOKENS))
    table = g.constant("embedding", rng.standard_normal(BIG))
    h = g.op("ReduceMean", [g.op("Gather", [table, tokens], name="embed")], name="pool", axes=[1], keepdims=0)
    extra = g.op("Gather", [table, g.constant("fixed", np.array([0, -1]))], name="fixed_rows", axis=-2)
    extra = g.op("ReduceSum", [extra, g.constant("axis0", np.array([0]))], name="sum", keepdims=1)
    h = g.op("Add", [h, extra], name="shift")
    w = g.constant("fc.weight", rng.standard_normal((CLASSES, BIG[1])) * 0.1)
    g.output(g.op("Gemm", [h, w, g.constant("fc.bias", np.zeros(CLASSES))], name="fc", transB=1), "y")
    graph, data = g.build(), batches(BIG[0])
    trained = make_trainable(graph, sparse_embeddings="auto")
    assert "GatherGrad" not in ops(trained) and ops(trained).count("GatherGradSparse") == 1
    sparse_node = next(n for n in trained.nodes if n.op_type == "GatherGradSparse")
    assert len(sparse_node.inputs) == 5  # the table, then (dY, indices) of each Gather
    sparse, _ = train(graph, data, sparse_embeddings="auto")
    dense, _ = train(graph, data, sparse_embeddings="never")
    for name in dense:  # summed in another order than dense's Add of two tables: not bit for bit
        np.testing.assert_allclose(sparse[name], dense[name], rtol=1e-12, atol=1e-14)


def test_unknown_mode_is_refused():
    with pytest.raises(ConversionError, match="sparse_embeddings"):
        make_trainable(bag_of_words(8, 2), sparse_embeddings="sometimes")


# ---------------------------------------------- "always": lazy momentum / Adam, a numpy reference
def embedding_grad(table: np.ndarray, w: np.ndarray, tokens: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """d(mean softmax cross-entropy)/d table of bag_of_words with fc.weight `w` (bias 0), dense."""
    h = table[tokens].mean(axis=1)
    logits = h @ w.T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(labels)), labels] -= 1
    dh = p @ w / len(labels)
    grad = np.zeros_like(table)
    np.add.at(grad, tokens, np.repeat(dh[:, None, :] / tokens.shape[1], tokens.shape[1], axis=1))
    return grad


def lazy_reference(graph: Graph, data: list, lr: float, step) -> np.ndarray:
    """The table after `data`, with step(state, rows, grad_rows, t) updating only touched rows."""
    table = graph.nodes[0].inputs[0].data.copy()
    w = next(v.data for v in graph.values() if v.name == "fc.weight")
    state = [table, np.zeros_like(table), np.zeros_like(table)]
    for t, (tokens, labels) in enumerate(data, start=1):
        grad = embedding_grad(table, w, tokens, labels)
        rows = np.unique(tokens)
        step(state, rows, grad[rows], t)
    return table


def test_always_with_momentum_is_lazy_momentum():
    graph, data = bag_of_words(40, 3), batches(40)

    def momentum(state, rows, grad, t):
        p, v, _ = state
        v[rows] = 0.9 * v[rows] + grad
        p[rows] -= 0.5 * v[rows]

    got, _ = train(graph, data, optimizer=("sgd", {"lr": 0.5, "momentum": 0.9}), trainable=["embedding"],
                   sparse_embeddings="always")
    want = lazy_reference(graph, data, 0.5, momentum)
    np.testing.assert_allclose(got["embedding"], want, rtol=1e-10, atol=1e-12)
    dense, _ = train(graph, data, optimizer=("sgd", {"lr": 0.5, "momentum": 0.9}), trainable=["embedding"],
                     sparse_embeddings="never")
    assert np.abs(dense["embedding"] - got["embedding"]).max() > 1e-3  # lazy is not dense: rows coast


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_always_with_adam_is_lazy_adam(name):
    graph, data = bag_of_words(40, 3), batches(40)
    decay = 0.1 if name == "adamw" else 0.0
    got, interpreter = train(graph, data, lr=0.05, optimizer=(name, {"lr": 0.05, "weight_decay": decay}),
                             trainable=["embedding"], sparse_embeddings="always")
    want = lazy_reference(graph, data, 0.05, lambda state, rows, grad, t: lazy_adam(
        state, rows, grad, 0.05, t, 0.9, 0.999, 1e-8, decay, int(name == "adamw")))
    np.testing.assert_allclose(got["embedding"], want, rtol=1e-10, atol=1e-12)
    table = graph.nodes[0].inputs[0].data
    np.testing.assert_array_equal(got["embedding"][8:39], table[8:39])  # untouched rows: not even decayed
    state = interpreter.run({}, signature="save_optimizer")
    assert state["optimizer.step"] == STEPS and not state["embedding.adam_m"][8:39].any()


# ---------------------------------------------- the plan's in-place update
def test_the_update_writes_into_the_variable_unless_something_reads_it_later():
    graph, data = bag_of_words(*BIG), batches(BIG[0])
    trained = make_trainable(graph, sparse_embeddings="auto")
    train_signature = trained.signatures["train"]
    table = next(v for v in train_signature.updates if v.name == "embedding")
    peek = Value("peek", table.dtype, table.data.shape)
    trained.nodes.append(Node("Identity", [table], [peek], {}, "peek", "", 17))
    trained.signatures["peeking"] = Signature(dict(train_signature.inputs), {**train_signature.outputs, "peek": peek},
                                              dict(train_signature.updates))
    interpreter = Interpreter(trained, device="cpu")
    assert interpreter._plans["train"].prepared.in_place  # noqa: SLF001 - the point of the test
    assert not interpreter._plans["peeking"].prepared.in_place  # noqa: SLF001
    tokens, labels = data[0]
    before = interpreter.run({}, signature="save")
    out = interpreter.run({"tokens": tokens, "labels": labels}, signature="peeking")
    np.testing.assert_array_equal(out["peek"], before["embedding"])  # read as the run started
    after_peeking = interpreter.run({}, signature="save")
    interpreter.run(before, signature="restore")
    interpreter.run({"tokens": tokens, "labels": labels}, signature="train")
    after_training = interpreter.run({}, signature="save")
    assert not np.array_equal(after_training["embedding"], before["embedding"])
    for name, array in after_training.items():  # in place or copied at the end: the same step
        np.testing.assert_array_equal(array, after_peeking[name])


def test_a_refused_step_leaves_the_table_as_it_was():
    graph, data = bag_of_words(*BIG), batches(BIG[0])
    interpreter = Interpreter(make_trainable(graph, trainable=["embedding"], sparse_embeddings="auto"), device="cpu")
    assert interpreter._plans["train"].prepared.in_place  # noqa: SLF001 - the sparse update is the only one
    before = interpreter.run({}, signature="save")
    tokens, labels = data[0]
    with pytest.raises(InputError, match="learning rate"):
        interpreter.run({"tokens": tokens, "labels": labels, "learning_rate": np.array(-1.0)}, signature="train")
    for name, array in interpreter.run({}, signature="save").items():
        np.testing.assert_array_equal(array, before[name])
