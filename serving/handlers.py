"""Plain request handlers shared by the gRPC and REST front ends; they know nothing of either.

Each method returns plain Python data or raises ServingError with a status and a message that is
safe to show clients (no paths, no tracebacks).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from edgerun.runtime.errors import ErrorCode
from edgerun.serving import metrics
from edgerun.serving.classify import classification_counts, classify
from edgerun.serving.datatypes import datatype_of
from edgerun.serving.errors import ServingError, quote
from edgerun.serving.repository import Repository
from edgerun.serving.types import InferRequest, InferResponse
from edgerun.serving.validate import decode_inputs, select_outputs

log = logging.getLogger("edgerun.serving")
SERVER_NAME = "edgerun"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["classification", "binary_tensor_data", "model_repository", "model_configuration", "statistics",
              "schedule_policy"]
PLATFORM = "edgerun_erm"


class Handlers:
    """The server's operations over one Repository. `model_control` enables load/unload."""

    def __init__(self, repository: Repository, model_control: bool = False, control_log=None) -> None:
        self.repository = repository
        self.model_control = model_control
        self.control_log = control_log  # shares load/unload with the other workers, if any
        self.accepting = True

    # --- health and metadata ------------------------------------------------------------------

    def server_live(self) -> bool:
        return True

    def server_ready(self) -> bool:
        """Ready while accepting requests and every model found at start-up has a ready version."""
        return self.accepting and all(e.ready for e in self.repository.models.values())

    def model_ready(self, name: str, version: str = "") -> bool:
        return self.repository.is_ready(name, version)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        """Name, ready versions, platform, inputs and outputs (name, datatype, shape with -1)."""
        model = self.repository.get(name, version)
        entry = self.repository.models[name]
        return {
            "name": name,
            "versions": [str(v) for v in sorted(entry.ready)],
            "platform": PLATFORM,
            "inputs": [_tensor_meta(info) for info in model.inputs.values()],
            "outputs": [_tensor_meta(info) for info in model.outputs.values()],
        }

    def model_config(self, name: str, version: str = ""):
        """The ModelConfig proto message of the version (defaults filled in)."""
        return self.repository.get(name, version).config

    def model_statistics(self, name: str = "", version: str = "") -> list:
        """[(ServedModel)] whose stats to report: one version, every version of a model, or all."""
        if name:
            if version:
                return [self.repository.get(name, version)]
            self.repository.get(name)
            return list(self.repository.models[name].ready.values())
        return [m for e in self.repository.models.values() for m in e.ready.values()]

    # --- repository ---------------------------------------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        rows = self.repository.index()
        return [{"name": n, "version": v, "state": s, "reason": r}
                for n, v, s, r in rows if not ready_only or s == "READY"]

    async def load_model(self, name: str) -> None:
        """Load or reload `name`. UNAVAILABLE if model control is off, NOT_FOUND for an unknown
        model, INVALID_ARGUMENT (with the reason) if no version of it could be loaded."""
        self._check_control()
        entry = await self.repository.load(name)
        if self.control_log is not None:
            self.control_log.record(name, "load")
        if not entry.ready:
            reasons = entry.reasons() or "no versions"
            raise ServingError(ErrorCode.INVALID_ARGUMENT, f"model {quote(name)} has no loadable version: {reasons}")

    async def unload_model(self, name: str) -> None:
        self._check_control()
        await self.repository.unload(name)
        if self.control_log is not None:
            self.control_log.record(name, "unload")

    def _check_control(self) -> None:
        if not self.model_control:
            raise ServingError(ErrorCode.UNAVAILABLE, "model control is disabled (start the server with "
                                                      "--model-control-mode explicit)")

    # --- inference ----------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        """Validate, run (batched if configured) and select outputs. Raises ServingError; counts the
        request as a success or failure in the metrics and statistics."""
        start = time.perf_counter()
        model = None
        try:
            if not self.accepting:
                raise ServingError(ErrorCode.UNAVAILABLE, "server is shutting down")
            model = self.repository.get(request.model, request.version)
            arrays = decode_inputs(model.name, model.inputs, request.inputs, model.settings.max_batch_size)
            names = select_outputs(model.name, model.outputs, request.outputs)
            counts = classification_counts(request.outputs)
            outputs, queued = await model.execute(arrays)
            selected = {n: outputs[n] for n in names}
            for n, count in counts.items():
                selected[n] = classify(n, selected[n], count)
        except ServingError as exc:
            self._failed(request, model, exc.status.name, time.perf_counter() - start)
            raise
        except Exception:
            log.exception("inference on model %s failed", quote(request.model))
            self._failed(request, model, "INTERNAL", time.perf_counter() - start)
            raise ServingError(ErrorCode.INTERNAL, "internal error") from None
        seconds = time.perf_counter() - start
        model.stats.request(True, seconds, queued)
        return InferResponse(model.name, model.version_str, request.id, selected)

    def refused(self, model: str, reason: str) -> None:
        """Count an inference request refused before it reached `infer` (malformed, unauthorized,
        too large...): `reason` is the gRPC status name. The model label is `model` only when the
        repository knows that name, else ''."""
        metrics.record_failure(model if model in self.repository.models else "", reason)

    def _failed(self, request: InferRequest, model, reason: str, seconds: float) -> None:
        if model is not None:
            model.stats.request(False, seconds)
        metrics.record_failure(model.name if model is not None else "", reason)


def _tensor_meta(info) -> dict[str, Any]:
    return {"name": info.name, "datatype": datatype_of(info.dtype), "shape": [int(d) for d in info.shape]}
