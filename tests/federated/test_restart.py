"""kill -9 of the coordinator mid-round, restart, finish: no published model lost,
no round duplicated or lost, no update accepted twice."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from edgerun.converters.training import make_trainable
from edgerun.federated import partition
from edgerun.federated.auth import KeyPair
from edgerun.federated.client import ClientOptions, FederatedClient, channel
from edgerun.federated.store import Store
from edgerun.runtime import save_model
from tests.converters.training.models import digits, mlp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_coordinator(model, tmp_path, port, rounds):
    return subprocess.Popen(
        [sys.executable, "-m", "edgerun", "federated", "coordinator", "--model", str(model),
         "--rounds", str(rounds), "--port", str(port), "--host", "127.0.0.1", "--state", str(tmp_path / "c.db"),
         "--key", str(tmp_path / "c.key"), "--token", "t", "--fraction-fit", "1.0", "--min-clients", "3",
         "--lr", "0.1", "--round-timeout", "60", "--secure-aggregation", "off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(condition, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_kill_9_mid_round_then_restart_finishes_the_run(tmp_path):
    model = save_model(make_trainable(mlp((64, 32, 10)), optimizer=("sgd", {"lr": 0.1})), tmp_path / "m.train.erm")
    x, y, _, _ = digits()
    port = free_port()
    coordinator = start_coordinator(model, tmp_path, port, rounds=4)
    slow = threading.Event()
    slow.set()

    def data(index, delay):
        calls = []

        def load():
            calls.append(1)
            if slow.is_set() and len(calls) > 1:  # from round 2 on (long-polled rounds follow at once):
                time.sleep(delay)  # staggered reports keep round 2 open while we kill the coordinator
            return x[index], y[index]
        return load

    stop = threading.Event()
    options = ClientOptions(token="t", backoff_initial=0.2, backoff_max=1.0, max_retries=60)
    clients = [FederatedClient(channel(f"127.0.0.1:{port}"), f"dev{i}", KeyPair.generate(), data(index, 1.5 * i),
                               options)
               for i, index in enumerate(partition.iid(300, 3, seed=0))]
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: (tmp_path / "c.db").exists())
        store = Store(tmp_path / "c.db")
        assert wait_for(lambda: any(r.status == "aggregated" for r in store.history()))
        assert wait_for(lambda: (store.current_round() or 0) and store.current_round().round == 2
                        and len(store.reported(2)) >= 1)
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait(10)
        before = {r.round: r.status for r in store.history()}
        slow.clear()
        coordinator = start_coordinator(model, tmp_path, port, rounds=4)
        assert coordinator.wait(120) == 0
        history = store.history()
        assert [r.round for r in history] == [1, 2, 3, 4] and all(r.status == "aggregated" for r in history)
        assert before == {1: "aggregated"}
        assert store.latest_model()[0] == 4 and all(store.model(v) is not None for v in range(5))
        for r in range(1, 5):
            reported = store.reported(r)
            assert len(reported) == len(set(reported)) == 3
    finally:
        stop.set()
        coordinator.kill()
        for t in threads:
            t.join(10)
    assert all(c.rounds_done == sorted(set(c.rounds_done)) for c in clients)
    assert np.all([2 in c.rounds_done for c in clients])
