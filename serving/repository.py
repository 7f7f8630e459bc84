"""The model repository: `<repo>/<model>/<version>/model.erm` plus optional `<repo>/<model>/config.pbtxt`.

Loading is availability-preserving: a version is read, verified and warmed up off the event loop
and only then swapped in; versions that fail (broken or half-copied files) are recorded with their
reason and retried only when their files change, and the versions already serving stay. Requests
hold the ServedModel they started with, so unloading never cuts one short.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgerun.runtime.errors import ErrorCode
from edgerun.serving import metrics
from edgerun.serving.config import CONFIG_NAME, MODEL_FILE, ConfigError, ModelSettings, read_settings
from edgerun.serving.errors import ServingError, not_found, quote
from edgerun.serving.model import ServedModel

log = logging.getLogger("edgerun.serving")
Fingerprint = tuple[int, int]
NAME_MAX = 255  # bytes in a directory name (longer ones make stat() fail rather than say no)
MODEL_SUFFIXES = (".erm", ".onnx", ".tflite")  # a file so named at the top level is a misplaced model


@dataclass
class ModelEntry:
    """What the repository knows of one model: ready versions, failures and file fingerprints."""

    name: str
    settings: ModelSettings | None = None
    ready: dict[int, ServedModel] = field(default_factory=dict)
    failed: dict[int, tuple[Fingerprint, str]] = field(default_factory=dict)
    loaded_from: dict[int, Fingerprint] = field(default_factory=dict)
    config_fp: Fingerprint | None = None
    error: str = ""
    layout: str = ""  # why the folder holds no <version>/model.erm, when it holds none

    def reasons(self) -> str:
        """Why the model has no ready version, in one line ('' when nothing is known)."""
        return self.error or self.layout or "; ".join(reason for _, reason in self.failed.values())

    def latest(self) -> ServedModel | None:
        return self.ready[max(self.ready)] if self.ready else None


def _plain_version(version: str) -> bool:
    """True for a version string worth looking up: ASCII decimal digits, at most 18 of them."""
    return 0 < len(version) <= 18 and version.isascii() and version.isdigit()


def _layout_problem(model_dir: Path) -> str:
    """Why `model_dir` holds no `<version>/model.erm`, naming what it holds instead."""
    name = model_dir.name
    try:
        children = sorted(model_dir.iterdir())
    except OSError:
        return "folder unreadable"
    if (model_dir / MODEL_FILE).is_file():
        return (f"{name}/{MODEL_FILE} is not in a version folder: move it to {name}/1/{MODEL_FILE} "
                f"(layout <model>/<version>/{MODEL_FILE})")
    folders = [c.name for c in children if c.is_dir()]
    numbered = [f for f in folders if _plain_version(f)]
    if numbered:
        return (f"version folder(s) {', '.join(numbered[:5])} hold no {MODEL_FILE} "
                f"(layout <model>/<version>/{MODEL_FILE})")
    if folders:
        return (f"folder(s) {', '.join(quote(f) for f in folders[:5])} are not version numbers "
                f"(layout <model>/<version>/{MODEL_FILE}, the version 1, 2, ...)")
    return f"no version folders (layout <model>/<version>/{MODEL_FILE})"


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


class Repository:
    """Loads and serves the models of one repository directory.

    `mode`: 'none' (load everything once), 'poll' (rescan every `poll_s`), 'explicit' (load or
    unload on request; `startup_models` are loaded at start). Files changed less than `settle_s`
    ago are left for the next scan, so copies in progress are not even tried.
    """

    def __init__(self, root: Path, mode: str = "none", poll_s: float = 2.0, settle_s: float = 0.3,
                 startup_models: tuple[str, ...] = (), device: str = "auto") -> None:
        if mode not in ("none", "poll", "explicit"):
            raise ValueError(f"model control mode must be none, poll or explicit, got {mode!r}")
        self.root = Path(root)
        self.mode, self.poll_s, self.settle_s = mode, poll_s, settle_s
        self.startup_models = startup_models
        self.device = device  # for models whose config does not say (ServedModel.load)
        self.models: dict[str, ModelEntry] = {}
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task | None = None

    async def start(self) -> None:
        """Initial load (all models, or `startup_models` in explicit mode); starts polling in poll mode."""
        names = list(self.startup_models) if self.mode == "explicit" else self._model_dirs()
        for name, reason in self._stray_files():
            log.warning("model repository entry %s: %s", name, reason)
        for name in names:
            try:  # one bad model must not keep the server (or the other models) from starting
                await self.load(name)
            except ServingError as exc:
                log.error("model %s: %s", name, exc.message)
            except Exception:
                log.exception("loading model %s failed", name)
        if self.mode == "poll":
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()

    def _model_dirs(self) -> list[str]:
        try:
            return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError as exc:
            log.error("cannot list model repository: %s", exc.strerror)
            return []

    def _stray_files(self) -> list[tuple[str, str]]:
        """(name, reason) for each model file lying at the top of the repository, not in a folder."""
        try:
            files = sorted(p.name for p in self.root.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES)
        except OSError:
            return []
        return [(name, f"a file, not a model folder: models are laid out as <model>/<version>/{MODEL_FILE} "
                       f"(e.g. {name.rsplit('.', 1)[0]}/1/{MODEL_FILE})") for name in files]

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                present = set(self._model_dirs())
                names = sorted(present | set(self.models))
            except Exception:  # never let the poller die
                log.exception("repository poll failed")
                continue
            for name in names:
                try:  # one bad model must not keep the others from loading
                    if name in present:
                        await self.load(name)
                    else:
                        await self.unload(name)
                except ServingError:
                    pass  # removed meanwhile
                except Exception:
                    log.exception("repository poll of model %s failed", name)

    # --- lookups ------------------------------------------------------------------------------

    def get(self, name: str, version: str = "") -> ServedModel:
        """The ready ServedModel for `name` and `version` ('' = the highest ready version).
        NOT_FOUND for an unknown model or version, UNAVAILABLE if the model has no ready version."""
        entry = self.models.get(name)
        if entry is None:
            raise not_found(f"unknown model {quote(name)}")
        if not version:
            model = entry.latest()
            if model is None:
                raise ServingError(ErrorCode.UNAVAILABLE, f"model {name!r} has no ready version")
            return model
        model = entry.ready.get(int(version)) if _plain_version(version) else None
        if model is None:
            raise not_found(f"model {name!r} has no ready version {quote(version)}; ready: {sorted(entry.ready)}")
        return model

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.get(name, version)
        except ServingError:
            return False
        return True

    def index(self) -> list[tuple[str, str, str, str]]:
        """(model, version, state, reason) for every version known, failed ones included."""
        rows = [(name, "", "UNAVAILABLE", reason) for name, reason in self._stray_files()]
        for name in sorted(set(self._model_dirs()) | set(self.models)):
            entry = self.models.get(name)
            if entry is None:
                rows.append((name, "", "UNAVAILABLE", "not loaded"))
                continue
            for problem in (entry.error, entry.layout):
                if problem:
                    rows.append((name, "", "UNAVAILABLE", problem))
            for version in sorted(set(entry.ready) | set(entry.failed)):
                if version in entry.ready:
                    rows.append((name, str(version), "READY", ""))
                else:
                    rows.append((name, str(version), "UNAVAILABLE", entry.failed[version][1]))
        return rows

    def publish_metrics(self) -> None:
        """Move every ready version's statistics into the Prometheus counters."""
        for entry in self.models.values():
            for model in entry.ready.values():
                metrics.publish(model)

    def loaded_count(self) -> int:
        return sum(len(e.ready) for e in self.models.values())

    # --- loading ------------------------------------------------------------------------------

    async def load(self, name: str) -> ModelEntry:
        """Bring model `name` in line with its directory: load new or changed versions the policy
        selects, drop versions no longer selected once a replacement is ready. NOT_FOUND if the
        directory does not exist; errors of single versions are recorded, not raised."""
        if (not name or "/" in name or name.startswith(".") or len(name.encode()) > NAME_MAX
                or not (self.root / name).is_dir()):
            raise not_found(f"unknown model {quote(name)}")
        async with self._lock:
            entry = self.models.setdefault(name, ModelEntry(name))
            await self._sync(entry)
            metrics.MODELS_LOADED.set(self.loaded_count())
            return entry

    async def unload(self, name: str) -> None:
        """Stop serving every version of `name`; in-flight requests finish on their version."""
        async with self._lock:
            entry = self.models.pop(name, None)
            if entry is None:
                raise not_found(f"unknown model {quote(name)}")
            for model in entry.ready.values():
                model.close()
            log.info("unloaded model %s", name)
            metrics.MODELS_LOADED.set(self.loaded_count())

    async def _sync(self, entry: ModelEntry) -> None:
        model_dir = self.root / entry.name
        config_fp = _fingerprint(model_dir / CONFIG_NAME)
        if entry.settings is None or config_fp != entry.config_fp:
            try:
                settings = read_settings(model_dir)
            except (ConfigError, OSError) as exc:
                entry.error = str(exc) if isinstance(exc, ConfigError) else "config file unreadable"
                log.error("model %s: bad config, keeping the versions it serves: %s", entry.name, entry.error)
                return
            reload_all = entry.settings is not None
            entry.settings, entry.config_fp, entry.error = settings, config_fp, ""
            if reload_all:
                entry.loaded_from.clear()
                entry.failed.clear()
        available = self._versions(model_dir)
        layout = "" if available else _layout_problem(model_dir)
        if layout != entry.layout:
            entry.layout = layout
            if layout:
                log.warning("model %s: %s", entry.name, layout)
        wanted = entry.settings.policy.select(list(available))
        fresh: dict[int, ServedModel] = {}
        for version in wanted:
            fp = available[version]
            if entry.loaded_from.get(version) == fp and version in entry.ready:
                fresh[version] = entry.ready[version]
                continue
            if version in entry.failed and entry.failed[version][0] == fp:
                continue
            if time.time() - fp[1] / 1e9 < self.settle_s:
                continue  # still being written: look again next scan
            model = await self._load_version(entry, version, fp)
            if model is not None:
                fresh[version] = model
        self._swap(entry, wanted, fresh)

    def _versions(self, model_dir: Path) -> dict[int, Fingerprint]:
        versions = {}
        try:
            children = list(model_dir.iterdir())
        except OSError:
            return {}
        for child in children:
            if _plain_version(child.name) and child.is_dir():
                fp = _fingerprint(child / MODEL_FILE)
                if fp is not None:
                    versions[int(child.name)] = fp
        return versions

    async def _load_version(self, entry: ModelEntry, version: int, fp: Fingerprint) -> ServedModel | None:
        path = self.root / entry.name / str(version) / MODEL_FILE
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(ServedModel.load, entry.settings, version, path, self.device)
        except Exception as exc:  # a broken version must never take the server down
            reason = f"failed to load: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            reason = reason.replace(str(self.root), "<repository>")
            entry.failed[version] = (fp, reason)
            metrics.LOAD_FAILURES.labels(entry.name, str(version)).inc()
            log.error("model %s version %d %s", entry.name, version, reason)
            return None
        entry.failed.pop(version, None)
        entry.loaded_from[version] = fp
        log.info("loaded model %s version %d in %.1f ms", entry.name, version, (time.perf_counter() - started) * 1e3)
        return model

    def _swap(self, entry: ModelEntry, wanted: list[int], fresh: dict[int, ServedModel]) -> None:
        """Serve `fresh`; while fewer than the policy wants are ready, keep old ready versions
        (highest first) so a failed new version never leaves the model without one."""
        limit = len(wanted) if entry.settings.policy.kind != "latest" else entry.settings.policy.count
        keep = dict(fresh)
        for version in sorted(entry.ready, reverse=True):
            if len(keep) >= max(limit, 1):
                break
            if version not in keep and (version in wanted or len(fresh) < limit):
                keep[version] = entry.ready[version]
        for version, model in entry.ready.items():
            if keep.get(version) is not model:
                model.close()
                log.info("model %s version %d retired", entry.name, version)
        entry.ready = keep
