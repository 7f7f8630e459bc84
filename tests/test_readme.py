"""The README's five-minute tour runs as written, and its install and quick-start sections agree
with the project.

Every fenced block after a `<!-- tour -->` line in README.md runs in order in one empty
folder, as a user pasting them would run them:

- a `bash` block line by line (a trailing `\\` continues a line), each in `bash -c` with the
  working directory carried from one line to the next as an interactive shell does (so
  `mkdir t && cd t` works); a line must exit 0;
- a line ending in `&` starts a background job (its own process group, output kept per job);
  `kill %N` sends SIGTERM to job N's process group, as bash does, and the job must then exit 0;
  `wait` waits for every job, each of which must exit 0;
- a `python` block runs as a script with the interpreter under test.

`edgerun`, `python` and `python3` resolve to the interpreter under test (`python -m edgerun`),
first on PATH; curl and the shell's tools come from the machine. The README's ports (8000-8002
for serve, 8765 for the coordinator) are replaced by free ones, in the commands and the Python
blocks alike; nothing else is changed. Then the test checks what the commands wrote and printed.
`run_tour(python, folder)` is the runner, for a test with another interpreter (a fresh venv
with `edgerun[all]`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerun import Interpreter

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TOUR_MARK = "<!-- tour -->"
README_PORTS = (8000, 8001, 8002, 8765)
COMMAND_TIMEOUT = 120  # seconds one command (or a `wait`, or a stopped job) may take
# extras that are not for users: the test suite, benchmarks, development and fixture generation
NOT_USER_EXTRAS = {"test", "bench", "dev", "tflite-fixtures"}


@dataclass
class Block:
    language: str
    text: str


@dataclass
class Tour:
    """What the tour printed: (command or 'python block N', stdout + stderr) in order, and the
    output of each background job by its command line."""

    folder: Path
    outputs: list[tuple[str, str]] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)

    def output(self, prefix: str) -> str:
        found = [out for command, out in self.outputs if command.startswith(prefix)]
        assert len(found) == 1, f"expected one tour command starting with {prefix!r}, found {len(found)}"
        return found[0]

    def job(self, prefix: str) -> list[str]:
        return [out for command, out in self.jobs.items() if command.startswith(prefix)]


def tour_blocks(text: str) -> list[Block]:
    """The fenced blocks that follow a `<!-- tour -->` line (blank lines between are allowed)."""
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        if lines[i].strip() == TOUR_MARK:
            i += 1
            while not lines[i].strip():
                i += 1
            fence = re.fullmatch(r"```(\w+)", lines[i].strip())
            assert fence, f"README line {i + 1}: {TOUR_MARK} must be followed by a fenced block with a language"
            end = lines.index("```", i + 1)
            blocks.append(Block(fence.group(1), "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return blocks


def shell_commands(text: str) -> list[str]:
    """A bash block's commands: comment-only and blank lines dropped, `\\` continuations joined."""
    commands, pending = [], ""
    for line in text.split("\n"):
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def with_ports(text: str, ports: dict[int, int]) -> str:
    return re.sub(r"\b(\d{4})\b", lambda m: str(ports.get(int(m.group(1)), m.group(1))), text)


CURL_STAND_IN = Path(__file__).with_name("readme_curl.py")


