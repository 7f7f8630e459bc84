"""Training steps per second with a large embedding: row-sparse updates vs dense ones.

The model: tokens (32, 20) int64 -> Gather(embedding 50,000 x 128) -> ReduceMean over the 20
tokens -> Gemm 128 -> 10, softmax cross-entropy, float32, plain SGD (lr 0.1). A fresh random
batch each step touches at most 640 of the 50,000 rows.

    .venv/bin/python benchmarks/bench_sparse_embedding.py [--threads 2] [--blocks 5] [--steps 50]
        [--optimizer sgd|momentum|adam] [--markdown]

Candidates, measured in the same run in alternating blocks (every step timed on its own,
median reported), each an Interpreter running the "train" signature of make_trainable(...):
  sparse  sparse_embeddings="always": GatherGradSparse (the rows touched) and an update that
          writes those rows into the table in place ("auto" picks it too for plain SGD)
  dense   sparse_embeddings="never": GatherGrad scatter-adds into a table-sized gradient, the
          update rewrites the whole table, and the plan copies it into the variable
Also printed: the train signature's arena bytes (Interpreter.arena_bytes("train")), against
the table's own 25.6 MB. Before timing, both train 3 steps on the same batches: plain SGD
must give bit-identical tables (momentum and Adam differ by design: lazy vs dense), else
SystemExit. Ratios are sparse steps/s over dense steps/s: > 1 means sparse is faster.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._harness import machine, percentiles, print_table, time_interleaved
from edgerun.converters.training import make_trainable
from edgerun.runtime import GraphBuilder, Interpreter
from edgerun.runtime.graph import Graph

VOCAB, DIM, CLASSES, BATCH, TOKENS, LR = 50_000, 128, 10, 32, 20, 0.1
OPTIMIZERS = {"sgd": ("sgd", {"lr": LR}), "momentum": ("sgd", {"lr": LR, "momentum": 0.9}),
              "adam": ("adam", {"lr": LR})}


def bag_of_words(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    g = GraphBuilder("bag_of_words", opset=17)
    tokens = g.input("tokens", np.int64, (-1, TOKENS))
    table = g.constant("embedding", (rng.standard_normal((VOCAB, DIM)) * 0.1).astype(np.float32))
    h = g.op("ReduceMean", [g.op("Gather", [table, tokens], name="embed")], name="pool", axes=[1], keepdims=0)
    w = g.constant("fc.weight", (rng.standard_normal((CLASSES, DIM)) * np.sqrt(1 / DIM)).astype(np.float32))
    b = g.constant("fc.bias", np.zeros(CLASSES, np.float32))
    g.output(g.op("Gemm", [h, w, b], name="fc", transB=1), "y")
    return g.build()


def batch(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"tokens": rng.integers(0, VOCAB, (BATCH, TOKENS)), "labels": rng.integers(0, CLASSES, BATCH)}


def interpreters(optimizer: str, threads: int) -> dict[str, Interpreter]:
    graph = bag_of_words()
    return {mode: Interpreter(make_trainable(graph, optimizer=OPTIMIZERS[optimizer], sparse_embeddings=flag),
                              device="cpu", num_threads=threads)
            for mode, flag in (("sparse", "always"), ("dense", "never"))}


def check(optimizer: str, candidates: dict[str, Interpreter]) -> None:
    """Three steps on the same batches; plain SGD must leave both tables bit-identical."""
    rng = np.random.default_rng(7)
    for inputs in (batch(rng) for _ in range(3)):
        for interpreter in candidates.values():
            interpreter.run(inputs, signature="train")
    tables = [it.run({}, signature="save")["embedding"] for it in candidates.values()]
    if optimizer == "sgd" and not np.array_equal(*tables):
        raise SystemExit(f"sparse and dense SGD differ by {np.abs(tables[0] - tables[1]).max():.3g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="edgerun num_threads (default 2)")
    parser.add_argument("--blocks", type=int, default=5, help="alternating blocks (default 5)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per block (default 50)")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="sgd", help="(default sgd)")
    parser.add_argument("--markdown", action="store_true", help="print README table rows")
    args = parser.parse_args(argv)

    candidates = interpreters(args.optimizer, args.threads)
    check(args.optimizer, candidates)
    rng = np.random.default_rng(0)
    inputs = [batch(rng) for _ in range(16)]  # cycled: a different batch most steps
    counters = {name: iter(range(1 << 62)) for name in candidates}

    def step(name: str):
        interpreter, counter = candidates[name], counters[name]
        return lambda: interpreter.run(inputs[next(counter) % len(inputs)], signature="train")

    for name in candidates:
        step(name)()
    times = time_interleaved({name: step(name) for name in candidates}, args.blocks, args.steps)
    medians = {name: percentiles(t)[0] for name, t in times.items()}
    rows = [[name, f"{1e6 / medians[name]:.0f}", f"{medians[name] / 1e3:.2f}",
             f"{candidates[name].arena_bytes('train') / 1e6:.3f}", f"{medians['dense'] / medians[name]:.1f}"]
            for name in candidates]
    print(f"# {machine()}; embedding {VOCAB} x {DIM} float32 ({VOCAB * DIM * 4 / 1e6:.1f} MB), batch {BATCH} x "
          f"{TOKENS} tokens, {args.optimizer}, {args.threads} threads; {args.blocks} x {args.steps} steps each, "
          f"interleaved")
    print_table(["candidate", "steps/s", "ms/step", "train arena MB", "speed-up vs dense"], rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
