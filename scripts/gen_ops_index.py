"""Regenerate docs/ops.md: every op the runtime implements, with the opset versions its kernels
start at, the module of its reference kernel, its gradient rule and its fast paths.

Everything comes from the registries, not from reading source text: the kernel registry
(runtime.kernels.registry, which also holds the fast paths backends register with `accelerate`;
devices.numba_kernels is imported so the numba backend registers) and the gradient and
training-forward rules (converters.training.rules). Files are found with inspect.getsourcefile
and written relative to the repository root, so edgerun must be imported from this checkout
(an editable install of it, or the development environment's path).

Run: python scripts/gen_ops_index.py
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "ops.md"
# the cuda claims register under numba's CUDA simulator, with or without a GPU (numba reads this
# when it is first imported: before edgerun is)
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
# One column per family of fast paths: numba's (and int8's, still to come) register with
# runtime.kernels.registry.accelerate under that name; cuda's are the device kernels that claim
# the op (devices.cuda.claims), imported under numba's CUDA simulator so that no GPU is needed.
FAST_PATHS = ("numba", "cuda", "int8")
BACKEND_MODULES = ("edgerun.devices.numba_kernels",)
DOMAIN_NAMES = {"": "ai.onnx"}  # the registry keys ONNX's default domain as ""
DOMAIN_NOTES = {"": " (ONNX's standard ops)", "edgerun": " (edgerun's training ops: gradients, losses, optimizers)"}


def source_path(obj: object) -> str:
    """The repository-relative path (POSIX) of the file that defines `obj`. RuntimeError when
    the file is outside this checkout (edgerun imported from another tree)."""
    path = Path(inspect.getsourcefile(inspect.unwrap(obj))).resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        raise RuntimeError(f"{obj!r} is defined in {path}, outside this checkout {ROOT}: "
                           "import edgerun from this checkout (pip install -e .)") from None


def link(text: str, path: str) -> str:
    """A markdown link from docs/ to a repository file."""
    return f"[{text}](../{path})"


def version_ranges(versions: list[int]) -> str:
    """Since-versions [6, 14] as '6-13, 14+': the opset range each kernel serves."""
    ranges = []
    for since, following in zip(versions, versions[1:] + [None], strict=True):
        if following is None:
            ranges.append(f"{since}+")
        else:
            ranges.append(str(since) if following == since + 1 else f"{since}-{following - 1}")
    return ", ".join(ranges)


def rule_cell(rule: Callable | None, training_form: Callable | None) -> str:
    """The gradient column: each rule as a link to its module, named by its function."""
    cells = []
    for fn, suffix in ((rule, ""), (training_form, " (training form)")):
        if fn is None:
            continue
        fn = inspect.unwrap(fn)
        path = source_path(fn)
        name = Path(path).name
        if "<locals>" not in fn.__qualname__:
            name += f": {fn.__qualname__}"
        cells.append(link(name, path) + suffix)
    return "<br>".join(cells)


def cuda_claims() -> dict[str, Callable]:
    """The cuda backend's claims by op, named as the registry names ops ({} without numba-cuda)."""
    cuda = importlib.import_module("edgerun.devices.cuda")
    try:
        cuda.load()
    except ImportError:
        return {}
    return importlib.import_module("edgerun.devices.cuda.claims").claims_by_op()


def collect() -> list[dict[str, str]]:
    """One row per registered op, sorted by domain ('' first) then op name."""
    from edgerun.converters.training.rules import gradient_rule, training_forward_rule
    from edgerun.runtime.kernels import registry

    for name in BACKEND_MODULES:
        importlib.import_module(name)  # registers the backend's fast paths
    fast = {backend: registry.accelerated_ops(backend) for backend in FAST_PATHS}
    fast["cuda"] = cuda_claims()
    rows = []
    for qualified, versions in registry.kernel_versions().items():
        domain, _, op = qualified.rpartition(":")
        files = dict.fromkeys(source_path(cls) for _, cls in versions)  # ordered, unique
        row = {
            "domain": domain, "op": op,
            "versions": version_ranges([since for since, _ in versions]),
            "kernel": ", ".join(link(path.removeprefix("runtime/kernels/"), path) for path in files),
            "gradient": rule_cell(gradient_rule(op), training_forward_rule(op)),
        }
        for backend, mixins in fast.items():
            mixin = mixins.get(qualified)
            row[backend] = link(mixin.__name__, source_path(mixin)) if mixin else ""
        rows.append(row)
    return sorted(rows, key=lambda r: (r["domain"] != "", r["domain"], r["op"]))


def render() -> str:
    """The whole of docs/ops.md."""
    rows = collect()
    by_domain: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_domain[row["domain"]].append(row)
    lines = [
        "# Ops",
        "",
        "Generated by `scripts/gen_ops_index.py` from the kernel registry, the backends' fast paths and",
        "the gradient rules; do not edit by hand. Run `python scripts/gen_ops_index.py` after adding a",
        "kernel, a version, a gradient rule or a fast path (`tests/test_docs.py` checks it is current).",
        "",
        "- **versions**: the opset ranges the registry's kernels serve (a node of version v runs the",
        "  kernel registered with the largest start <= v); `1+` means every version.",
        "- **kernel**: the module of the numpy reference kernel, in `runtime/kernels/`.",
        "- **gradient rule**: how `make_trainable` back-propagates through the op",
        "  (`converters/training/rules/`); *training form*: the op it becomes in the train signature.",
        "- **" + "**, **".join(FAST_PATHS) + "**: the fast path a backend registers for the op",
        "  (`runtime.kernels.registry.accelerate`); the reference kernel runs everywhere else. For",
        "  **cuda**, the GPU kernel that claims the op (`devices/cuda/claims.py`; a claim may still",
        "  leave a step on the host for a dtype or attribute it does not cover).",
        "",
        f"{len(rows)} ops: " + ", ".join(f"{len(g)} in {DOMAIN_NAMES.get(d, d)}" for d, g in by_domain.items()) + ".",
    ]
    header = ["op", "versions", "kernel", "gradient rule", *FAST_PATHS]
    for domain, group in by_domain.items():
        lines += ["", f"## Domain {DOMAIN_NAMES.get(domain, domain)}{DOMAIN_NOTES.get(domain, '')}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for r in group:
            cells = [f"`{r['op']}`", r["versions"], r["kernel"], r["gradient"], *(r[b] for b in FAST_PATHS)]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## By kernel module", ""]
    modules: dict[str, list[str]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["op"]):
        for path in r["kernel"].split(", "):
            modules[path].append(f"`{r['op']}`")
    for path in sorted(modules):
        lines.append(f"- {path}: {', '.join(modules[path])}")
    return "\n".join(lines) + "\n"


def main() -> int:
    OUT.write_text(render())
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
