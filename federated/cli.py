"""`edgerun federated coordinator | client | simulate | status | export`.

Every failure a user can cause (a model that is not trainable, data without x or y, a
duplicate client id, a coordinator that refuses a client) is an EdgerunError or OSError,
which `edgerun` prints as one line; checks run before any file is made, and a coordinator
or client that fails to start removes the files it made (state, key)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgerun.runtime.errors import EdgerunError, InputError
from edgerun.runtime.extras import require

ROUND_TIMEOUT = 60.0  # seconds; the same in coordinator and simulate
DATA_LAYOUT = "an .npz with x (features) and y (labels, the same number of examples)"


def add_parser(subparsers: Any) -> None:
    """Register `edgerun federated` and its subcommands."""
    from edgerun.config_file import add_config_option

    fed = subparsers.add_parser("federated", help="federated learning: coordinator, client, simulation")
    commands = fed.add_subparsers(title="federated commands", metavar="COMMAND")

    c = commands.add_parser("coordinator", help="run a coordinator for a trainable model")
    c.add_argument("--model", type=Path, required=True, help="trainable .erm (from make-trainable)")
    c.add_argument("--port", type=int, default=8765, help="TCP port (0: any free one)")
    c.add_argument("--host", default="0.0.0.0", help="address to listen on")
    c.add_argument("--state", type=Path, default=Path("coordinator.db"), help="SQLite state file")
    c.add_argument("--key", type=Path, default=Path("coordinator.key"), help="Ed25519 key file (created)")
    c.add_argument("--export", type=Path, default=None, metavar="PATH",
                   help="write the latest global model here as a loadable .erm after every round")
    c.add_argument("--token-file", type=Path, default=None,
                   help=f"file holding the enrolment token devices must present (or set {TOKEN_ENV})")
    c.add_argument("--token", default=None, help="deprecated (visible in the process list): use --token-file")
    c.add_argument("--operator-token-file", type=Path, default=None,
                   help=f"file holding the token that makes Status report rounds and clients (or set {OPERATOR_ENV})")
    c.add_argument("--max-update-norm", type=float, default=10.0,
                   help="L2 bound on each client's update (plain rounds: clipped; secure: clients clip, the sum is "
                        "checked); 0: no bound")
    c.add_argument("--max-examples", type=int, default=1000, help="example count an update is weighted by, at most")
    c.add_argument("--allow-keys", type=Path, default=None,
                   help="file of device public keys (hex, one per line) that may enrol without the token")
    add_round_arguments(c)
    c.add_argument("--min-clients", type=int, default=2, help="clients that must be available for a round")
    c.add_argument("--clip-norm", type=float, default=0.0, help="L2 bound clients clip their delta to (0: none)")
    c.add_argument("--tls-cert", type=Path, help="server certificate (PEM); enables TLS")
    c.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    c.add_argument("--tls-client-ca", type=Path, help="require device certificates signed by this CA (mTLS)")
    add_privacy_arguments(c)
    add_config_option(c)
    c.set_defaults(func=cmd_coordinator)

    d = commands.add_parser("client", help="run a device client")
    d.add_argument("--coordinator", required=True, help="HOST:PORT")
    d.add_argument("--data", type=Path, required=True, help=DATA_LAYOUT)
    d.add_argument("--id", required=True, help="this device's client id (1-128 of A-Z a-z 0-9 . _ : @ -)")
    d.add_argument("--key", type=Path, default=None,
                   help="Ed25519 key file of this device, created if missing (default: ID.key in this folder)")
    d.add_argument("--token-file", type=Path, default=None,
                   help=f"file holding the enrolment token (or set {TOKEN_ENV})")
    d.add_argument("--token", default=None, help="deprecated (visible in the process list): use --token-file")
    d.add_argument("--tls-ca", type=Path, help="CA that signed the coordinator's certificate; enables TLS")
    d.add_argument("--tls-cert", type=Path, help="device certificate for mutual TLS")
    d.add_argument("--tls-key", type=Path, help="device private key for mutual TLS")
    d.add_argument("--profile", default=None,
                   help="device profile (rpi-zero2, rpi4, phone, host): threads and memory budget; rounds whose "
                        "train step (arena + weights + optimizer state) does not fit are declined (default: none, "
                        "half the physical memory)")
    d.add_argument("--device", default="auto",
                   help="kernel backend: auto, cpu, numba, or cuda (an NVIDIA GPU: pip install 'edgerun[cuda]')")
    d.set_defaults(func=cmd_client)

    s = commands.add_parser("simulate", help="N virtual devices against a real coordinator on loopback")
    s.add_argument("--model", type=Path, required=True, help="trainable .erm (from make-trainable)")
    s.add_argument("--data", type=Path, required=True, help=f"{DATA_LAYOUT}; optional x_test, y_test to evaluate on "
                   "(else the training data)")
    s.add_argument("--clients", type=int, default=10, help="number of virtual devices")
    add_round_arguments(s)
    s.add_argument("--partition", choices=["iid", "dirichlet", "shards"], default="iid",
                   help="how the data is split between devices")
    s.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (--partition dirichlet)")
    s.add_argument("--shards-per-client", type=int, default=2, help="label shards per device (--partition shards)")
    s.add_argument("--drop", type=float, default=0.0, metavar="PROBABILITY",
                   help="probability a selected device drops out")
    s.add_argument("--state", type=Path, default=None,
                   help="keep the coordinator's SQLite state here (default: a temporary file); "
                        "'edgerun federated export' reads it")
    s.add_argument("--export", type=Path, default=None, metavar="PATH",
                   help="write the final global model here as a loadable .erm")
    s.add_argument("--metrics", type=Path, default=Path("rounds.json"), help="per-round metrics (.json or .csv)")
    s.add_argument("--plot", type=Path, default=None, help="PNG of accuracy and loss per round (needs matplotlib)")
    s.add_argument("--slow", default=None, metavar="SHARE:SECONDS",
                   help="a share of devices that take SECONDS longer per round, e.g. 0.2:1.5")
    s.add_argument("--drop-stage", default="start", help="where dropping devices go away: start, a secure-"
                   "aggregation stage (advertise, share, masked, consistency, unmask) or random")
    s.add_argument("--engine", choices=["grpc", "thread", "ray"], default="grpc",
                   help="how devices are played: grpc, a thread per device over loopback gRPC (the whole stack, up "
                        "to ~100 devices); thread, virtual clients in process (thousands); ray, the same trained by "
                        "Ray actors (pip install 'edgerun[simulation]')")
    s.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="--engine ray: the Ray cluster to use, e.g. ray://head:10001 (default: a local Ray)")
    add_privacy_arguments(s)
    s.set_defaults(func=cmd_simulate)

    t = commands.add_parser("status", help="rounds, clients and metrics of a coordinator state file")
    t.add_argument("--state", type=Path, default=Path("coordinator.db"), help="SQLite state file")
    t.set_defaults(func=cmd_status)

    e = commands.add_parser("export", help="a global model version of a coordinator state file as a loadable .erm")
    e.add_argument("--state", type=Path, default=Path("coordinator.db"), help="SQLite state file")
    e.add_argument("--model", type=Path, required=True, help="the trainable .erm the coordinator ran")
    e.add_argument("-o", "--output", type=Path, required=True, help=".erm file to write")
    e.add_argument("--model-version", "--version", type=int, default=None, dest="version", metavar="N",
                   help="global model version to export (default: the latest; --version is its older name)")
    e.set_defaults(func=cmd_export)


def add_round_arguments(p: Any) -> None:
    """What a round asks of devices and when it closes (coordinator and simulate, same defaults)."""
    p.add_argument("--rounds", type=int, default=10, help="training rounds")
    p.add_argument("--fraction-fit", type=float, default=0.5, metavar="FRACTION",
                   help="fraction of the available devices a round targets")
    p.add_argument("--over-selection", type=float, default=0.3, metavar="FRACTION",
                   help="fraction of extra devices selected beyond the target (some always drop out)")
    p.add_argument("--report-goal", type=float, default=1.0, metavar="FRACTION",
                   help="fraction of the target that must report before a round closes")
    p.add_argument("--round-timeout", type=float, default=ROUND_TIMEOUT, metavar="SECONDS",
                   help="seconds a round waits for reports before it closes with what it has")
    p.add_argument("--epochs", type=int, default=5, help="local epochs per round (E): passes over a device's data")
    p.add_argument("--batch-size", type=int, default=10, help="local mini-batch size (B), in examples")
    p.add_argument("--lr", type=float, default=None,
                   help="devices' learning rate (default: the one stored in the model by make-trainable --lr)")


TOKEN_ENV, OPERATOR_ENV = "EDGERUN_ENROL_TOKEN", "EDGERUN_OPERATOR_TOKEN"


def read_secret(path: Path | None, env: str, flag_value: str | None = None, flag: str = "") -> str | None:
    """A secret from a file (first line, stripped), else the environment variable `env`, else
    the deprecated command-line `flag_value` (with a warning: other users of the machine can
    read a process's arguments). None if none is given; ValueError for an empty file."""
    if path is not None:
        text = path.read_text().strip()
        if not text:
            raise ValueError(f"{path}: the token file is empty")
        return text.splitlines()[0]
    if os.environ.get(env):
        return os.environ[env]
    if flag_value is not None:
        logging.getLogger("edgerun.federated").warning(
            "%s on the command line is visible in the process list and is deprecated: use %s-file or %s",
            flag, flag, env)
    return flag_value


def add_privacy_arguments(p: Any) -> None:
    """Secure aggregation and differential privacy options (coordinator and simulate)."""
    p.add_argument("--secure-aggregation", choices=["on", "off"], default="on",
                   help="collect only masked updates and learn only their sum")
    p.add_argument("--secagg-bits", type=int, default=32, metavar="BITS",
                   help="ring Z_2^bits of the masked updates (<= 32)")
    p.add_argument("--secagg-neighbours", type=int, default=20, help="SecAgg+ neighbours per client")
    p.add_argument("--secagg-clip-range", type=float, default=None,
                   help="per-value quantization bound (default: the clip norm, else 1)")
    p.add_argument("--secagg-stage-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="seconds per protocol stage")
    p.add_argument("--secagg-max-cohort", type=int, default=200, metavar="CLIENTS",
                   help="larger rounds split into secure-aggregation cohorts of at most this many clients, each "
                        "unmasked on its own and their sums added (0: never split; distributed DP never splits)")
    p.add_argument("--dp-noise", type=float, default=0.0, help="DP noise multiplier z (0: no DP)")
    p.add_argument("--dp-clip", type=float, default=1.0, help="DP clipping norm S of each client's delta (L2)")
    p.add_argument("--dp-delta", type=float, default=1e-5, help="DP delta of the (epsilon, delta) guarantee")
    p.add_argument("--dp-epsilon", type=float, default=float("inf"), help="stop training at this epsilon")
    p.add_argument("--dp-mode", choices=["central", "distributed"], default="central",
                   help="who adds the DP noise: the coordinator, or each device a share")
    p.add_argument("--compression", default="none",
                   help="of the updates, plain uploads only: none, int8 or topk:F (keep the largest fraction F)")


def privacy_options(args: argparse.Namespace) -> tuple[Any, Any]:
    """(SecAggOptions or None, DpOptions or None) from the command line."""
    from edgerun.federated.privacy import DpOptions
    from edgerun.federated.secagg.options import SecAggOptions

    secagg = None
    distributed = args.dp_noise > 0 and args.dp_mode == "distributed"
    if args.secure_aggregation == "on":
        secagg = SecAggOptions(bits=args.secagg_bits, neighbours=args.secagg_neighbours,
                               clip_range=args.secagg_clip_range, stage_timeout=args.secagg_stage_timeout,
                               # distributed DP needs one cohort: each cohort's sum would carry only its noise share
                               max_cohort=None if distributed else args.secagg_max_cohort or None)
    dp = None
    if args.dp_noise > 0:
        dp = DpOptions(args.dp_noise, args.dp_clip, args.dp_delta, args.dp_epsilon, args.dp_mode)
    return secagg, dp


class ClientRefused(EdgerunError):
    """The coordinator refused a device's request (a duplicate id or key, a bad token) or
    could not be reached."""


def trainable_model(path: Path) -> Any:
    """The Interpreter of the model at `path`; InputError unless it is trainable (checked
    before anything is created), ModelError if it is not a model, OSError if unreadable."""
    from edgerun.federated.local import require_trainable
    from edgerun.runtime.interpreter import Interpreter

    interpreter = Interpreter(path, device="cpu")
    require_trainable(interpreter, path)
    return interpreter


def load_data(path: Path, test: bool = False) -> tuple[np.ndarray, ...]:
    """(x, y) from an .npz, and with `test` (x_test, y_test) too: those arrays, else x and y
    again. InputError naming what is missing or does not match."""
    from edgerun.runtime.train_cli import read_npz

    layout = DATA_LAYOUT + (", optionally x_test and y_test" if test else "")
    arrays = read_npz(path, layout)
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise InputError(f"{path}: no array {missing[0]!r}; expected {layout}, found {sorted(arrays)}")
    pairs = [("x", "y")]
    if test and ("x_test" in arrays or "y_test" in arrays):
        if not ("x_test" in arrays and "y_test" in arrays):
            raise InputError(f"{path}: x_test and y_test come together; found {sorted(arrays)}")
        pairs.append(("x_test", "y_test"))
    for x, y in pairs:
        if len(arrays[x]) != len(arrays[y]):
            raise InputError(f"{path}: {x} has {len(arrays[x])} examples, {y} {len(arrays[y])}")
    if test and len(pairs) == 1:
        pairs.append(("x", "y"))  # no test set: evaluate on the training data
    return tuple(arrays[name] for pair in pairs for name in pair)


def check_output(path: Path | None) -> None:
    """federated.export.check_output_path for `path`, if given."""
    from edgerun.federated.export import check_output_path

    if path is not None:
        check_output_path(path)


@contextmanager
def removed_on_failure(*paths: Path | None) -> Iterator[None]:
    """Remove again what the block creates among `paths` (and SQLite's -wal, -shm and
    -journal files beside them) if it raises: a start that fails leaves no files behind.
    Files that existed before are never touched, nor anything after an interrupt (Ctrl-C)."""
    named = [Path(f"{p}{suffix}") for p in paths if p is not None for suffix in ("", "-wal", "-shm", "-journal")]
    new = [p for p in named if not p.exists()]
    try:
        yield
    except Exception:
        for p in new:
            p.unlink(missing_ok=True)
        raise


def cmd_coordinator(args: argparse.Namespace) -> int:
    from edgerun.federated.coordinator import CoordinatorConfig
    from edgerun.federated.strategies import FedAvg

    trainable_model(args.model)
    check_output(args.export)
    strategy = FedAvg(fraction_fit=args.fraction_fit, min_fit_clients=args.min_clients,
                      min_available_clients=args.min_clients, local_epochs=args.epochs,
                      batch_size=args.batch_size, client_lr=args.lr, clip_norm=args.clip_norm)
    allowed = set()
    if args.allow_keys is not None:
        allowed = {bytes.fromhex(line.strip()) for line in args.allow_keys.read_text().splitlines() if line.strip()}
    token = read_secret(args.token_file, TOKEN_ENV, args.token, "--token")
    if token is None and not allowed:
        raise ValueError(f"enrolment needs --token-file (or {TOKEN_ENV}) or --allow-keys")
    secagg, dp = privacy_options(args)
    config = CoordinatorConfig(rounds=args.rounds, round_timeout=args.round_timeout,
                               report_goal=args.report_goal, over_selection=args.over_selection,
                               enrol_token=token, allowed_keys=allowed,
                               secagg=secagg, dp=dp, compression=args.compression,
                               max_update_norm=args.max_update_norm or None, max_examples=args.max_examples,
                               operator_token=read_secret(args.operator_token_file, OPERATOR_ENV),
                               export_path=args.export)
    credentials = None
    if args.tls_cert or args.tls_key:
        from edgerun.federated.tls import server_credentials

        if not (args.tls_cert and args.tls_key):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        credentials = server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    coordinator, server, port = _start_coordinator(args, strategy, config, credentials)
    print(f"coordinator listening on port {port}", flush=True)
    try:
        coordinator.run()
        coordinator.wait_until_clients_stopped(timeout=30)
    finally:
        server.stop(grace=5).wait()
    return 0


def _start_coordinator(args: argparse.Namespace, strategy: Any, config: Any, credentials: Any) -> tuple[Any, ...]:
    """(coordinator, server, port): the key and state files made, the server listening. If
    any step fails, the files it made are removed (removed_on_failure)."""
    from edgerun.federated.auth import KeyPair
    from edgerun.federated.coordinator import Coordinator
    from edgerun.federated.service import serve
    from edgerun.federated.store import Store

    with removed_on_failure(args.state, args.key):
        store = Store(args.state)
        try:
            coordinator = Coordinator(args.model, store, strategy, config, KeyPair.load_or_create(args.key))
            server, port = serve(coordinator, f"{args.host}:{args.port}", credentials)
        except BaseException:
            store.close()
            raise
    return coordinator, server, port


def cmd_client(args: argparse.Namespace) -> int:
    import grpc

    from edgerun.federated.auth import KeyPair
    from edgerun.federated.client import ClientOptions, FederatedClient, channel
    from edgerun.federated.coordinator import CLIENT_ID

    if not CLIENT_ID.fullmatch(args.id):
        raise InputError(f"client id {args.id!r}: expected 1-128 characters of [A-Za-z0-9._:@-], "
                         "starting with a letter or digit")
    from edgerun.runtime.backends import select_backend

    select_backend(args.device)  # device="cuda" without a GPU or numba-cuda: one line now, not every round
    profile = None
    if args.profile is not None:
        from edgerun.runtime.profiles import get_profile

        profile = get_profile(args.profile)  # an unknown name lists the known ones
    x, y = load_data(args.data)
    credentials = None
    if args.tls_ca or args.tls_cert:
        from edgerun.federated.tls import channel_credentials

        credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    token = read_secret(args.token_file, TOKEN_ENV, args.token, "--token") or ""
    key_path = args.key or Path(f"{args.id}.key")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    new_key = not key_path.exists()
    client = FederatedClient(channel(args.coordinator, credentials), args.id, KeyPair.load_or_create(key_path),
                             (x, y), ClientOptions(token=token, profile=profile,
                                                                          device=args.device))
    try:
        client.run()
    except grpc.RpcError as exc:
        refused = exc.code() in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED,
                                 grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT)
        if new_key and client.coordinator_key is None and refused:
            # enrolment definitely refused: the key is no one's (after UNAVAILABLE or a deadline the
            # enrolment may have gone through, and the key is the only way back in)
            key_path.unlink(missing_ok=True)
        raise _refusal(exc, args.coordinator, args.id) from None
    declined = f"; declined rounds {sorted(client.rounds_declined)} (memory)" if client.rounds_declined else ""
    print(f"done: trained in rounds {client.rounds_done}{declined}")
    return 0


def _refusal(exc: Any, target: str, client_id: str) -> ClientRefused:
    """A one-line ClientRefused for a gRPC error of the coordinator at `target`."""
    name = getattr(exc.code(), "name", str(exc.code()))
    details = next(iter((exc.details() or "").splitlines()), "")
    if name == "ALREADY_EXISTS":
        return ClientRefused(f"coordinator {target} refused client {client_id!r} (ALREADY_EXISTS): {details}; "
                             "every device needs its own --id and key file (default: ID.key)")
    if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return ClientRefused(f"coordinator {target} cannot be reached ({name}): {details}")
    return ClientRefused(f"coordinator {target} refused client {client_id!r} ({name}): {details}")


def cmd_simulate(args: argparse.Namespace) -> int:
    from edgerun.federated.simulation import SimulationConfig, plot_history, simulate, write_metrics

    trainable_model(args.model)
    x, y, x_test, y_test = load_data(args.data, test=True)
    check_output(args.export)
    if args.plot is not None:  # before the run, not after it
        require("matplotlib", "plot", "--plot")
    secagg, dp = privacy_options(args)
    config = SimulationConfig(
        num_clients=args.clients, rounds=args.rounds, fraction_fit=args.fraction_fit, partition=args.partition,
        alpha=args.alpha, shards_per_client=args.shards_per_client, drop_probability=args.drop,
        report_goal=args.report_goal, over_selection=args.over_selection, round_timeout=args.round_timeout,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, behaviours=_behaviours(args),
        drop_stage=args.drop_stage, secagg=secagg, dp=dp, compression=args.compression, engine=args.engine,
        ray_address=args.ray_address)
    with tempfile.TemporaryDirectory() as tmp:
        state = args.state or Path(tmp) / "coordinator.db"
        with removed_on_failure(args.state), _progress(args.rounds) as on_round:
            history = simulate(args.model, x, y, x_test, y_test, config, store_path=state, on_round=on_round)
        if args.export is not None:
            version = export_model(state, args.model, args.export)
            print(f"wrote {args.export} (global model version {version})")
    write_metrics(history, args.metrics)
    print(f"wrote {args.metrics}")
    if args.plot is not None:
        plot_history(history, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _behaviours(args: argparse.Namespace) -> tuple:
    from edgerun.federated.simulation import DeviceBehaviour

    if args.slow is None:
        return ()
    share, _, seconds = args.slow.partition(":")
    slow = DeviceBehaviour("slow", float(share), float(seconds or 0), args.drop)
    return (DeviceBehaviour("normal", 1 - slow.share, 0.0, args.drop), slow)


def round_line(record: Any, rounds: int) -> str:
    """'round 2/10 aggregated test accuracy 0.9120': a round's status and test accuracy (or mse)."""
    shown = "".join(f" test {name} {record.metrics[f'test_{name}']:.4f}" for name in ("accuracy", "mse")
                    if record.metrics.get(f"test_{name}") is not None)
    return f"round {record.round}/{rounds} {record.status}{shown}"


@contextmanager
def _progress(rounds: int) -> Iterator[Any]:
    """simulate's on_round: one line per round on stdout, and a bar of the rounds on a terminal."""
    from edgerun.runtime.progress import Progress

    with Progress(rounds, "round", "rounds") as progress:
        def show(record: Any) -> None:
            progress.update(1)
            progress.line(round_line(record, rounds))
        yield show


def cmd_status(args: argparse.Namespace) -> int:
    from edgerun.federated.store import Store

    if not args.state.is_file():
        raise InputError(f"{args.state}: no coordinator state file")
    with Store(args.state) as store:
        latest = store.latest_model()
        status = {"model_version": None if latest is None else latest[0], "clients": len(store.clients()),
                  "current_round": getattr(store.current_round(), "round", None),
                  "rounds": [_round_row(r) for r in store.history()]}
    json.dump(status, sys.stdout, indent=2)
    print()
    return 0


def _round_row(record: Any) -> dict[str, Any]:
    return {"round": record.round, "status": record.status, "metrics": record.metrics,
            "seconds": None if record.finished_at is None else record.finished_at - record.opened_at}


def cmd_export(args: argparse.Namespace) -> int:
    version = export_model(args.state, args.model, args.output, args.version)
    print(f"wrote {args.output}: global model version {version} of {args.state}")
    return 0


def export_model(state: Path, model: Path, output: Path, version: int | None = None) -> int:
    """Write global model `version` (None: the latest) of the coordinator state file `state`
    as a loadable .erm at `output`, the parameters put into `model` (the trainable .erm the
    coordinator ran); returns the version. InputError when a file is missing, the version
    does not exist or the stored parameters do not fit `model`; nothing is written then."""
    from edgerun.federated.codec import PayloadError, decode_arrays
    from edgerun.federated.export import write_global_model
    from edgerun.federated.local import parameter_spec
    from edgerun.federated.store import Store

    if not state.is_file():
        raise InputError(f"{state}: no coordinator state file")
    interpreter = trainable_model(model)
    check_output(output)
    with Store(state) as store:
        latest = store.latest_model()
        if latest is None:
            raise InputError(f"{state}: no global model version yet")
        blob = latest[1] if version in (None, latest[0]) else store.model(version)
    if blob is None:
        raise InputError(f"{state}: no global model version {version}; versions are 0 to {latest[0]}")
    try:
        parameters = decode_arrays(blob, parameter_spec(interpreter))
    except PayloadError as exc:
        raise InputError(f"{state}: version {version if version is not None else latest[0]} does not fit "
                         f"{model}: {exc}") from None
    write_global_model(Path(model).read_bytes(), parameters, output)
    return latest[0] if version is None else version
