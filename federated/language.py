"""A federated character-level LSTM language model on Python's own standard library.

Each simulated device holds the docstrings and comments of one standard-library module, read from
the running interpreter's Lib folder (`sysconfig.get_paths()["stdlib"]`, no download): naturally
non-IID text. `run_language_demo` trains an embedding + LSTM + Gemm model with federated averaging
and secure aggregation (the in-process "thread" engine) and, with the same budget, centrally
(`edgerun.runtime.training.fit` over all the devices' text pooled), and reports per round the test
perplexity, the next-character accuracy and the bytes each device sends.

The budget is the number of passes over the training text: R rounds in which every device trains
E local epochs match R * E central epochs over the pooled text, with the same batch size and
learning rate (the same number of gradient steps in all; the central ones are sequential).
`python -m edgerun.federated.language --help` runs it from the command line; `--plot` writes the
figure (federated/language_plot.py).
"""

from __future__ import annotations

import ast
import io
import sysconfig
import tempfile
import threading
import tokenize
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Modules with plenty of prose, each on its own subject (one device each).
DEFAULT_MODULES = ("argparse", "difflib", "heapq", "fractions", "calendar", "textwrap", "shutil", "tempfile",
                   "inspect", "typing", "dataclasses", "functools")
UNKNOWN = "\x00"  # the vocabulary's stand-in for characters it lacks


def module_path(module: str) -> Path:
    """The source file of a standard-library module (`json` -> Lib/json/__init__.py). FileNotFoundError
    if this interpreter's Lib folder has neither `<name>.py` nor `<name>/__init__.py`."""
    base = Path(sysconfig.get_paths()["stdlib"]).joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    raise FileNotFoundError(f"standard-library module {module!r}: no {base}.py or {base}/__init__.py")


def prose(source: str) -> str:
    """The docstrings (module, classes, functions; in source order) and comments of Python source,
    one per paragraph, with runs of spaces collapsed."""
    found: list[tuple[int, str]] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                found.append((getattr(node, "lineno", 0), doc))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and not token.string.startswith("#!"):
            found.append((token.start[0], token.string.lstrip("#").strip()))
    paragraphs = (" ".join(text.split()) for _, text in sorted(found, key=lambda item: item[0]))
    return "\n".join(p for p in paragraphs if p)


def stdlib_corpus(modules: Iterable[str] = DEFAULT_MODULES, max_chars: int = 4000) -> dict[str, str]:
    """Module name -> its docstrings and comments (see `prose`), at most `max_chars` characters each."""
    return {m: prose(module_path(m).read_text(encoding="utf-8"))[:max_chars] for m in modules}


