"""Load test of `edgerun serve` with tritonclient.grpc: throughput and p50/p90/p99 end to end.

    .venv/bin/python benchmarks/bench_serving.py [--duration 5] [--requests 100000] [--markdown]

Everything runs on loopback: a server process (`python -m edgerun serve`) and `--client-processes`
load generator processes (default 2), each running closed-loop tritonclient.grpc.aio clients
with their own connection. Every scenario is bounded by
a request count and by time. Scenarios:

  single      MLP at concurrency 1 with a synchronous tritonclient.grpc client and with
              tritonclient.http (binary data), each in its own spawned process: p50/p90/p99 of
              edgerun (on its default event loop: uvloop where installed), of edgerun on asyncio's
              own loop (--event-loop asyncio, when uvloop is installed), of edgerun with
              --busy-poll-us 300, and of a bare transport stub
              (benchmarks/_serving_stub.py: grpc.aio and asyncio answering a canned response,
              the floor any Python server on this stack starts from), in alternating blocks
  latency     MLP 64-32-10 and CNN 3x16x16 at concurrency 1, 8, 32, one worker, no batching;
              beside each, the Interpreter's own p50 for one batch-1 run in this process
  batching    at concurrency 32 with dynamic batching (max 32, 20 ms) vs without, on the CNN 3x16x16
              and on an AlexNet-style CNN 3x32x32 with a 4096-4096-10 fully connected head
  workers     a wider CNN on 3x64x64 (compute-bound: ~0.2 GFLOP a request) at concurrency 32 with
              1 and 2 worker processes

Comparisons (batching, workers) keep both servers up and measure them in alternating blocks of
duration/2 seconds, `--rounds` each, reporting each side's median block: background load on a
shared machine then hits both sides alike.
  volume      --requests MLP requests at concurrency 32 (two workers): errors must be 0
  reload      the same, in poll mode, while 5 new model versions are dropped into the repository

The client runs on the same cores as the server, so figures include the load generator's cost.
Outputs are checked against the Interpreter before timing.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from benchmarks._harness import machine, print_table

SHAPES = {"mlp": (64,), "cnn": (3, 16, 16), "wide": (3, 64, 64), "alex": (3, 32, 32)}
CLIENT_PROCESSES = 2  # load generator processes (--client-processes); each runs asyncio clients
BATCHING = "max_batch_size: 32\ndynamic_batching { max_queue_delay_microseconds: 20000 }\n"


def build_models(folder: Path) -> dict[str, Path]:
    """mlp.erm, mlp2.erm (other weights), cnn.erm (3x16x16), wide.erm and alex.erm."""
    from edgerun.converters import from_onnx
    from edgerun.runtime.writer import save_model
    from tests.onnx_models import make_cnn, make_mlp

    models = {"mlp": make_mlp(), "mlp2": make_mlp(seed=7), "cnn": make_cnn(), "wide": make_wide(),
              "alex": make_alex()}
    paths = {}
    for name, model in models.items():
        paths[name] = folder / f"{name}.erm"
        save_model(from_onnx(model), paths[name])
    return paths


def _he(rng, *shape):
    return (rng.standard_normal(shape) * (2.0 / np.prod(shape[1:])) ** 0.5).astype(np.float32)


def make_wide():
    """x [batch, 3, 64, 64] -> Conv 3->32, Relu, Conv 32->32, Relu, MaxPool 2, Conv 32->64, Relu (all
    3x3 pad 1), GlobalAveragePool, Flatten, Gemm 64->10 -> y: a CNN whose compute (about 0.2 GFLOP)
    outweighs the per-request protocol work, to show what a second core adds."""
    from onnx import TensorProto, helper

    from tests.onnx_models import make_model

    rng = np.random.default_rng(5)
    weights = {"w1": _he(rng, 32, 3, 3, 3), "w2": _he(rng, 32, 32, 3, 3), "w3": _he(rng, 64, 32, 3, 3),
               "fw": _he(rng, 10, 64), "fb": np.zeros(10, np.float32)}
    node = helper.make_node
    nodes = [node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             node("Relu", ["c1"], ["r1"], name="relu1"),
             node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             node("Relu", ["c2"], ["r2"], name="relu2"),
             node("MaxPool", ["r2"], ["p2"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             node("Conv", ["p2", "w3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
             node("Relu", ["c3"], ["r3"], name="relu3"),
             node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
             node("Flatten", ["g"], ["f"], name="flatten", axis=1),
             node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])
    return make_model(nodes, [x], [y], weights, name="wide")


def make_alex():
    """x [batch, 3, 32, 32] -> Conv 3->16 3x3 pad 1, Relu, MaxPool 2, Flatten (4096), Gemm 4096->4096,
    Relu, Gemm 4096->10 -> y: an AlexNet-style fully connected head (64 MiB), random float32 weights."""
    from onnx import TensorProto, helper

    from tests.onnx_models import make_model

    rng = np.random.default_rng(3)

    weights = {"cw": _he(rng, 16, 3, 3, 3), "cb": np.zeros(16, np.float32), "f1w": _he(rng, 4096, 4096),
               "f1b": np.zeros(4096, np.float32), "f2w": _he(rng, 10, 4096), "f2b": np.zeros(10, np.float32)}
    node = helper.make_node
    nodes = [node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             node("Relu", ["c"], ["r"], name="relu"),
             node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             node("Flatten", ["p"], ["f"], name="flatten", axis=1),
             node("Gemm", ["f", "f1w", "f1b"], ["h"], name="fc1", transB=1),
             node("Relu", ["h"], ["hr"], name="relu_fc"),
             node("Gemm", ["hr", "f2w", "f2b"], ["y"], name="fc2", transB=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])
    return make_model(nodes, [x], [y], weights, name="alex")


def make_repo(folder: Path, models: dict[str, Path], names: list[str], config: str = "") -> Path:
    for name in names:
        (folder / name / "1").mkdir(parents=True)
        shutil.copyfile(models[name], folder / name / "1" / "model.erm")
        if config:
            (folder / name / "config.pbtxt").write_text(config)
    return folder


class Server:
    """`python -m edgerun serve` on fixed loopback ports; waits until every worker serves."""

    def __init__(self, repo: Path | None, log: Path, workers: int = 1, *extra: str, port: int = 18731) -> None:
        """With `repo` None, the bare transport stub (benchmarks/_serving_stub.py) instead."""
        self.url, self.http_url = f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"
        self.stub = repo is None
        cmd = [sys.executable, "-m", "edgerun", "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
               "--grpc-port", str(port), "--http-port", str(port + 1), "--metrics-port", str(port + 2),
               "--workers", str(workers), *extra]
        if self.stub:
            cmd = [sys.executable, str(ROOT / "benchmarks" / "_serving_stub.py"), str(port), str(port + 1)]
        self.log = log
        self.out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.process.poll() is None:
            if log.read_text().count("serving gRPC on") >= workers:
                return
            time.sleep(0.2)
        raise RuntimeError(f"server did not start:\n{log.read_text()}")

    def stop(self) -> int:
        """SIGTERM; the exit code (0 for the stub, which just dies)."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self.out.close()
        return 0 if self.stub else code