def shim_environment(python: str, bin_dir: Path) -> dict[str, str]:
    """PATH with `edgerun`, `python` and `python3` running `python` first."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "edgerun").write_text(f'#!/bin/sh\nexec "{python}" -m edgerun "$@"\n')
    (bin_dir / "edgerun").chmod(0o755)
    for name in ("python", "python3"):
        (bin_dir / name).unlink(missing_ok=True)
        (bin_dir / name).symlink_to(python)
    if shutil.which("curl") is None:  # a machine without curl: a stand-in for the two ways the tour uses it
        (bin_dir / "curl").write_text(f'#!/bin/sh\nexec "{python}" "{CURL_STAND_IN}" "$@"\n')
        (bin_dir / "curl").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


class Shell:
    """Runs a tour's commands the way an interactive bash session would (see the module doc)."""

    def __init__(self, folder: Path, env: dict[str, str], logs: Path, tour: Tour) -> None:
        self.cwd, self.env, self.logs, self.tour = folder, env, logs, tour
        self.jobs: dict[int, tuple[str, subprocess.Popen, Path]] = {}

    def run(self, command: str) -> None:
        background = re.fullmatch(r"(.*?)\s*&", command)
        if background:
            self.start(background.group(1))
        elif command == "wait":
            for number in sorted(self.jobs):
                self.finish(number, stop=False)
        elif match := re.fullmatch(r"kill((?:\s+%\d+)+)", command):
            for number in (int(n) for n in re.findall(r"%(\d+)", match.group(1))):
                assert number in self.jobs, f"{command!r}: no job %{number}"
                self.finish(number, stop=True)
        else:
            self.foreground(command)

    def foreground(self, command: str) -> None:
        cwd_file = self.logs / "cwd"
        script = f"{command}\n__status=$?\npwd > {cwd_file}\nexit $__status\n"
        done = subprocess.run(["bash", "-c", script], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{output}"
        self.cwd = Path(cwd_file.read_text().strip())
        self.tour.outputs.append((command, output))

    def start(self, command: str) -> None:
        number = max(self.jobs, default=0) + 1
        log = self.logs / f"job{len(self.tour.jobs) + len(self.jobs)}.log"
        with log.open("w") as out:
            process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.cwd, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.jobs[number] = (command, process, log)

    def finish(self, number: int, stop: bool) -> None:
        command, process, log = self.jobs.pop(number)
        if stop:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            status = process.wait(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"job {command!r} still ran after {COMMAND_TIMEOUT} s:\n{log.read_text()}") from None
        self.tour.jobs[command] = log.read_text()
        assert status == 0, f"job {command!r} exited {status}:\n{log.read_text()}"

    def stop_all(self) -> None:
        for _, process, _ in self.jobs.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def run_tour(python: str, folder: Path, readme: Path = README) -> Tour:
    """Run the README's tour blocks in `folder` (empty) with `python`; see the module doc."""
    blocks = tour_blocks(readme.read_text())
    ports = dict(zip(README_PORTS, free_ports(len(README_PORTS)), strict=True))
    logs = folder / ".tour-logs"  # the runner's own files, beside the tour's folder
    env = shim_environment(python, logs / "bin")
    work = folder / "start"
    work.mkdir()
    tour = Tour(folder=work)
    shell = Shell(work, env, logs, tour)
    try:
        for index, block in enumerate(blocks):
            text = with_ports(block.text, ports)
            if block.language == "bash":
                for command in shell_commands(text):
                    shell.run(command)
            elif block.language == "python":
                script = logs / f"block{index}.py"
                script.write_text(text)
                done = subprocess.run([python, str(script)], cwd=shell.cwd, env=env, capture_output=True,
                                      text=True, timeout=COMMAND_TIMEOUT)
                output = done.stdout + done.stderr
                assert done.returncode == 0, f"tour python block {index} failed:\n{text}\n---\n{output}"
                tour.outputs.append((f"python block {index}", output))
            else:
                raise AssertionError(f"tour block {index}: no runner for language {block.language!r}")
        assert not shell.jobs, f"the tour leaves jobs running: {[c for c, _, _ in shell.jobs.values()]}"
    finally:
        shell.stop_all()
    tour.folder = shell.cwd
    return tour


# ------------------------------------------------------------------------------------------ tests


def test_tour_runs_as_written(tmp_path):
    check_tour(run_tour(sys.executable, tmp_path), tmp_path)


def check_tour(tour: Tour, tmp_path: Path) -> None:
    """What each step of the tour must have printed and written (run_tour ran it in `tmp_path`)."""
    here = tour.folder
    assert here.name == "edgerun-tour" and here.parent == tmp_path / "start"

    # convert, inspect, run
    assert "converted mlp.onnx -> mlp.erm" in tour.output("edgerun convert")
    assert "input  x: float32 [?, 16]" in tour.output("edgerun inspect")
    x = np.load(here / "x.npy")
    local = Interpreter(here / "mlp.erm").run({"x": x})["y"]
    np.testing.assert_allclose(np.load(here / "out.npz")["y"], local, rtol=1e-6)

    # serve: curl's answer is the interpreter's on the same input; the server stopped cleanly
    (infer,) = [command for command, _ in tour.outputs if command.startswith("curl -s ") and "/infer" in command]
    request = json.loads(re.search(r"-d '(.*)'", infer).group(1))["inputs"][0]
    answer = json.loads(tour.output(infer))["outputs"][0]
    sent = np.array(request["data"], np.float32).reshape(request["shape"])
    assert answer["name"] == "y" and answer["shape"] == [1, 3]
    np.testing.assert_allclose(answer["data"], Interpreter(here / "mlp.erm").run({"x": sent})["y"].ravel(),
                               rtol=1e-6)
    (served,) = tour.job("edgerun serve")
    assert "1 model version(s) ready" in served and "supervisor stopped" in served

    # train: the loss falls, the accuracy rises, on the data the tour made
    epochs = json.loads((here / "mlp.trained.metrics.json").read_text())
    assert len(epochs) == 3 and epochs[-1]["loss"] < epochs[0]["loss"] and epochs[-1]["accuracy"] > 0.85
    assert Interpreter(here / "mlp.trained.erm").signatures["serving_default"].inputs["x"].shape == (-1, 16)

    # federated simulation: five rounds, each evaluated; the last one learnt the task
    rounds = json.loads((here / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5] and {r["status"] for r in rounds} == {"aggregated"}
    assert rounds[-1]["test_accuracy"] > 0.8

    # coordinator and two devices: both trained in the three rounds, the state says so, the
    # exported global model classifies the held-out examples
    for device in ("phone-1", "phone-2"):
        (log,) = [out for command, out in tour.jobs.items() if f"--id {device} " in command]
        assert "done: trained in rounds [1, 2, 3]" in log, log
    status = json.loads(tour.output("edgerun federated status"))
    assert status["model_version"] == 3 and status["clients"] == 2
    assert [(r["round"], r["status"], r["metrics"]["reports"]) for r in status["rounds"]] == [
        (1, "aggregated", 2), (2, "aggregated", 2), (3, "aggregated", 2)]
    data = np.load(here / "train.npz")
    predicted = Interpreter(here / "global.erm").run({"x": data["x_test"]})["y"].argmax(axis=1)
    assert (predicted == data["y_test"]).mean() > 0.8
    assert tour.output("edgerun run global.erm").startswith("y: float32 [2, 3]")

    # the Python API block: trained, and simulated five rounds
    api = tour.outputs[-1][1]
    assert re.search(r"trained: loss [\d.]+, test accuracy 0\.(8|9)\d\d", api), api
    assert re.search(r"federated test accuracy per round: \[[^]]*0\.[89]\d*\]", api), api


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n{title}\n")
    level = title.split(" ")[0]
    end = re.compile(rf"\n#{{1,{len(level)}}} ").search(text, start + len(title) + 2)
    return text[start : end.start() if end else len(text)]


def test_install_table_lists_every_user_extra():
    """The extras table names exactly pyproject's user-facing extras; `all` holds every other."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    user = set(extras) - NOT_USER_EXTRAS
    table = set(re.findall(r"^\| `([a-z-]+)` \|", readme_section("## Install"), re.MULTILINE))
    assert table == user, f"README extras {sorted(table)} != pyproject's user extras {sorted(user)}"
    assert "all" in table


def test_quick_start_is_two_commands():
    section = readme_section("### Quick start")
    (block,) = re.findall(r"\n```\n(.*?)\n```", section, re.DOTALL)
    assert block.split("\n") == ["python3 tasks.py demo", "python3 tasks.py test"]


def test_tour_blocks_are_found():
    """The runner sees the tour: the blocks in order, with the commands the issue asks for."""
    blocks = tour_blocks(README.read_text())
    commands = [c for b in blocks if b.language == "bash" for c in shell_commands(b.text)]
    for wanted in ("edgerun convert", "edgerun inspect", "edgerun run", "edgerun serve", "edgerun make-trainable",
                   "edgerun train", "edgerun federated simulate", "edgerun federated coordinator",
                   "edgerun federated client", "kill %1", "wait"):
        assert any(c.startswith(wanted) for c in commands), f"the tour has no {wanted!r}"
    assert sum(c.startswith("edgerun federated client") for c in commands) == 2
    assert [b.language for b in blocks].count("python") == 3