@dataclass(frozen=True)
class Vocabulary:
    """Characters and their ids; id 0 is UNKNOWN, which stands for every character not listed."""

    chars: str

    @classmethod
    def of(cls, texts: Iterable[str], max_size: int = 96) -> Vocabulary:
        """The `max_size - 1` most frequent characters of `texts` (ties by code point), after UNKNOWN."""
        counts: dict[str, int] = {}
        for text in texts:
            for ch in text:
                counts[ch] = counts.get(ch, 0) + 1
        common = sorted(counts, key=lambda ch: (-counts[ch], ch))[: max_size - 1]
        return cls(UNKNOWN + "".join(sorted(common)))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        index = {ch: i for i, ch in enumerate(self.chars)}
        return np.array([index.get(ch, 0) for ch in text], np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def windows(ids: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping next-character windows: x [n, steps] and y [n, steps] with y[i, t] the
    character after x[i, t]; a tail shorter than steps + 1 characters is dropped."""
    n = (len(ids) - 1) // steps
    x = ids[: n * steps].reshape(n, steps)
    y = ids[1 : n * steps + 1].reshape(n, steps)
    return x, y


def lstm_language_model(vocab: int, steps: int, embed: int = 16, hidden: int = 64, seed: int = 0) -> Any:
    """tokens [N, steps] int64 -> embedding [vocab, embed] -> LSTM(hidden) -> Gemm -> logits
    [N, steps, vocab], weights ~ U(-1/sqrt(hidden), 1/sqrt(hidden)) like PyTorch's LSTM (the
    embedding ~ N(0, 1)); the forget gate's bias starts at 1."""
    from edgerun.runtime import GraphBuilder

    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(hidden)

    def uniform(name: str, shape: tuple[int, ...]) -> Any:
        return g.constant(name, rng.uniform(-bound, bound, shape).astype(np.float32))

    g = GraphBuilder("char_lstm", opset=17)
    tokens = g.input("tokens", np.int64, (-1, steps))
    table = g.constant("embedding", rng.standard_normal((vocab, embed)).astype(np.float32))
    x = g.op("Transpose", [g.op("Gather", [table, tokens], name="embed")], name="time_major", perm=[1, 0, 2])
    bias = rng.uniform(-bound, bound, (1, 8 * hidden)).astype(np.float32)
    bias[0, 2 * hidden : 3 * hidden] = 1.0  # ONNX gate order i, o, f, c: the forget gate's input bias
    y = g.op("LSTM", [x, uniform("lstm.W", (1, 4 * hidden, embed)), uniform("lstm.R", (1, 4 * hidden, hidden)),
                      g.constant("lstm.B", bias)], name="lstm", hidden_size=hidden)
    y = g.op("Transpose", [y], name="batch_first", perm=[2, 0, 1, 3])  # [N, steps, 1, hidden]
    y = g.op("Reshape", [y, g.constant("rows", np.array([-1, hidden], np.int64))], name="rows")
    logits = g.op("Gemm", [y, uniform("out.weight", (vocab, hidden)), uniform("out.bias", (vocab,))],
                  name="out", transB=1)
    g.output(g.op("Reshape", [logits, g.constant("steps", np.array([-1, steps, vocab], np.int64))],
                  name="to_steps"), "logits")
    return g.build()


def language_metrics(interpreter: Any, parameters: dict[str, np.ndarray] | None, x: np.ndarray,
                     y: np.ndarray) -> dict[str, float]:
    """{"perplexity": exp(mean cross-entropy in nats per character), "accuracy": share of next
    characters predicted (argmax)} over every position of x [n, steps] / y [n, steps], with
    `parameters` restored first (None: the interpreter's current ones)."""
    from edgerun.runtime.training import predict

    if parameters is not None:
        interpreter.run(parameters, signature="restore")
    logits = predict(interpreter, x)["logits"].astype(np.float64)
    logits = logits.reshape(-1, logits.shape[-1])
    rows = y.reshape(-1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_p[np.arange(len(rows)), rows].mean())
    return {"perplexity": float(np.exp(loss)), "accuracy": float(np.mean(logits.argmax(axis=1) == rows))}


@dataclass(frozen=True)
class LanguageData:
    """Each device's (x, y) windows, the held-out test windows and the vocabulary."""

    clients: list[tuple[str, np.ndarray, np.ndarray]]  # (module, x, y)
    x_test: np.ndarray
    y_test: np.ndarray
    vocab: Vocabulary


def language_data(modules: Sequence[str], max_chars: int, steps: int, test_fraction: float = 0.2) -> LanguageData:
    """One device per module: the first (1 - test_fraction) of its text trains, the rest joins the
    pooled test set. The vocabulary comes from the training text only."""
    corpus = stdlib_corpus(modules, max_chars)
    cut = {m: int(len(t) * (1 - test_fraction)) for m, t in corpus.items()}
    vocab = Vocabulary.of(t[: cut[m]] for m, t in corpus.items())
    clients, tests = [], []
    for module, text in corpus.items():
        x, y = windows(vocab.encode(text[: cut[module]]), steps)
        clients.append((module, x, y))
        tests.append(windows(vocab.encode(text[cut[module]:]), steps))
    return LanguageData(clients, np.concatenate([t[0] for t in tests]), np.concatenate([t[1] for t in tests]), vocab)


@dataclass(frozen=True)
class LanguageRound:
    """One round's figures: test perplexity and next-character accuracy of the federated and the
    central model after the same budget, and the mean bytes each reporting device uploaded."""

    round: int
    federated_perplexity: float
    federated_accuracy: float
    central_perplexity: float
    central_accuracy: float
    upload_bytes_per_client: float

    def __str__(self) -> str:
        return (f"round {self.round:2d}  federated: perplexity {self.federated_perplexity:6.2f} accuracy "
                f"{self.federated_accuracy:.3f}  central: perplexity {self.central_perplexity:6.2f} accuracy "
                f"{self.central_accuracy:.3f}  upload {self.upload_bytes_per_client / 1024:.1f} KiB per device")


def run_language_demo(clients: int = 3, rounds: int = 8, *, epochs: int = 6, batch_size: int = 16,
                      lr: float = 2.0, steps: int = 16, max_chars: int = 1500, embed: int = 16, hidden: int = 24,
                      seed: int = 0, modules: Sequence[str] | None = None,
                      on_round: Callable[[LanguageRound], None] | None = print) -> list[LanguageRound]:
    """Train the character LSTM over `clients` standard-library modules (one each; the first
    `clients` of DEFAULT_MODULES unless `modules` is given) with FedAvg and secure aggregation
    (every device in every round, `epochs` local epochs of SGD at `lr`), and centrally with the
    same budget; returns (and passes to `on_round`) the figures of each round."""
    from edgerun.converters.training import make_trainable
    from edgerun.runtime import Interpreter, save_model
    from edgerun.runtime.training import fit

    data = language_data(list(modules or DEFAULT_MODULES[:clients]), max_chars, steps)
    graph = make_trainable(lstm_language_model(data.vocab.size, steps, embed, hidden, seed),
                           optimizer=("sgd", {"lr": lr}))
    x = np.concatenate([c[1] for c in data.clients])
    y = np.concatenate([c[2] for c in data.clients])
    with tempfile.TemporaryDirectory() as tmp:
        model = save_model(graph, Path(tmp) / "char_lstm.train.erm")
        history = _federated(model, data, x, y, rounds, epochs, batch_size, lr, seed)
        central = Interpreter(model, device="cpu")
        results = []
        for record in history:
            fit(central, x, y, epochs=epochs, batch_size=batch_size, learning_rate=lr, seed=seed + record.round)
            ours = language_metrics(central, None, data.x_test, data.y_test)
            figures = LanguageRound(record.round, record.metrics["test_perplexity"], record.metrics["test_accuracy"],
                                    ours["perplexity"], ours["accuracy"], record.metrics["upload_bytes_per_client"])
            results.append(figures)
            if on_round is not None:
                on_round(figures)
    return results


def _federated(model: Path, data: LanguageData, x: np.ndarray, y: np.ndarray, rounds: int, epochs: int,
               batch_size: int, lr: float, seed: int) -> list[Any]:
    """The aggregated rounds of a FedAvg run with secure aggregation over in-process virtual
    devices (engine "thread"), device i holding data.clients[i]; each round's metrics include
    test_perplexity and test_accuracy. RuntimeError if a round does not aggregate."""
    from edgerun.federated.auth import KeyPair
    from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
    from edgerun.federated.engines import run_virtual
    from edgerun.federated.secagg.options import SecAggOptions
    from edgerun.federated.simulation import TOKEN, SimulationConfig, assign_behaviours
    from edgerun.federated.store import Store
    from edgerun.federated.strategies import FedAvg
    from edgerun.runtime import Interpreter

    count = len(data.clients)
    bounds = np.cumsum([0] + [len(c[1]) for c in data.clients])
    parts = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    evaluator, lock = Interpreter(model, device="cpu"), threading.Lock()

    def evaluate(parameters: dict[str, np.ndarray]) -> dict[str, float]:
        with lock:
            found = language_metrics(evaluator, parameters, data.x_test, data.y_test)
        return {f"test_{k}": v for k, v in found.items()}

    secagg = SecAggOptions(min_clients=2, stage_timeout=5.0)
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=count, min_available_clients=count, local_epochs=epochs,
                      batch_size=batch_size, client_lr=lr)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "coordinator.db")
        coordinator = Coordinator(model, store, strategy,
                                  CoordinatorConfig(rounds=rounds, round_timeout=120.0, enrol_token=TOKEN, seed=seed,
                                                    secagg=secagg), KeyPair.generate(), evaluator=evaluate)
        run_virtual(coordinator, x, y, parts, assign_behaviours(SimulationConfig(num_clients=count)),
                    engine="thread", seed=seed)
        history = store.history()
    done = [r for r in history if r.status == "aggregated"]
    if len(done) != len(history):
        raise RuntimeError(f"{len(history) - len(done)} of {len(history)} rounds did not aggregate")
    return done


