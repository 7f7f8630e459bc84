"""edgerun against Flower on the same FedAvg workload, in one run: seconds per round, accuracy, bytes.

Workload, the same on both sides: sklearn's digits as the README demo makes them
(federated.demo.digits_setup: 80/20 stratified split, standardized, a trainable MLP 64-64-10
with PyTorch's default init), the training set split over `--clients` clients by
federated.simulation.partitions (`--partition iid|dirichlet|shards`, `--seed`). Every round
max(1, floor(F * N)) of the N clients (`--fraction-fit F`) each run edgerun.federated.local.local_update
on their partition: `--epochs` local epochs of batch `--batch-size` at learning rate `--lr`, seed = round
number, delta clipped to L2 norm 10 (the bound edgerun's coordinator tells clients by default). The server
takes the example-weighted mean and evaluates the new global model on the held-out 20 % with
local_evaluate, on the server side, after every round.

  edgerun   federated.simulation.simulate: a Coordinator behind loopback gRPC and one thread per client,
            FedAvg with min_fit_clients = the cohort and min_available_clients = N (round 1 waits for
            every client), over-selection 0 and report goal 1.0 (a round closes when its whole cohort
            reported), secure aggregation off; `--secagg` adds a row with it on (SecAggOptions()).
  Flower    flwr.simulation.run_simulation (Ray backend: `--flower-cpus` CPUs, one per actor, loopback
            only, no dashboard, telemetry and usage stats off) with a ServerApp running the Message
            API's flwr.serverapp.strategy.FedAvg and a ClientApp whose train() loads the global
            arrays, runs local_update on its partition and replies global + delta with its example count.
  cohorts   Flower's strategy replays the clients edgerun picked in each round (`--flower-sampling replay`,
            the default: both sides then train the same clients on the same data with the same seeds, so
            the accuracy curves agree up to rounding: the script exits 1 when a cohort differs or the curves
            are more than REPLAY_TOLERANCE apart); `--flower-sampling own` lets Flower sample.
  pacing    as each framework ships: Flower's in-memory grid pulls replies every 0.1 s (InMemoryGrid's
            pull_interval), edgerun's clients ask the coordinator for work (GetWork, as the client does).

Columns
  s             end of round r - end of round r-1 (round 1: from its start), a round ending when the
                central evaluation of its new model returned: edgerun the store's finished_at (round 1
                from its opened_at), Flower timestamps in the strategy (configure_train called,
                evaluate_fn returned)
  acc           test accuracy of the global model after the round
  B up          bytes one client sends back in the round (mean over its cohort): edgerun the round metric
                upload_bytes_per_client (the .npz of the delta; under secure aggregation the masked
                vector, without the protocol's key and share messages); Flower the deflated bytes of
                the reply's ArrayRecord and the objects in it (flwr.supercore.inflatable), what a
                SuperNode pushes to the SuperLink's object store (metrics and message headers not counted)
  startup       from the call (simulate / run_simulation) to round 1's start: edgerun the gRPC server
                and enrolment, Flower Ray, its actor pool and a query to every node for its partition id
  total         the whole call, startup and shutdown included

    .venv/bin/python benchmarks/bench_flower.py [--clients 10] [--rounds 10] [--fraction-fit 0.5]
        [--epochs 1] [--batch-size 10] [--lr 0.1] [--partition iid] [--alpha 0.5] [--seed 0]
        [--secagg] [--flower-cpus 2] [--flower-sampling replay|own] [--markdown]

Needs flwr[simulation] (the `bench` extra); the test suite never does.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# No telemetry, no usage statistics: set before flwr or ray are imported (Ray's workers inherit them).
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np

from benchmarks._harness import machine, print_table
from edgerun.federated.coordinator import CoordinatorConfig
from edgerun.federated.demo import digits_setup
from edgerun.federated.local import local_evaluate, local_update
from edgerun.federated.secagg.options import SecAggOptions
from edgerun.federated.simulation import SimulationConfig, partitions, simulate
from edgerun.federated.strategies import FedAvg
from edgerun.runtime.interpreter import Interpreter

CLIP_NORM = CoordinatorConfig().max_update_norm  # what edgerun's coordinator tells its clients to clip to
QUERY_TIMEOUT_S, ROUND_TIMEOUT_S = 120.0, 600.0
REPLAY_TOLERANCE = 0.02  # replayed cohorts: largest test-accuracy difference accepted (summation order differs)


@dataclass(frozen=True)
class Workload:
    """What both sides run: the model and data files, the split and the round settings."""

    model: Path
    data: Path  # .npz: x, y, x_test, y_test and the split (index: the clients' indices in turn, sizes)
    clients: int
    cohort: int  # clients per round
    rounds: int
    fraction_fit: float
    epochs: int
    batch_size: int
    lr: float
    partition: str
    alpha: float
    seed: int

    def simulation_config(self, secagg: SecAggOptions | None) -> SimulationConfig:
        """edgerun's SimulationConfig: the same split (federated.simulation.partitions of these settings)."""
        return SimulationConfig(num_clients=self.clients, rounds=self.rounds, fraction_fit=self.fraction_fit,
                                partition=self.partition, alpha=self.alpha, seed=self.seed, over_selection=0.0,
                                report_goal=1.0, round_timeout=ROUND_TIMEOUT_S, epochs=self.epochs,
                                batch_size=self.batch_size, lr=self.lr, secagg=secagg)


