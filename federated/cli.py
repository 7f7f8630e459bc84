"""`edgerun federated coordinator | client | simulate | status`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def add_parser(subparsers: Any) -> None:
    """Register `edgerun federated` and its subcommands."""
    fed = subparsers.add_parser("federated", help="federated learning: coordinator, client, simulation")
    commands = fed.add_subparsers(title="federated commands", metavar="COMMAND")

    c = commands.add_parser("coordinator", help="run a coordinator for a trainable model")
    c.add_argument("--model", type=Path, required=True, help="trainable .erm (from make-trainable)")
    c.add_argument("--rounds", type=int, default=10)
    c.add_argument("--port", type=int, default=8765)
    c.add_argument("--host", default="0.0.0.0")
    c.add_argument("--state", type=Path, default=Path("coordinator.db"), help="SQLite state file")
    c.add_argument("--key", type=Path, default=Path("coordinator.key"), help="Ed25519 key file (created)")
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
    c.add_argument("--fraction-fit", type=float, default=0.5)
    c.add_argument("--min-clients", type=int, default=2)
    c.add_argument("--epochs", type=int, default=1)
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--lr", type=float, default=0.01)
    c.add_argument("--clip-norm", type=float, default=0.0)
    c.add_argument("--round-timeout", type=float, default=600.0)
    c.add_argument("--report-goal", type=float, default=1.0)
    c.add_argument("--tls-cert", type=Path, help="server certificate (PEM); enables TLS")
    c.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    c.add_argument("--tls-client-ca", type=Path, help="require device certificates signed by this CA (mTLS)")
    add_privacy_arguments(c)
    c.set_defaults(func=cmd_coordinator)

    d = commands.add_parser("client", help="run a device client")
    d.add_argument("--coordinator", required=True, help="HOST:PORT")
    d.add_argument("--data", type=Path, required=True, help=".npz with x and y")
    d.add_argument("--id", required=True, help="this device's client id")
    d.add_argument("--key", type=Path, default=Path("device.key"), help="Ed25519 key file (created)")
    d.add_argument("--token-file", type=Path, default=None,
                   help=f"file holding the enrolment token (or set {TOKEN_ENV})")
    d.add_argument("--token", default=None, help="deprecated (visible in the process list): use --token-file")
    d.add_argument("--tls-ca", type=Path, help="CA that signed the coordinator's certificate; enables TLS")
    d.add_argument("--tls-cert", type=Path, help="device certificate for mutual TLS")
    d.add_argument("--tls-key", type=Path, help="device private key for mutual TLS")
    d.set_defaults(func=cmd_client)

    s = commands.add_parser("simulate", help="N virtual devices against a real coordinator on loopback")
    s.add_argument("--model", type=Path, required=True, help="trainable .erm")
    s.add_argument("--data", type=Path, required=True, help=".npz with x, y (and optional x_test, y_test)")
    s.add_argument("--clients", type=int, default=10)
    s.add_argument("--rounds", type=int, default=10)
    s.add_argument("--fraction-fit", type=float, default=0.5)
    s.add_argument("--partition", choices=["iid", "dirichlet", "shards"], default="iid")
    s.add_argument("--alpha", type=float, default=0.5)
    s.add_argument("--shards-per-client", type=int, default=2)
    s.add_argument("--drop", type=float, default=0.0, help="probability a selected device drops out")
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--lr", type=float, default=0.01)
    s.add_argument("--round-timeout", type=float, default=30.0)
    s.add_argument("--report-goal", type=float, default=1.0)
    s.add_argument("--metrics", type=Path, default=Path("rounds.json"), help="per-round metrics (.json or .csv)")
    s.add_argument("--plot", type=Path, default=None, help="PNG of accuracy and loss per round (needs matplotlib)")
    s.add_argument("--slow", default=None, metavar="SHARE:SECONDS",
                   help="a share of devices that take SECONDS longer per round, e.g. 0.2:1.5")
    s.add_argument("--drop-stage", default="start", help="where dropping devices go away: start, a secure-"
                   "aggregation stage (advertise, share, masked, consistency, unmask) or random")
    add_privacy_arguments(s)
    s.set_defaults(func=cmd_simulate)

    t = commands.add_parser("status", help="rounds, clients and metrics of a coordinator state file")
    t.add_argument("--state", type=Path, default=Path("coordinator.db"))
    t.set_defaults(func=cmd_status)


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
                   help="collect only masked updates and learn only their sum (default on)")
    p.add_argument("--secagg-bits", type=int, default=32, help="ring Z_2^bits of the masked updates (<= 32)")
    p.add_argument("--secagg-neighbours", type=int, default=20, help="SecAgg+ neighbours per client")
    p.add_argument("--secagg-clip-range", type=float, default=None, help="per-value quantization bound")
    p.add_argument("--secagg-stage-timeout", type=float, default=10.0, help="seconds per protocol stage")
    p.add_argument("--dp-noise", type=float, default=0.0, help="DP noise multiplier z (0: no DP)")
    p.add_argument("--dp-clip", type=float, default=1.0, help="DP clipping norm S of each client's delta")
    p.add_argument("--dp-delta", type=float, default=1e-5)
    p.add_argument("--dp-epsilon", type=float, default=float("inf"), help="stop training at this epsilon")
    p.add_argument("--dp-mode", choices=["central", "distributed"], default="central")
    p.add_argument("--compression", default="none", help="plain uploads only: none, int8 or topk:F")


def privacy_options(args: argparse.Namespace) -> tuple[Any, Any]:
    """(SecAggOptions or None, DpOptions or None) from the command line."""
    from edgerun.federated.privacy import DpOptions
    from edgerun.federated.secagg.options import SecAggOptions

    secagg = None
    if args.secure_aggregation == "on":
        secagg = SecAggOptions(bits=args.secagg_bits, neighbours=args.secagg_neighbours,
                               clip_range=args.secagg_clip_range, stage_timeout=args.secagg_stage_timeout)
    dp = None
    if args.dp_noise > 0:
        dp = DpOptions(args.dp_noise, args.dp_clip, args.dp_delta, args.dp_epsilon, args.dp_mode)
    return secagg, dp


def cmd_coordinator(args: argparse.Namespace) -> int:
    from edgerun.federated.auth import KeyPair
    from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
    from edgerun.federated.service import serve
    from edgerun.federated.store import Store
    from edgerun.federated.strategies import FedAvg

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
                               report_goal=args.report_goal, enrol_token=token, allowed_keys=allowed,
                               secagg=secagg, dp=dp, compression=args.compression,
                               max_update_norm=args.max_update_norm or None, max_examples=args.max_examples,
                               operator_token=read_secret(args.operator_token_file, OPERATOR_ENV))
    coordinator = Coordinator(args.model, Store(args.state), strategy, config, KeyPair.load_or_create(args.key))
    credentials = None
    if args.tls_cert or args.tls_key:
        from edgerun.federated.tls import server_credentials

        if not (args.tls_cert and args.tls_key):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        credentials = server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
    server, port = serve(coordinator, f"{args.host}:{args.port}", credentials)
    print(f"coordinator listening on port {port}", flush=True)
    try:
        coordinator.run()
        coordinator.wait_until_clients_stopped(timeout=30)
    finally:
        server.stop(grace=5).wait()
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    from edgerun.federated.auth import KeyPair
    from edgerun.federated.client import ClientOptions, FederatedClient, channel

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with np.load(args.data, allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    credentials = None
    if args.tls_ca or args.tls_cert:
        from edgerun.federated.tls import channel_credentials

        credentials = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    client = FederatedClient(channel(args.coordinator, credentials), args.id, KeyPair.load_or_create(args.key), (x, y),
                             ClientOptions(token=read_secret(args.token_file, TOKEN_ENV, args.token, "--token") or ""))
    client.run()
    print(f"done: trained in rounds {client.rounds_done}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from edgerun.federated.simulation import SimulationConfig, plot_history, simulate, write_metrics

    with np.load(args.data, allow_pickle=False) as data:
        x, y = data["x"], data["y"]
        x_test, y_test = (data["x_test"], data["y_test"]) if "x_test" in data.files else (x, y)
    config = SimulationConfig(
        num_clients=args.clients, rounds=args.rounds, fraction_fit=args.fraction_fit, partition=args.partition,
        alpha=args.alpha, shards_per_client=args.shards_per_client, drop_probability=args.drop,
        report_goal=args.report_goal, round_timeout=args.round_timeout, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, behaviours=_behaviours(args), drop_stage=args.drop_stage,
        secagg=privacy_options(args)[0], dp=privacy_options(args)[1], compression=args.compression)
    history = simulate(args.model, x, y, x_test, y_test, config, on_round=_progress(args.rounds))
    print()
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


def _progress(rounds: int) -> Any:
    """A one-line progress bar: rounds done, last status and test accuracy."""
    def show(record: Any) -> None:
        bar = "#" * int(20 * record.round / max(rounds, 1))
        accuracy = record.metrics.get("test_accuracy")
        shown = "" if accuracy is None else f" test accuracy {accuracy:.4f}"
        sys.stdout.write(f"\rround {record.round}/{rounds} [{bar:<20}] {record.status}{shown}   ")
        sys.stdout.flush()
    return show


def cmd_status(args: argparse.Namespace) -> int:
    from edgerun.federated.store import Store

    if not args.state.exists():
        raise FileNotFoundError(f"{args.state}: no coordinator state file")
    store = Store(args.state)
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

