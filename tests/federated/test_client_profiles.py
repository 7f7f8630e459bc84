"""Device profiles on the federated client: a client whose profile cannot hold the round's train
step declines it (the coordinator records why and the round goes on without it), and a client
process under a 256 MiB memory cap takes part in a whole secure round over loopback gRPC."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgerun.cli import main
from edgerun.federated import partition
from edgerun.federated.auth import KeyPair
from edgerun.federated.client import ClientOptions, FederatedClient, channel
from edgerun.federated.strategies import FedAvg
from edgerun.runtime import DeviceProfile, Interpreter
from edgerun.runtime.profiles import profile_names
from tests.converters.training.models import digits
from tests.federated.capped_client import secure_round_with_a_process
from tests.federated.secagg.test_grpc import start
from tests.federated.test_rounds import TOKEN, model_path, run_rounds  # noqa: F401 - fixture

__all__ = ["model_path"]
MiB = 1 << 20
BATCH = 64  # a train step holds the same at batches 1 to 16 (the gradients dominate), more at 64


def train_step_bytes(path, batch: int) -> int:
    """What a train step of the model at `path` holds at `batch` (memory_report's total)."""
    it = Interpreter(path, memory_budget=1 << 40)
    it.resize_inputs({"x": (batch, 64), "labels": (batch,)}, signature="train")
    return it.memory_report("train").total_bytes


@pytest.mark.parametrize("where", ["at load", "at the round's batch"])
def test_a_client_whose_profile_is_too_small_declines_and_the_round_goes_on(model_path, tmp_path, where):  # noqa: F811
    at_one, at_batch = train_step_bytes(model_path, 1), train_step_bytes(model_path, BATCH)
    assert at_one < at_batch
    budget = 1024 if where == "at load" else (at_one + at_batch) // 2
    tiny = DeviceProfile("tiny", 1, budget, ("float32",))
    x, y, _, _ = digits()
    shards = [(x[i], y[i]) for i in partition.iid(320, 4, seed=1)]
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=4, min_available_clients=4, local_epochs=1,
                      batch_size=BATCH, client_lr=0.1)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=1)  # secure aggregation on
    clients = [FederatedClient(channel(target), f"dev{i}", KeyPair.generate(), shard,
                               ClientOptions(token=TOKEN, profile=tiny if i == 0 else None))
               for i, shard in enumerate(shards)]
    began = time.monotonic()
    run_rounds(coordinator, server, clients)
    assert time.monotonic() - began < 30  # the round did not wait for its 60 s deadline
    [record] = coordinator.store.history()
    assert record.status == "aggregated" and record.metrics["reports"] == 3
    reason = coordinator.declines[(1, "dev0")]
    assert reason.startswith(f"a train step at batch {BATCH} does not fit: signature ")
    assert f"over the memory budget of {budget} " in reason and "device profile 'tiny'" in reason
    assert "+ weights " in reason and "use a smaller batch" in reason
    assert coordinator.status()["declined"] == [{"round": 1, "client": "dev0", "reason": reason}]
    assert clients[0].rounds_declined == {1: reason} and clients[0].rounds_done == []
    assert all(c.rounds_done == [1] for c in clients[1:])


def test_a_client_with_a_profile_that_fits_trains(model_path, tmp_path):  # noqa: F811
    x, y, _, _ = digits()
    shards = [(x[i], y[i]) for i in partition.iid(240, 3, seed=2)]
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=3, min_available_clients=3, local_epochs=1,
                      batch_size=BATCH, client_lr=0.1)
    coordinator, server, target = start(model_path, tmp_path, strategy, rounds=1)
    clients = [FederatedClient(channel(target), f"dev{i}", KeyPair.generate(), shard,
                               ClientOptions(token=TOKEN, profile="rpi-zero2")) for i, shard in enumerate(shards)]
    run_rounds(coordinator, server, clients)
    assert [r.status for r in coordinator.store.history()] == ["aggregated"] and coordinator.declines == {}
    assert all(c.rounds_done == [1] and c.interpreter.profile.name == "rpi-zero2" for c in clients)