def _client_process(url, model, shape, clients, budget, ready, start, deadline, out) -> None:
    """Run `clients` closed-loop tritonclient.grpc.aio clients, each on its own connection, `budget`
    requests each at most, until `deadline` (time.time()); put (latencies µs, errors, first error
    messages, last end time)."""
    import asyncio

    import tritonclient.grpc.aio as ta

    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    # a channel-local subchannel pool gives each client its own TCP connection (by default channels
    # to one target share one, which SO_REUSEPORT would then send to a single worker)
    own = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1),
           ("grpc.use_local_subchannel_pool", 1)]
    lat: list[float] = []
    errors, messages, ends = [0], [], []

    async def loop(client, tensor) -> None:
        clock = time.perf_counter
        for _ in range(budget):
            if time.time() >= deadline.value:
                break
            t0 = clock()
            try:
                await client.infer(model, [tensor])
                lat.append((clock() - t0) * 1e6)
            except Exception as exc:  # noqa: BLE001 - counted
                errors[0] += 1
                messages.append(str(exc)[:200])
        ends.append(time.time())

    async def main() -> None:
        pairs = []
        for _ in range(clients):
            client = ta.InferenceServerClient(url, channel_args=own)
            tensor = ta.InferInput("x", [1, *shape], "FP32")
            tensor.set_data_from_numpy(x)
            for _ in range(5):  # warm up the connection
                await client.infer(model, [tensor])
            pairs.append((client, tensor))
        ready.put(True)
        while not start.is_set():
            await asyncio.sleep(0.001)
        await asyncio.gather(*(loop(c, t) for c, t in pairs))
        for client, _ in pairs:
            await client.close()

    asyncio.run(main())
    out.put((np.array(lat), errors[0], messages[:3], max(ends)))


