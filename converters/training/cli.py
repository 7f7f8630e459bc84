"""`edgerun make-trainable`: add loss, gradients and optimizer to an .erm model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgerun.converters.training.trainable import LOSSES, OPTIMIZERS, SPARSE_EMBEDDINGS


def add_parser(subparsers: Any) -> None:
    """Register the `make-trainable` command."""
    p = subparsers.add_parser("make-trainable", help="add train/infer/save/restore signatures to a model")
    p.add_argument("model", type=Path, help="inference model (.erm, or .onnx)")
    p.add_argument("--loss", choices=LOSSES, default="cross_entropy", help="the loss the model is trained on")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="how the gradients update the weights")
    p.add_argument("--lr", type=float, default=0.01,
                   help="learning rate stored in the model (what 'train' uses when it is fed none)")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    p.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    p.add_argument("--weight-decay", type=float, default=0.0, help="optimizer weight decay")
    p.add_argument("--l2", type=float, default=0.0, help="L2 penalty added to the loss")
    p.add_argument("--trainable", default=None, metavar="PATTERNS|K",
                   help="which weights train: glob pattern(s) of their names, comma-separated; or K (also written "
                        "last:K), the weights of the last K layers that have any, as trainable=K in Python "
                        "(a weight named by digits: '[3]'). Default: all")
    p.add_argument("--output-name", default=None, help="model output the loss applies to (default: the only one)")
    p.add_argument("--seed", type=int, default=None,
                   help="fix the Dropout masks of training (default: they differ in every session)")
    p.add_argument("--sparse-embeddings", choices=SPARSE_EMBEDDINGS, default="auto",
                   help="row-sparse embedding updates: 'auto' where exact (plain SGD, tables of 65,536+ "
                        "values), 'always' (lazy momentum/Adam), 'never' (default: %(default)s)")
    p.add_argument("--recompute", action="store_true",
                   help="recompute cheap activations (Relu6, ...) in the backward pass instead of keeping them")
    p.add_argument("--profile", default=None,
                   help="device profile (host, rpi-zero2, rpi4, phone) whose memory budget a train step must fit; "
                        "activations are recomputed when that is what it takes")
    p.add_argument("--batch-size", type=int, default=1,
                   help="mini-batch size (examples) at which --profile's memory budget is checked")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output .erm file (default: MODEL with suffix .train.erm)")
    p.set_defaults(func=cmd_make_trainable)


def parse_trainable(text: str | None) -> str | int | None:
    """--trainable as make_trainable takes it: K or 'last:K' -> the int K, patterns as given.
    ValueError for 'last:' without a whole number."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    if text.startswith("last:"):
        count = text.split(":", 1)[1]
        if not count.isdigit():
            raise ValueError(f"--trainable last:K needs a whole number K, got {count!r}")
        return int(count)
    return text


def cmd_make_trainable(args: argparse.Namespace) -> int:
    """Load (or convert), make trainable, save; prints one summary line."""
    from edgerun.converters.training.trainable import make_trainable
    from edgerun.runtime import load_model, save_model
    from edgerun.runtime.cli import check_output_file

    output = args.output or args.model.with_name(args.model.stem + ".train.erm")
    check_output_file(output)
    trainable = parse_trainable(args.trainable)
    if args.model.suffix == ".onnx":
        from edgerun.converters import from_onnx

        graph = from_onnx(args.model, optimize=False)  # gradients need the original ops
    else:
        graph = load_model(args.model)
    settings: dict[str, Any] = {"lr": args.lr, "weight_decay": args.weight_decay}
    if args.optimizer == "sgd":
        settings.update(momentum=args.momentum, nesterov=args.nesterov)
    budget = None
    if args.profile is not None:
        from edgerun.runtime.profiles import get_profile

        budget = get_profile(args.profile).memory_budget_bytes
    train_graph = make_trainable(graph, loss=args.loss, optimizer=(args.optimizer, settings),
                                 trainable=trainable, l2=args.l2, output=args.output_name, seed=args.seed,
                                 sparse_embeddings=args.sparse_embeddings, recompute=args.recompute,
                                 memory_budget=budget, batch_size=args.batch_size)
    path = save_model(train_graph, output)
    trained = json.loads(train_graph.metadata["edgerun.training"])["parameters"]
    params = [v for v in train_graph.signatures["save"].outputs.values() if v.name in trained]
    count = sum(v.data.size for v in params)
    print(f"made {path}: {len(params)} trainable tensors ({count:,} values), "
          f"signatures {', '.join(train_graph.signatures)}")
    record = json.loads(train_graph.metadata["edgerun.training"])
    if budget is not None or args.recompute:
        from edgerun.converters.training.trainable import train_step_memory

        need = train_step_memory(train_graph, args.batch_size)
        print(f"a train step at batch {args.batch_size} holds {need}"
              + (f"; {record['recomputed']} activations recomputed" if record["recomputed"] else ""))
    if record["sparse_embeddings"]:
        print(f"row-sparse updates: {', '.join(record['sparse_embeddings'])}")
    frozen = record["frozen"]
    if frozen:
        print(f"frozen (an op on the way to the loss has no gradient): {', '.join(frozen)}")
    return 0