def test_the_client_command_refuses_an_unknown_profile_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    code = main(["federated", "client", "--coordinator", "127.0.0.1:1", "--data", "ok.npz", "--id", "dev0",
                 "--profile", "tpu"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert f"unknown device profile 'tpu'; known profiles: {', '.join(profile_names())}" in err
    assert not (tmp_path / "dev0.key").exists()


# A small-device set-up: glibc's malloc reserves 64 MiB of address space per arena (up to 8 per
# core), each thread's stack is RLIMIT_STACK (8 MiB) and OpenBLAS keeps a 32 MiB buffer per
# thread, and numba maps ~150 MiB of LLVM: none of it resident, all of it counted by RLIMIT_AS
# (a default client process peaks at ~750 MiB of address space without numba, ~920 MiB with it,
# for 81 / 142 MB resident; see benchmarks/bench_client_memory.py).
SMALL_DEVICE = {"MALLOC_ARENA_MAX": "1", "OPENBLAS_NUM_THREADS": "1"}


def test_a_client_process_under_a_256_mib_address_space_cap_finishes_a_secure_round(tmp_path):
    got = secure_round_with_a_process(tmp_path, ["--cap-mb", "256", "--limit", "as", "--stack-kib", "1024",
                                                 "--no-numba"], SMALL_DEVICE)
    assert got["rc"] == 0, got["output"][-3000:]
    assert got["round"] == "aggregated" and got["reports"] == 3 and got["declined"] == {}
    assert "done: trained in rounds [1]" in got["output"] and not got["numba"]
    assert got["cap_bytes"] == 256 * MiB and got["vm_peak_kib"] * 1024 <= 256 * MiB
    assert got["vm_hwm_kib"] * 1024 < 150e6  # the target for peak RSS


def test_a_client_process_with_default_settings_under_a_256_mib_data_cap_finishes_a_secure_round(tmp_path):
    """RLIMIT_DATA bounds the writable memory (heap, anonymous mappings, thread stacks), not the
    reserved ranges and mapped libraries RLIMIT_AS counts: numba stays importable here."""
    got = secure_round_with_a_process(tmp_path, ["--cap-mb", "256", "--limit", "data"])
    assert got["rc"] == 0, got["output"][-3000:]
    assert got["round"] == "aggregated" and got["reports"] == 3
    assert "done: trained in rounds [1]" in got["output"] and got["cap_bytes"] == 256 * MiB


def test_a_client_that_cannot_hold_the_model_asks_once_per_evaluation_not_in_a_loop(model_path, tmp_path):  # noqa: F811
    from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
    from edgerun.federated.service import serve
    from edgerun.federated.store import Store

    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=2, min_available_clients=3, local_epochs=1, batch_size=16,
                      client_lr=0.1)
    coordinator = Coordinator(model_path, Store(tmp_path / "c.db"), strategy,
                              CoordinatorConfig(rounds=1, enrol_token=TOKEN, secagg=None, round_timeout=20,
                                                evaluate_every=1, evaluation_timeout=3.0), KeyPair.generate())
    server, port = serve(coordinator)
    x, y, _, _ = digits()
    shards = [(x[i], y[i]) for i in partition.iid(240, 3, seed=1)]
    tiny = DeviceProfile("tiny", 1, 1024, ("float32",))  # cannot even load the model
    clients = [FederatedClient(channel(f"127.0.0.1:{port}"), f"dev{i}", KeyPair.generate(), shard,
                               ClientOptions(token=TOKEN, profile=tiny if i == 0 else None))
               for i, shard in enumerate(shards)]
    calls = {c.client_id: 0 for c in clients}
    for client in clients:
        original = client._get_work

        def counted(stop, client=client, original=original):
            calls[client.client_id] += 1
            return original(stop)

        client._get_work = counted
    run_rounds(coordinator, server, clients)
    assert [r.status for r in coordinator.store.history()] == ["aggregated"]
    assert clients[0].evaluations_done == [1] and clients[0].rounds_declined  # asked, refused, remembered
    assert calls["dev0"] <= 3 * max(calls["dev1"], calls["dev2"])  # was hundreds: a tight loop on EVALUATE