@dataclass
class Outcome:
    """One side's run, per round in order: end time, test accuracy, bytes up per client, cohort."""

    name: str
    called: float = 0.0  # time.time() when simulate / run_simulation was called
    first_start: float = float("nan")  # round 1's start
    ends: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    upload: list[float] = field(default_factory=list)
    cohorts: list[list[int]] = field(default_factory=list)  # partition ids of each round's clients
    returned: float = float("nan")
    note: str = ""

    def seconds(self) -> list[float]:
        """Per-round wall time: end_r - end_{r-1}, round 1 from its start."""
        return [float(s) for s in np.diff([self.first_start, *self.ends])]


# ------------------------------------------------------------------ the workload
def prepare(workdir: Path, args: argparse.Namespace) -> Workload:
    """The digits model and data under `workdir`, split as edgerun's simulation splits them."""
    model, x, y, x_test, y_test = digits_setup(workdir)
    w = Workload(model, workdir / "digits.npz", args.clients, max(1, int(args.fraction_fit * args.clients)),
                 args.rounds, args.fraction_fit, args.epochs, args.batch_size, args.lr, args.partition,
                 args.alpha, args.seed)
    parts = partitions(y, w.simulation_config(None))
    np.savez(w.data, x=x, y=y, x_test=x_test, y_test=y_test, index=np.concatenate(parts),
             sizes=np.array([len(p) for p in parts]))
    return w