def _single_process(kind, url, model, shape, duration, requests, out) -> None:
    """One synchronous client (tritonclient.grpc or tritonclient.http with binary data) sending
    requests back to back; put (latencies µs, errors)."""
    if kind == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    client = tc.InferenceServerClient(url)
    tensor = tc.InferInput("x", [1, *shape], "FP32")
    if kind == "grpc":
        tensor.set_data_from_numpy(x)
        outputs = None
    else:
        tensor.set_data_from_numpy(x, binary_data=True)
        outputs = [tc.InferRequestedOutput("y", binary_data=True)]
    for _ in range(200):  # warm up
        client.infer(model, [tensor], outputs=outputs)
    lat, errors = [], 0
    clock = time.perf_counter
    deadline = clock() + duration
    while clock() < deadline and len(lat) < requests:
        t0 = clock()
        try:
            client.infer(model, [tensor], outputs=outputs)
            lat.append((clock() - t0) * 1e6)
        except Exception:  # noqa: BLE001 - counted
            errors += 1
    client.close()
    out.put((np.array(lat), errors))


def single_variants() -> list[tuple[str, tuple[str, ...] | None]]:
    """(label, serve arguments) of the single scenario; None = the bare transport stub."""
    from edgerun.serving.event_loop import uvloop_installed

    loops = [("edgerun --event-loop asyncio", ("--event-loop", "asyncio"))] if uvloop_installed() else []
    return [("edgerun", ()), *loops, ("edgerun --busy-poll-us 300", ("--busy-poll-us", "300")),
            ("bare transport stub", None)]


SINGLE_VARIANTS = single_variants()


def run_single(server: Server, model: str, kind: str, duration: float, requests: int) -> dict:
    """Concurrency 1 with one synchronous client of `kind` ('grpc' or 'http') in a spawned process."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    url = server.url if kind == "grpc" else server.http_url
    proc = ctx.Process(target=_single_process, args=(kind, url, model, SHAPES[model], duration, requests, out))
    proc.start()
    lat, errors = out.get(timeout=duration + 120)
    proc.join()
    p50, p90, p99 = np.percentile(lat, [50, 90, 99]) if lat.size else (0, 0, 0)
    return {"ok": int(lat.size), "errors": errors, "messages": [], "rps": lat.size / max(lat.sum() / 1e6, 1e-9),
            "p50": p50, "p90": p90, "p99": p99}


def run_load(url: str, model: str, concurrency: int, duration: float, requests: int,
             during=None, processes: int = CLIENT_PROCESSES) -> dict:
    """Closed-loop load at `concurrency`; `during()` runs in this process while the load runs."""
    ctx = mp.get_context("spawn")
    procs_n = min(concurrency, processes)
    per_proc = [concurrency // procs_n + (i < concurrency % procs_n) for i in range(procs_n)]
    budget = -(-requests // concurrency)
    ready, out, start, deadline = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 1e18)
    procs = [ctx.Process(target=_client_process, args=(url, model, SHAPES[model], n, budget, ready, start,
                                                       deadline, out)) for n in per_proc]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    t0 = time.time()
    deadline.value = t0 + duration
    start.set()
    if during is not None:
        during()
    results = [out.get(timeout=duration + 120) for _ in procs]
    for p in procs:
        p.join()
    lat = np.concatenate([r[0] for r in results])
    wall = max(r[3] for r in results) - t0
    p50, p90, p99 = np.percentile(lat, [50, 90, 99]) if lat.size else (0, 0, 0)
    return {"ok": int(lat.size), "errors": sum(r[1] for r in results), "messages": sum((r[2] for r in results), []),
            "rps": lat.size / wall, "p50": p50, "p90": p90, "p99": p99, "wall": wall}


def interpreter_p50(path: Path, shape: tuple[int, ...], runs: int = 2000, x=None) -> float:
    """The Interpreter's median µs for one batch-1 run (or of input `x`), in this process, one BLAS thread."""
    from threadpoolctl import threadpool_limits

    from edgerun.runtime.interpreter import Interpreter

    it = Interpreter(path)
    x = {"x": np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32) if x is None else x}
    with threadpool_limits(1):
        for _ in range(50):
            it.run(x)
        times = np.empty(runs)
        for i in range(runs):
            t0 = time.perf_counter_ns()
            it.run(x)
            times[i] = (time.perf_counter_ns() - t0) / 1e3
    return float(np.median(times))


