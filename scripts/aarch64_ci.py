#!/usr/bin/env python3
"""Run the device-side tests (tests/devices/test_device_side.py) under emulated aarch64.

    sudo python3 scripts/aarch64_ci.py            # as root; after `python3 tasks.py test` made .venv

What it does, each step cached under .cache/aarch64/ (which git ignores):

1. apt-get installs `debootstrap` and `qemu-user-static` when they are missing.
2. root/: a Debian bookworm arm64 root, `debootstrap --foreign --arch=arm64 --variant=minbase
   --include=python3,python3-venv` from the mirror this machine's apt uses (EDGERUN_DEBIAN_MIRROR
   overrides it).
3. wheels/: aarch64 wheels of pyproject.toml's dependencies plus pytest, pinned to the versions
   in .venv so both machines run the same ones (`pip download --platform manylinux..._aarch64
   --only-binary=:all:` on the x86 host).
4. A venv at /opt/venv inside the root with those wheels installed offline (`--no-index
   --find-links`) by the emulated Python, and edgerun copied into its site-packages the way
   pyproject.toml's package-dir maps the repository's folders (refreshed on every run).
5. Natively on x86: the reference results (x86.npz) and a secure-aggregation coordinator with
   two x86 clients on loopback gRPC; then the test module under emulation, its third client.

How binaries run here. Containers often lack binfmt_misc (or must not change it: a handler is
global to the machine), so nothing relies on it. Every arm64 program runs as
`chroot root /usr/bin/qemu-aarch64-static PROGRAM` with the static qemu copied into the root;
inside the chroot the venv's absolute symlinks resolve to the arm64 Python (with
`qemu-aarch64-static -L root` they would resolve to the host's x86 one). For the same reason
debootstrap's second stage, which runs arm64 maintainer scripts by exec, cannot run; what Python
needs of it is done on the host: every package debootstrap downloaded is unpacked with
`dpkg-deb --fsys-tarfile | tar -x --keep-directory-symlink` (dpkg-deb -x would replace merged /usr's
bin -> usr/bin links with folders). An arm64 process cannot exec another arm64 program either, so the venv is made
`--without-pip` and pip runs from Debian's pip wheel. /proc is not mounted in the root (nothing
to unmount after a crash); an empty proc/cpuinfo keeps LLVM (numba) from warning that it cannot
read it, and it then compiles for a generic aarch64 CPU.

Prints which tests ran under emulation, their outcome and the timings; the exit code is pytest's
(1 when the set-up fails, with one line saying why).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "aarch64"
ROOT = CACHE / "root"
WHEELS = CACHE / "wheels"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
TEST = "tests/devices/test_device_side.py"
SUITE, PACKAGES = "bookworm", "python3,python3-venv"
QEMU = "/usr/bin/qemu-aarch64-static"
GUEST_VENV, GUEST_WHEELS, GUEST_TESTS = "/opt/venv", "/opt/edgerun-wheels", "/opt/edgerun-tests"
GUEST_SITE = f"{GUEST_VENV}/lib/python3.11/site-packages"
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64")
EMULATED_TIMEOUT_S = 1200


class SetupError(Exception):
    """A set-up step failed; the message is one line."""


def say(message: str) -> None:
    print(f"aarch64_ci: {message}", flush=True)


def check(command: list[str], **kwargs) -> None:
    """Run `command`; SetupError naming it when it fails."""
    code = subprocess.call(command, **kwargs)
    if code != 0:
        raise SetupError(f"{' '.join(command[:4])} ... failed with exit code {code}")


def ensure_tools() -> bool:
    """apt-get install debootstrap and qemu-user-static unless present; True when it installed."""
    if shutil.which("debootstrap") and Path(QEMU).exists():
        return False
    say("installing debootstrap and qemu-user-static with apt-get")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "debootstrap", "qemu-user-static"]
    if subprocess.call(install) != 0:
        check(["apt-get", "update", "-q"])
        check(install)
    return True


def debian_mirror() -> str:
    """EDGERUN_DEBIAN_MIRROR, else the first URI this machine's apt uses for SUITE."""
    if os.environ.get("EDGERUN_DEBIAN_MIRROR"):
        return os.environ["EDGERUN_DEBIAN_MIRROR"]
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for block in Path(path).read_text().split("\n\n"):
            fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line and line[0] != "#")
            fields = {k.strip().lower(): v.split() for k, v in fields.items()}
            if "deb" in fields.get("types", []) and SUITE in fields.get("suites", []) and fields.get("uris"):
                return fields["uris"][0]
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        for line in Path(path).read_text().splitlines() if Path(path).exists() else []:
            words = [w for w in line.split() if not w.startswith("[") and not w.endswith("]")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    raise SetupError(f"no apt source for {SUITE} found; set EDGERUN_DEBIAN_MIRROR")


def build_root() -> bool:
    """The arm64 root, once (stamp: root/.edgerun-root); True when it was built now."""
    stamp = ROOT / ".edgerun-root"
    want = f"{SUITE} {PACKAGES}\n"
    if stamp.exists() and stamp.read_text() == want:
        return False
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.parent.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    say(f"debootstrap --foreign: Debian {SUITE} arm64 into {ROOT.relative_to(REPO)}")
    check(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", f"--include={PACKAGES}",
           SUITE, str(ROOT), mirror], stdout=subprocess.DEVNULL)
    archives = sorted((ROOT / "var/cache/apt/archives").glob("*.deb"))
    say(f"second stage without binfmt_misc: unpacking {len(archives)} packages on the host")
    for deb in archives:  # dpkg-deb -x, keeping merged /usr's bin -> usr/bin links
        unpack = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        check(["tar", "-x", "--keep-directory-symlink", "-C", str(ROOT)], stdin=unpack.stdout)
        if unpack.wait() != 0:
            raise SetupError(f"dpkg-deb --fsys-tarfile {deb.name} failed with exit code {unpack.returncode}")
        deb.unlink()
    shutil.copy2(QEMU, ROOT / QEMU.lstrip("/"))
    (ROOT / "proc").mkdir(exist_ok=True)
    (ROOT / "proc/cpuinfo").write_text("")
    emulated(["/usr/bin/python3", "-c", "import platform; assert platform.machine() == 'aarch64'"])
    stamp.write_text(want)
    return True