def load_data(path: Path | str) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """(the arrays of the .npz, one index array per client)."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    return arrays, np.split(arrays["index"], np.cumsum(arrays["sizes"])[:-1])


def client_config(epochs: int, batch_size: int, lr: float, round_number: int) -> dict[str, Any]:
    """The local_update config of a client in `round_number`, as edgerun's client builds it from
    the round's config (seed = the round number, clip_norm = the coordinator's update bound)."""
    return {"epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr), "clip_norm": float(CLIP_NORM),
            "seed": int(round_number)}


# ------------------------------------------------------------------ edgerun
def run_edgerun(w: Workload, secure: bool) -> Outcome:
    """federated.simulation.simulate on the workload, secure aggregation on or off."""
    arrays, _ = load_data(w.data)
    secagg = SecAggOptions() if secure else None
    cohort = max(w.cohort, secagg.min_clients) if secagg else w.cohort
    strategy = FedAvg(fraction_fit=w.fraction_fit, min_fit_clients=cohort, min_available_clients=w.clients,
                      local_epochs=w.epochs, batch_size=w.batch_size, client_lr=w.lr)
    outcome = Outcome("edgerun secagg" if secure else "edgerun")
    outcome.called = time.time()
    history = simulate(w.model, arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"],
                       w.simulation_config(secagg), strategy=strategy)
    outcome.returned = time.time()
    for record in history:
        if record.finished_at is None:
            continue
        if record.round == 1:
            outcome.first_start = record.opened_at
        outcome.ends.append(record.finished_at)
        outcome.accuracy.append(float(record.metrics.get("test_accuracy", float("nan"))))
        outcome.upload.append(float(record.metrics.get("upload_bytes_per_client", float("nan"))))
        outcome.cohorts.append(sorted(int(c.rsplit("-", 1)[1]) for c in record.selected))
        if record.status != "aggregated":
            outcome.note += f"round {record.round} {record.status}: {record.reason}; "
    return outcome


# ------------------------------------------------------------------ Flower: the ClientApp (in Ray actors)
# A Ray actor serves many virtual clients in turn; it loads the model and data once (keyed by path).
_WORKERS: dict[tuple[str, str], tuple[Interpreter, np.ndarray, np.ndarray, list[np.ndarray]]] = {}


def _worker(model: str, data: str) -> tuple[Interpreter, np.ndarray, np.ndarray, list[np.ndarray]]:
    if (model, data) not in _WORKERS:
        arrays, parts = load_data(data)
        _WORKERS[model, data] = (Interpreter(Path(model)), arrays["x"], arrays["y"], parts)
    return _WORKERS[model, data]


def flower_train(msg: Any, context: Any) -> Any:
    """Flower's train(): local_update from the global arrays on this node's partition; replies the
    trained arrays (global + clipped delta, the model's dtype) and "num-examples"."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    config = msg.content["config"]
    interpreter, x, y, parts = _worker(str(config["model"]), str(config["data"]))
    index = parts[int(context.node_config["partition-id"])]
    parameters = {name: array.numpy() for name, array in msg.content["arrays"].items()}
    result = local_update(interpreter, parameters, x[index], y[index],
                          client_config(config["epochs"], config["batch_size"], config["lr"], config["server-round"]))
    trained = {n: Array((p + result.delta[n]).astype(p.dtype, copy=False)) for n, p in parameters.items()}
    reply = RecordDict({"arrays": ArrayRecord(trained), "metrics": MetricRecord({"num-examples": result.num_examples})})
    return Message(reply, reply_to=msg)


def flower_query(msg: Any, context: Any) -> Any:
    """Flower's query(): this node's partition id (the server maps node ids to partitions with it)."""
    from flwr.app import Message, MetricRecord, RecordDict

    partition_id = int(context.node_config["partition-id"])
    return Message(RecordDict({"metrics": MetricRecord({"partition-id": partition_id})}), reply_to=msg)


def client_app() -> Any:
    """The ClientApp; its functions are this module's, so Ray's workers import them by name."""
    from flwr.clientapp import ClientApp

    app = ClientApp()
    app.train()(flower_train)
    app.query()(flower_query)
    return app


# ------------------------------------------------------------------ Flower: the ServerApp (in this process)
def partition_nodes(grid: Any, clients: int) -> dict[int, int]:
    """partition id -> node id, asked of every node once all `clients` have registered.
    RuntimeError when they do not within QUERY_TIMEOUT_S or a node answers with an error."""
    from flwr.app import Message, MessageType, RecordDict

    deadline = time.monotonic() + QUERY_TIMEOUT_S
    while len(nodes := list(grid.get_node_ids())) < clients:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Flower: {len(nodes)} of {clients} nodes registered in {QUERY_TIMEOUT_S:.0f} s")
        time.sleep(0.05)
    asks = [Message(RecordDict(), message_type=MessageType.QUERY, dst_node_id=n) for n in nodes]
    replies = list(grid.send_and_receive(asks, timeout=QUERY_TIMEOUT_S))
    if len(replies) != clients or any(r.has_error() for r in replies):
        reasons = [r.error.reason for r in replies if r.has_error()]
        raise RuntimeError(f"Flower: {len(replies)} of {clients} nodes answered the query; errors: {reasons}")
    return {int(r.content["metrics"]["partition-id"]): r.metadata.src_node_id for r in replies}


def flower_strategy(w: Workload, outcome: Outcome, nodes: dict[int, int], replay: list[list[int]] | None,
                    uploads: list[list[Any]]) -> Any:
    """Flower's FedAvg, timing each round's start, recording its cohort and keeping the replies'
    ArrayRecords in `uploads` (measured after the run); with `replay`, round r trains the
    partitions replay[r - 1] instead of a sample of Flower's own."""
    from flwr.app import MessageType, RecordDict
    from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

    partition_of = {node: p for p, node in nodes.items()}

    class TimedFedAvg(FlowerFedAvg):
        def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
            if server_round == 1:
                outcome.first_start = time.time()
            if replay is None or server_round > len(replay):
                messages = list(super().configure_train(server_round, arrays, config, grid))
            else:
                config["server-round"] = server_round
                record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
                messages = list(self._construct_messages(record, [nodes[p] for p in replay[server_round - 1]],
                                                         MessageType.TRAIN))
            outcome.cohorts.append(sorted(partition_of[m.metadata.dst_node_id] for m in messages))
            return messages

        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            replies = list(replies)
            uploads.append([m.content[self.arrayrecord_key] for m in replies if not m.has_error()])
            if any(m.has_error() for m in replies):
                outcome.note += f"round {server_round}: {sum(m.has_error() for m in replies)} client errors; "
            return super().aggregate_train(server_round, replies)

    return TimedFedAvg(fraction_train=w.fraction_fit, fraction_evaluate=0.0, min_train_nodes=w.cohort,
                       min_evaluate_nodes=0, min_available_nodes=w.clients)


def server_app(w: Workload, outcome: Outcome, replay: list[list[int]] | None, uploads: list[list[Any]]) -> Any:
    """The ServerApp: map nodes to partitions, then FedAvg for w.rounds rounds with central
    evaluation (local_evaluate on the test split) after each, timing its end."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
    from flwr.serverapp import ServerApp

    arrays, _ = load_data(w.data)
    evaluator = Interpreter(w.model)
    initial = ArrayRecord({n: Array(v) for n, v in evaluator.run({}, signature="save").items()})
    app = ServerApp()

    def evaluate(server_round: int, record: Any) -> Any:
        if server_round == 0:
            return None  # the initial model: edgerun does not evaluate it either
        parameters = {n: a.numpy() for n, a in record.items()}
        accuracy = local_evaluate(evaluator, parameters, arrays["x_test"], arrays["y_test"])["accuracy"]
        outcome.ends.append(time.time())
        outcome.accuracy.append(float(accuracy))
        return MetricRecord({"accuracy": accuracy})

    @app.main()
    def main(grid: Any, context: Any) -> None:
        nodes = partition_nodes(grid, w.clients)
        config = ConfigRecord({"model": str(w.model), "data": str(w.data), "epochs": w.epochs,
                               "batch_size": w.batch_size, "lr": w.lr})
        flower_strategy(w, outcome, nodes, replay, uploads).start(
            grid, initial, num_rounds=w.rounds, timeout=ROUND_TIMEOUT_S, train_config=config, evaluate_fn=evaluate)

    return app


def deflated_bytes(record: Any) -> int:
    """Bytes of an ArrayRecord as Flower transports it: the record and every object in it, deflated."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(obj.deflate()) for obj in get_all_nested_objects(record).values())


def run_flower(w: Workload, cpus: int, replay: list[list[int]] | None, workdir: Path) -> Outcome:
    """Flower's simulation of the workload (Ray on `cpus` CPUs of this machine, loopback only,
    its session files under `workdir`)."""
    from flwr.simulation import run_simulation

    from benchmarks import bench_flower as this  # not __main__: Ray's workers import the ClientApp by name

    logging.getLogger("flwr").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="ray")
    outcome, uploads = Outcome("Flower"), []
    backend = {"init_args": {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False, "log_to_driver": False,
                             "logging_level": logging.ERROR, "_node_ip_address": "127.0.0.1",
                             "object_store_memory": 128 * 1024 * 1024, "_temp_dir": str(workdir / "ray")},
               "client_resources": {"num_cpus": 1, "num_gpus": 0.0}}
    outcome.called = time.time()
    run_simulation(server_app(w, outcome, replay, uploads), this.client_app(), num_supernodes=w.clients,
                   backend_config=backend)
    outcome.returned = time.time()
    outcome.upload = [float(np.mean([deflated_bytes(r) for r in replies])) if replies else float("nan")
                      for replies in uploads]
    if len(outcome.ends) < w.rounds:
        outcome.note += f"{len(outcome.ends)} of {w.rounds} rounds finished; "
    return outcome