def summary(rounds: Sequence[LanguageRound]) -> str:
    """One line: the final perplexities, federated against central, and the gap in percent."""
    last = rounds[-1]
    gap = 100 * (last.federated_perplexity / last.central_perplexity - 1)
    return (f"after {last.round} rounds: test perplexity federated {last.federated_perplexity:.2f}, central "
            f"{last.central_perplexity:.2f} ({gap:+.1f} %); next-character accuracy {last.federated_accuracy:.3f} / "
            f"{last.central_accuracy:.3f}; {last.upload_bytes_per_client / 1024:.1f} KiB sent per device per round")


def report_language_demo(plot: str | Path | None = None, **budget: Any) -> int:
    """Run `run_language_demo(**budget)`, printing each round and then `summary`, and write the plot
    to `plot` (see language_plot.plot_language_rounds; without matplotlib one line names the extra to
    install instead). 0 when the federated perplexity fell from the first round to the last, else 1."""
    from edgerun.federated.language_plot import MISSING_MATPLOTLIB, plot_language_rounds

    rounds = run_language_demo(**budget, on_round=lambda figures: print(figures, flush=True))
    print(summary(rounds), flush=True)
    if plot is not None:
        try:
            print(f"plot: {plot_language_rounds(rounds, plot)}")
        except ImportError:
            print(MISSING_MATPLOTLIB)
    return 0 if rounds[-1].federated_perplexity < rounds[0].federated_perplexity else 1


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edgerun.federated.language [--clients N] [--rounds R] ... [--plot PNG]`."""
    import argparse

    parser = argparse.ArgumentParser(description="federated character-level LSTM on the standard library's prose")
    parser.add_argument("--clients", type=int, default=3, help="devices, one standard-library module each")
    parser.add_argument("--rounds", type=int, default=8, help="federated rounds (secure aggregation on)")
    parser.add_argument("--epochs", type=int, default=6, help="local epochs per round (central: the same per round)")
    parser.add_argument("--max-chars", type=int, default=1500, help="characters of prose per module")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", help="write a PNG of perplexity and accuracy per round here (needs matplotlib)")
    args = parser.parse_args(argv)
    return report_language_demo(args.plot, clients=args.clients, rounds=args.rounds, epochs=args.epochs,
                                max_chars=args.max_chars, seed=args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