def emulated(argv: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run an arm64 program of the root (a path inside it) under qemu in a chroot, with a clean
    environment plus `env`; SetupError when it fails, unless check=False is given."""
    base = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"} | (env or {})
    command = [shutil.which("chroot") or "/usr/sbin/chroot", str(ROOT), QEMU, *argv]
    strict = kwargs.pop("check", True)
    result = subprocess.run(command, env=base, **kwargs)
    if strict and result.returncode != 0:
        raise SetupError(f"emulated {' '.join(argv[:3])} ... failed with exit code {result.returncode}")
    return result


def requirements() -> list[str]:
    """pyproject.toml's dependencies and pytest, pinned to the versions installed in .venv."""
    names = [dep.split(";")[0] for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
             ["dependencies"]] + ["pytest"]
    names = [n.replace(" ", "") for n in names]
    bare = [n.split("[")[0].split("=")[0].split("<")[0].split(">")[0].split("!")[0].split("~")[0] for n in names]
    code = "import importlib.metadata as m, sys\nfor n in sys.argv[1:]: print(m.version(n))"
    try:
        versions = subprocess.run([str(VENV_PYTHON), "-c", code, *bare], check=True, capture_output=True,
                                  text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as error:
        raise SetupError(f"{VENV_PYTHON.relative_to(REPO)} lacks the project's dependencies "
                         f"(run `python3 tasks.py test` first): {error}") from error
    return [f"{name}=={version}" for name, version in zip(bare, versions, strict=True)]


def download_wheels(reqs: list[str]) -> bool:
    """aarch64 wheels of `reqs` and their dependencies into wheels/, unless the stamp says they are there."""
    stamp = WHEELS / ".requirements"
    if stamp.exists() and stamp.read_text().split() == reqs:
        return False
    shutil.rmtree(WHEELS, ignore_errors=True)
    WHEELS.mkdir(parents=True)
    say(f"pip download: aarch64 wheels of {len(reqs)} requirements")
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    check([str(VENV_PYTHON), "-m", "pip", "download", "-q", "--dest", str(WHEELS), "--only-binary=:all:",
           *platforms, "--python-version", "3.11", "--implementation", "cp", *reqs])
    stamp.write_text("\n".join(reqs) + "\n")
    return True


def install_wheels(reqs: list[str]) -> bool:
    """A venv in the root with `reqs` installed offline by the emulated pip; True when (re)made."""
    venv = ROOT / GUEST_VENV.lstrip("/")
    stamp = venv / ".edgerun-wheels"
    want = "\n".join(reqs + sorted(p.name for p in WHEELS.glob("*.whl"))) + "\n"
    if stamp.exists() and stamp.read_text() == want:
        return False
    shutil.rmtree(venv, ignore_errors=True)
    guest_wheels = ROOT / GUEST_WHEELS.lstrip("/")
    shutil.rmtree(guest_wheels, ignore_errors=True)
    shutil.copytree(WHEELS, guest_wheels, copy_function=os.link)  # same file system: hard links
    say("emulated: python3 -m venv, pip install --no-index (a few minutes once)")
    emulated(["/usr/bin/python3", "-m", "venv", "--without-pip", GUEST_VENV])
    [pip] = [f"/{p.relative_to(ROOT)}/pip" for p in (ROOT / "usr/share/python-wheels").glob("pip-*.whl")]
    emulated([f"{GUEST_VENV}/bin/python", pip, "install", "-q", "--no-index", "--find-links", GUEST_WHEELS,
              "--no-compile", "--no-cache-dir", "--disable-pip-version-check", *reqs])
    stamp.write_text(want)
    return True


def install_edgerun() -> int:
    """Copy edgerun into the root's venv as pyproject.toml's package-dir maps it (a fresh copy
    every run) and the test module next to it; returns the files copied."""
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir, data = tool["package-dir"], tool.get("package-data", {})
    site = ROOT / GUEST_SITE.lstrip("/")
    shutil.rmtree(site / "edgerun", ignore_errors=True)
    copied = 0
    for package in tool["packages"]:
        parent = max((k for k in package_dir if package == k or package.startswith(k + ".")), key=len)
        source = REPO / package_dir[parent] / package[len(parent):].lstrip(".").replace(".", "/")
        target = site / package.replace(".", "/")
        target.mkdir(parents=True, exist_ok=True)
        for path in [*source.glob("*.py"), *(p for pattern in data.get(package, []) for p in source.glob(pattern))]:
            shutil.copy2(path, target / path.name)
            copied += 1
    tests = ROOT / GUEST_TESTS.lstrip("/")
    shutil.rmtree(tests, ignore_errors=True)
    tests.mkdir(parents=True)
    shutil.copy2(REPO / TEST, tests / Path(TEST).name)
    return copied


def native(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """`code` in .venv's Python on x86, in the repository (so `tests` imports)."""
    return subprocess.Popen([str(VENV_PYTHON), "-c", code, *args], cwd=REPO, **kwargs)


def wait_for(path: Path, process: subprocess.Popen, timeout: float) -> str:
    """path's text once it exists; SetupError when `process` ends first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise SetupError(f"the native coordinator exited with code {process.returncode} before listening")
        if time.monotonic() > deadline:
            raise SetupError(f"no {path.name} after {timeout:.0f} s")
        time.sleep(0.2)
    return path.read_text().strip()


def run_tests(workdir: Path, report: Path) -> tuple[int, float]:
    """x86 reference, native coordinator, then pytest under emulation; (pytest's code, seconds)."""
    module = "tests.devices.test_device_side"
    if native(f"import sys; from {module} import write_x86_reference as w; w(sys.argv[1])", str(workdir)).wait():
        raise SetupError("the native x86 reference run failed")
    coordinator = native(f"import sys; from {module} import serve_round as s; s(sys.argv[1])", str(workdir))
    try:
        address = wait_for(workdir / "coordinator.addr", coordinator, timeout=120)
        say(f"native x86 coordinator on {address}; pytest under emulation")
        guest = f"/{workdir.relative_to(ROOT)}"
        env = {"EDGERUN_X86_REFERENCE": guest, "EDGERUN_X86_COORDINATOR": address,
               "NUMBA_CACHE_DIR": "/var/cache/edgerun-numba"}
        start = time.monotonic()
        result = emulated([f"{GUEST_VENV}/bin/python", "-m", "pytest", "-v", "-p", "no:cacheprovider",
                           "--rootdir", GUEST_TESTS, f"--junitxml=/{report.relative_to(ROOT)}",
                           f"{GUEST_TESTS}/{Path(TEST).name}"], env=env, check=False, timeout=EMULATED_TIMEOUT_S)
        return result.returncode, time.monotonic() - start
    finally:
        try:
            coordinator.wait(timeout=150)
        except subprocess.TimeoutExpired:
            coordinator.terminate()
            coordinator.wait(30)


def outcomes(report: Path) -> list[tuple[str, str, float]]:
    """(test, outcome, seconds) from pytest's JUnit XML; [] when there is none."""
    if not report.exists():
        return []
    rows = []
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        rows.append((case.get("name", "?"), outcome, float(case.get("time", 0))))
    return rows


def setup() -> dict[str, tuple[float, bool]]:
    """Every set-up step; {step: (seconds, whether it did the work rather than find it cached)}."""
    steps: dict[str, tuple[float, bool]] = {}

    def step(name: str, function, *args) -> object:
        start = time.monotonic()
        value = function(*args)
        steps[name] = (time.monotonic() - start, bool(value))
        return value

    if os.geteuid() != 0:
        raise SetupError("run as root: it installs packages with apt-get and chroots into the arm64 root")
    if not VENV_PYTHON.exists():
        raise SetupError(".venv/bin/python is missing: run `python3 tasks.py test` first")
    step("apt-get install debootstrap qemu-user-static", ensure_tools)
    step("arm64 root (debootstrap --foreign + unpack)", build_root)
    reqs = requirements()
    step("pip download aarch64 wheels", download_wheels, reqs)
    step("emulated venv + offline pip install", install_wheels, reqs)
    step("copy edgerun into the venv", install_edgerun)
    return steps


def summary(steps: dict[str, tuple[float, bool]], rows: list[tuple[str, str, float]], code: int,
            test_seconds: float) -> None:
    print("\n=== aarch64 (qemu-user, Debian bookworm arm64) summary ===")
    for name, (seconds, did) in steps.items():
        print(f"  set-up {name:45s} {seconds:7.1f} s  {'done now' if did else 'cached'}")
    print(f"  set-up total {sum(s for s, _ in steps.values()):.1f} s")
    for name, outcome, seconds in rows:
        print(f"  emulated {name:70s} {outcome:7s} {seconds:6.1f} s")
    passed = sum(outcome == "passed" for _, outcome, _ in rows)
    print(f"  {passed} of {len(rows)} tests passed under emulation; native reference + emulated tests "
          f"{test_seconds:.1f} s; pytest exit code {code}")


def main() -> int:
    try:
        steps = setup()
    except (SetupError, OSError, subprocess.SubprocessError) as error:
        say(f"set-up failed: {error}")
        return 1
    (ROOT / "tmp").mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="edgerun-aarch64-", dir=ROOT / "tmp"))
    report = workdir / "pytest.xml"
    start = time.monotonic()
    try:
        code, _ = run_tests(workdir, report)
    except (SetupError, OSError, subprocess.SubprocessError) as error:
        say(f"failed: {error}")
        code = 1
    rows = outcomes(report)
    summary(steps, rows, code, time.monotonic() - start)
    shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