# ------------------------------------------------------------------ tables
def fmt(value: float, spec: str) -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def per_round_rows(outcomes: list[Outcome], rounds: int) -> tuple[list[str], list[list[object]]]:
    headers = ["round"]
    for o in outcomes:
        headers += [f"{o.name} s", f"{o.name} acc", f"{o.name} B up"]
    rows = []
    for r in range(rounds):
        row: list[object] = [r + 1]
        for o in outcomes:
            seconds = o.seconds()
            row += [fmt(seconds[r], ".3f") if r < len(seconds) else "-",
                    fmt(o.accuracy[r], ".4f") if r < len(o.accuracy) else "-",
                    fmt(o.upload[r], ",.0f") if r < len(o.upload) else "-"]
        rows.append(row)
    return headers, rows


SUMMARY = ["system", "rounds", "startup s", "median s/round", "total s", "final acc", "B up/client/round",
           "s/round vs Flower", "bytes vs Flower"]


def summary_rows(outcomes: list[Outcome], anchor: Outcome) -> list[list[object]]:
    def median(o: Outcome) -> float:
        return float(np.median(o.seconds())) if o.ends else float("nan")

    def bytes_up(o: Outcome) -> float:
        return float(np.nanmedian(o.upload)) if o.upload else float("nan")

    rows = []
    for o in outcomes:
        rows.append([o.name, len(o.ends), fmt(o.first_start - o.called, ".2f"), fmt(median(o), ".3f"),
                     fmt(o.returned - o.called, ".1f"), fmt(o.accuracy[-1] if o.accuracy else float("nan"), ".4f"),
                     fmt(bytes_up(o), ",.0f"), fmt(median(o) / median(anchor), ".2f") + "x",
                     fmt(bytes_up(o) / bytes_up(anchor), ".3f") + "x"])
    return rows