def check_outputs(url: str, model: str, path: Path) -> None:
    """The served output equals the Interpreter's, or RuntimeError."""
    import tritonclient.grpc as tg

    from edgerun.runtime.interpreter import Interpreter

    x = np.random.default_rng(1).standard_normal((1, *SHAPES[model])).astype(np.float32)
    tensor = tg.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    got = tg.InferenceServerClient(url).infer(model, [tensor]).as_numpy("y")
    if not np.allclose(got, Interpreter(path).run({"x": x})["y"], rtol=1e-5, atol=1e-6):
        raise RuntimeError(f"{model}: served output differs from the Interpreter's")


def compare(servers: dict, model: str, concurrency: int, rounds: int, block_s: float,
            processes: int = CLIENT_PROCESSES) -> dict[str, dict]:
    """Throughput of several idle-when-not-measured servers, measured in alternating blocks of
    `block_s` (the order rotates each round) so that changes in background load hit all alike.
    Returns label -> the run_load result of its median-throughput block."""
    blocks: dict[str, list[dict]] = {label: [] for label in servers}
    labels = list(servers)
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            blocks[label].append(run_load(servers[label].url, model, concurrency, block_s, 10**9,
                                          processes=processes))
    return {label: sorted(runs, key=lambda x: x["rps"])[len(runs) // 2] | {"errors": sum(x["errors"] for x in runs)}
            for label, runs in blocks.items()}


def drop_versions(repo: Path, models: dict[str, Path], count: int, every: float) -> None:
    """Copy versions 2..count+1 of the MLP (alternating weights) into the repository, `every` s apart."""
    for i in range(count):
        time.sleep(every)
        version = repo / "mlp" / str(i + 2)
        version.mkdir()
        tmp = version / "model.erm.part"  # written, then renamed: as a careful deploy script would
        shutil.copyfile(models["mlp2" if i % 2 == 0 else "mlp"], tmp)
        tmp.rename(version / "model.erm")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per latency/throughput scenario")
    parser.add_argument("--requests", type=int, default=100_000, help="requests of the volume and reload runs")
    parser.add_argument("--only", nargs="*",
                        default=["single", "latency", "batching", "workers", "volume", "reload"])
    parser.add_argument("--rounds", type=int, default=5, help="alternating blocks per side in comparisons")
    parser.add_argument("--client-processes", type=int, default=CLIENT_PROCESSES,
                        help="load generator processes; the clients are spread over them")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    models = build_models(work)
    failed = []
    rows = []

    def scenario(label, repo, model, concurrency, workers=1, extra=(), requests=None, during=None, duration=None):
        server = Server(repo, work / f"{label}-{concurrency}.log", workers, *extra)
        try:
            check_outputs(server.url, model, models[model])
            r = run_load(server.url, model, concurrency, duration or args.duration, requests or 10**9, during,
                         args.client_processes)
        finally:
            code = server.stop()
        if code != 0:
            failed.append(f"{label}: server exit code {code}")
        if r["errors"]:
            failed.append(f"{label} c={concurrency}: {r['errors']} errors, e.g. {r['messages'][:1]}")
        rows.append([label, model, concurrency, workers, r["ok"], r["errors"], f"{r['rps']:.0f}",
                     f"{r['p50']:.0f}", f"{r['p90']:.0f}", f"{r['p99']:.0f}"])
        return r

    results = {}
    plain = make_repo(work / "plain", models, ["mlp", "cnn", "wide", "alex"])
    if "single" in args.only:
        servers = {}
        try:
            for i, (label, extra) in enumerate(SINGLE_VARIANTS):
                repo = None if extra is None else plain
                servers[label] = Server(repo, work / f"single-{i}.log", 1, *(extra or ()), port=18761 + 10 * i)
                if repo is not None:
                    check_outputs(servers[label].url, "mlp", models["mlp"])
            blocks: dict[tuple[str, str], list[dict]] = {(v[0], kind): [] for v in SINGLE_VARIANTS
                                                         for kind in ("grpc", "http")}
            labels = list(servers)
            for r in range(args.rounds):  # alternating blocks, as in compare()
                for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                    for kind in ("grpc", "http"):
                        blocks[(label, kind)].append(run_single(servers[label], "mlp", kind, args.duration / 2, 10**9))
        finally:
            codes = [server.stop() for server in servers.values()]
        failed.extend(f"single: server exit code {c}" for c in codes if c)
        for (label, kind), runs in blocks.items():
            r = sorted(runs, key=lambda x: x["p50"])[len(runs) // 2]
            results[("single", label, kind)] = r
            errors = sum(x["errors"] for x in runs)
            if errors:
                failed.append(f"single {label} {kind}: {errors} errors")
            rows.append([f"single, sync tritonclient.{kind}, {label} (median of {args.rounds})", "mlp", 1, 1,
                         r["ok"], errors, f"{r['rps']:.0f}", f"{r['p50']:.0f}", f"{r['p90']:.0f}", f"{r['p99']:.0f}"])
    if "latency" in args.only:
        for model in ("mlp", "cnn"):
            print(f"Interpreter p50 {model} batch 1: {interpreter_p50(models[model], SHAPES[model]):.1f} us")
            for c in (1, 8, 32):
                results[(model, c)] = scenario("latency", plain, model, c)
    def comparison(key, model, variants):
        servers = {}
        try:
            for i, (label, repo, workers) in enumerate(variants):
                servers[label] = Server(repo, work / f"{key}-{i}.log", workers, port=18741 + 10 * i)
                check_outputs(servers[label].url, model, models[model])
            got = compare(servers, model, 32, args.rounds, args.duration / 2, args.client_processes)
        finally:
            codes = [server.stop() for server in servers.values()]
        failed.extend(f"{key}: server exit code {c}" for c in codes if c)
        for label, workers in ((v[0], v[2]) for v in variants):
            r = got[label]
            if r["errors"]:
                failed.append(f"{label}: {r['errors']} errors")
            rows.append([f"{label} (median of {args.rounds})", model, 32, workers, r["ok"], r["errors"],
                         f"{r['rps']:.0f}", f"{r['p50']:.0f}", f"{r['p90']:.0f}", f"{r['p99']:.0f}"])
        first, second = (got[v[0]]["rps"] for v in variants)
        results[key] = second / first

    if "batching" in args.only:
        batched = make_repo(work / "batched", models, ["cnn", "alex"], BATCHING)
        comparison("batching", "cnn", [("no batching", plain, 1), ("batching", batched, 1)])
        for r in (1, 32):
            x = np.zeros((r, *SHAPES["alex"]), np.float32)
            per_row = interpreter_p50(models["alex"], SHAPES["alex"], 30, x) / r
            print(f"Interpreter alex batch {r}: {per_row:.0f} us/row")
        comparison("batching-alex", "alex", [("no batching", plain, 1), ("batching", batched, 1)])
    if "workers" in args.only:
        print(f"Interpreter p50 wide batch 1: {interpreter_p50(models['wide'], SHAPES['wide'], 200):.1f} us")
        comparison("workers", "wide", [("1 worker", plain, 1), ("2 workers", plain, 2)])
    if "volume" in args.only:
        scenario("volume", plain, "mlp", 32, 2, requests=args.requests, duration=3600)
    if "reload" in args.only:
        live = make_repo(work / "live", models, ["mlp"])
        reload_args = ("--model-control-mode", "poll", "--repository-poll-secs", "0.5")
        est = args.requests / 3000  # spread the 5 drops over roughly the run's expected length
        scenario("reload x5", live, "mlp", 32, 2, reload_args, args.requests, duration=3600,
                 during=lambda: drop_versions(live, models, 5, max(0.5, est / 6)))
        versions = sorted(int(p.name) for p in (live / "mlp").iterdir())
        print(f"reload: repository now holds versions {versions}")
    print_table(["scenario", "model", "concurrency", "workers", "ok", "errors", "req/s", "p50 us", "p90 us",
                 "p99 us"], rows, args.markdown)
    if "batching" in results:
        print(f"dynamic batching / none, CNN at concurrency 32: {results['batching']:.2f}x (target >= 1.5x)")
        print(f"dynamic batching / none, AlexNet-style CNN at concurrency 32: {results['batching-alex']:.2f}x")
    if "workers" in results:
        print(f"2 workers / 1 worker, CNN 3x64x64 ('wide') at concurrency 32: {results['workers']:.2f}x")
    for kind in ("grpc", "http"):
        if ("single", "edgerun", kind) in results:
            figures = ", ".join(f"{label} {results[('single', label, kind)]['p50']:.0f} us"
                                for label, _ in SINGLE_VARIANTS)
            print(f"MLP p50 at concurrency 1, sync tritonclient.{kind}: {figures} (target <= 400 us)")
    if ("mlp", 1) in results:
        print(f"MLP p50 at concurrency 1: {results[('mlp', 1)]['p50']:.0f} us (target <= 400 us)")
    shutil.rmtree(work, ignore_errors=True)
    for line in failed:
        print(f"FAILED: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