# ------------------------------------------------------------------ main
def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10, help="virtual clients N (10)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds (10)")
    parser.add_argument("--fraction-fit", type=float, default=0.5, help="clients per round: max(1, floor(F * N)) (0.5)")
    parser.add_argument("--epochs", type=int, default=1, help="local epochs E (1)")
    parser.add_argument("--batch-size", type=int, default=10, help="local batch size B (10)")
    parser.add_argument("--lr", type=float, default=0.1, help="client SGD learning rate (0.1)")
    parser.add_argument("--partition", choices=["iid", "dirichlet", "shards"], default="iid", help="split (iid)")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of edgerun's selection (0)")
    parser.add_argument("--secagg", action="store_true", help="add an edgerun row with secure aggregation on")
    parser.add_argument("--flower-cpus", type=int, default=2, help="CPUs Ray may use, one per Flower actor (2)")
    parser.add_argument("--flower-sampling", choices=["replay", "own"], default="replay",
                        help="Flower trains edgerun's cohorts (replay) or samples its own (own) (replay)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args(argv)
    for name in ("clients", "rounds", "epochs", "batch_size", "flower_cpus"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.fraction_fit <= 1:
        parser.error(f"--fraction-fit must be in (0, 1], got {args.fraction_fit}")
    if not (args.lr > 0 and np.isfinite(args.lr)) or not (args.alpha > 0 and np.isfinite(args.alpha)):
        parser.error(f"--lr and --alpha must be finite and > 0, got {args.lr} and {args.alpha}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        import flwr
        import ray
    except ImportError:
        raise SystemExit("bench_flower: flwr is not installed; pip install 'flwr[simulation]' "
                         "(the bench extra)") from None
    host, began = machine(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_flower_") as tmp:
        try:
            w = prepare(Path(tmp), args)
        except ValueError as exc:  # the split cannot be made (more clients than examples, Dirichlet draws)
            raise SystemExit(f"bench_flower: {exc}") from None
        outcomes = [run_edgerun(w, secure=False)]
        if args.secagg:
            outcomes.append(run_edgerun(w, secure=True))
        print(f"# edgerun done after {time.monotonic() - began:.0f} s", file=sys.stderr)
        replay = outcomes[0].cohorts if args.flower_sampling == "replay" else None
        flower = run_flower(w, args.flower_cpus, replay, Path(tmp))
    print(f"# {host}; flwr {flwr.__version__}, ray {ray.__version__} on {args.flower_cpus} CPUs "
          f"({args.flower_cpus} actors); edgerun one thread per client, loopback gRPC")
    print(f"# digits MLP 64-64-10, FedAvg, {w.clients} clients ({w.partition} split, seed {w.seed}), "
          f"{w.cohort} per round ({'edgerun cohorts replayed by Flower' if replay else 'each side samples'}), "
          f"E={w.epochs}, B={w.batch_size}, lr={w.lr}, clip {CLIP_NORM}; {time.monotonic() - began:.0f} s in all")
    outcomes.append(flower)
    print_table(*per_round_rows(outcomes, w.rounds), args.markdown)
    print()
    print_table(SUMMARY, summary_rows(outcomes, flower), args.markdown)
    for o in outcomes:
        if o.note:
            print(f"# {o.name}: {o.note}", file=sys.stderr)
    return 0 if replay is None else check_replay(outcomes[0], flower)


def check_replay(edgerun: Outcome, flower: Outcome) -> int:
    """Print how far the two accuracy curves are apart when Flower replayed edgerun's cohorts;
    1 (with a message on stderr) when a cohort or round count differs or the curves differ by
    more than REPLAY_TOLERANCE: the two sides did not run the same workload."""
    same = sum(a == b for a, b in zip(edgerun.cohorts, flower.cohorts, strict=False))
    gap = max((abs(a - b) for a, b in zip(edgerun.accuracy, flower.accuracy, strict=False)), default=0.0)
    print(f"# cohorts equal in {same} of {len(edgerun.cohorts)} rounds; "
          f"largest test accuracy difference edgerun - Flower {gap:.4f}")
    if same != len(edgerun.cohorts) or len(flower.cohorts) != len(edgerun.cohorts) or gap > REPLAY_TOLERANCE:
        print(f"bench_flower: the two sides did not run the same workload (cohorts equal in {same} rounds, "
              f"accuracy apart by up to {gap:.4f}, tolerance {REPLAY_TOLERANCE})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
