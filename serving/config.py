"""A model's settings: the optional `<repo>/<model>/config.pbtxt` (Triton's text format, the subset
in protos/model_config.proto) filled in with defaults and checked against the model's signature."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from edgerun.serving.datatypes import CONFIG_TYPES, datatype_of
from edgerun.serving.protos import model_config_pb2 as mc

CONFIG_NAME = "config.pbtxt"
WORK_BUDGET = "work_budget_macs"  # parameters { key: "work_budget_macs" value { string_value: "2e9" } }
MODEL_FILE = "model.erm"
_TYPE_NAMES = {value: name for name, value in CONFIG_TYPES.items()}


class ConfigError(ValueError):
    """A config file that cannot be parsed or does not fit its model; the message says which field."""


@dataclass(frozen=True)
class Batching:
    """Dynamic batching: wait up to `max_delay_s` for up to `max_batch_size` rows."""

    max_batch_size: int
    max_delay_s: float
    preferred_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class VersionPolicy:
    """Which numeric versions to serve: 'latest' (the `count` highest), 'all' or 'specific'."""

    kind: str = "latest"
    count: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve from `available`, highest first."""
        ordered = sorted(available, reverse=True)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[: self.count]


@dataclass(frozen=True)
class ModelSettings:
    """Everything the server needs to know about one model besides its weights."""

    name: str
    proto: mc.ModelConfig
    policy: VersionPolicy
    max_batch_size: int
    batching: Batching | None
    instances: int
    work_budget_macs: int | None = None  # the most multiply-adds one run may take (None: unlimited)
    # where its instances run, from instance_group kind: "cuda" (KIND_GPU), "host" (KIND_CPU: the
    # best host backend), None (KIND_AUTO or no instance_group: the server's --device)
    device: str | None = None


def read_settings(model_dir: Path) -> ModelSettings:
    """The settings of the model in `model_dir` (defaults if it has no config.pbtxt: latest 1
    version, no batching, 1 instance). Raises ConfigError naming the bad field, OSError if unreadable."""
    proto = mc.ModelConfig()
    path = model_dir / CONFIG_NAME
    if path.is_file():
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"model {model_dir.name!r}: {CONFIG_NAME} is not valid UTF-8 "
                              f"(byte {exc.start})") from None
        try:
            text_format.Parse(text, proto)
        except (text_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise ConfigError(f"model {model_dir.name!r}: {CONFIG_NAME}: {exc}") from None
    if proto.name and proto.name != model_dir.name:
        raise ConfigError(f"model {model_dir.name!r}: config names it {proto.name!r}")
    proto.name = model_dir.name
    proto.platform = proto.platform or "edgerun_erm"
    proto.backend = proto.backend or "edgerun"
    if proto.max_batch_size < 0:
        raise ConfigError(f"model {proto.name!r}: max_batch_size must be >= 0, got {proto.max_batch_size}")
    return ModelSettings(proto.name, proto, _policy(proto), proto.max_batch_size, _batching(proto), _instances(proto),
                         _work_budget(proto), _device(proto))


def _policy(proto: mc.ModelConfig) -> VersionPolicy:
    choice = proto.version_policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        return VersionPolicy("specific", versions=tuple(proto.version_policy.specific.versions))
    count = proto.version_policy.latest.num_versions if choice == "latest" else 1
    if count < 1:
        raise ConfigError(f"model {proto.name!r}: version_policy latest num_versions must be >= 1")
    return VersionPolicy("latest", count=count)


def _batching(proto: mc.ModelConfig) -> Batching | None:
    if not proto.HasField("dynamic_batching"):
        return None
    if proto.max_batch_size < 1:
        raise ConfigError(f"model {proto.name!r}: dynamic_batching needs max_batch_size >= 1")
    db = proto.dynamic_batching
    return Batching(proto.max_batch_size, db.max_queue_delay_microseconds / 1e6, tuple(db.preferred_batch_size))


def _instances(proto: mc.ModelConfig) -> int:
    count = sum(group.count or 1 for group in proto.instance_group) or 1
    if any(group.count < 0 for group in proto.instance_group):
        raise ConfigError(f"model {proto.name!r}: instance_group count must be >= 0")
    return count


def _device(proto: mc.ModelConfig) -> str | None:
    """Where the model's instances run, from its instance_groups' kind (Triton's field): KIND_GPU
    "cuda", KIND_CPU "host", KIND_AUTO None; ConfigError for groups of different kinds or
    KIND_MODEL (which a Triton backend decides and edgerun has no use for)."""
    kinds = {group.kind for group in proto.instance_group} - {mc.ModelInstanceGroup.KIND_AUTO}
    if not kinds:
        return None
    if len(kinds) > 1 or kinds - {mc.ModelInstanceGroup.KIND_GPU, mc.ModelInstanceGroup.KIND_CPU}:
        names = sorted(mc.ModelInstanceGroup.Kind.Name(kind) for kind in kinds)
        raise ConfigError(f"model {proto.name!r}: instance_group kind must be one of KIND_AUTO, KIND_CPU "
                          f"and KIND_GPU for all groups, got {', '.join(names)}")
    return "cuda" if kinds == {mc.ModelInstanceGroup.KIND_GPU} else "host"


def _work_budget(proto: mc.ModelConfig) -> int | None:
    """The `work_budget_macs` parameter: a positive whole number, digits ("2000000000") or in
    exponent form ("2e9"); None when absent."""
    if WORK_BUDGET not in proto.parameters:
        return None
    text = proto.parameters[WORK_BUDGET].string_value.strip().replace("_", "")
    try:
        value = int(text) if text.isdigit() else float(text)
    except ValueError:
        value = 0
    if not (math.isfinite(value) and value == int(value) and 1 <= value < 1 << 62):
        raise ConfigError(f"model {proto.name!r}: parameter {WORK_BUDGET} must be a whole number of "
                          f"multiply-adds >= 1 (like \"2e9\"), got {text!r}")
    return int(value)


def check_against(settings: ModelSettings, inputs: dict, outputs: dict) -> mc.ModelConfig:
    """The config with input/output entries filled from the signature (name -> TensorInfo) where the
    file lists none. Raises ConfigError if a listed tensor is unknown or its type or dims disagree,
    or if max_batch_size > 0 for a model whose first dimension is not dynamic."""
    config = mc.ModelConfig()
    config.CopyFrom(settings.proto)
    batch = settings.max_batch_size > 0
    for kind, listed, infos in (("input", config.input, inputs), ("output", config.output, outputs)):
        for info in infos.values():
            if batch and (not info.shape or info.shape[0] != -1):
                raise ConfigError(f"model {config.name!r}: max_batch_size > 0 needs a dynamic first dimension, "
                                  f"but {kind} {info.name!r} has shape {list(info.shape)}")
        if not listed:
            for info in infos.values():
                entry = listed.add(name=info.name, data_type=CONFIG_TYPES[datatype_of(info.dtype)])
                entry.dims.extend(info.shape[1:] if batch else info.shape)
            continue
        for entry in listed:
            _check_entry(config.name, kind, entry, infos, batch)
    return config


def _check_entry(model: str, kind: str, entry, infos: dict, batch: bool) -> None:
    info = infos.get(entry.name)
    if info is None:
        raise ConfigError(f"model {model!r}: config {kind} {entry.name!r} is not in the model; "
                          f"it has {sorted(infos)}")
    want = datatype_of(info.dtype)
    if entry.data_type and _TYPE_NAMES.get(entry.data_type) != want:
        raise ConfigError(f"model {model!r}: config {kind} {entry.name!r} has data_type "
                          f"{mc.DataType.Name(entry.data_type)}, the model has {want}")
    dims = list(info.shape[1:] if batch else info.shape)
    if entry.dims and list(entry.dims) != dims:
        raise ConfigError(f"model {model!r}: config {kind} {entry.name!r} has dims {list(entry.dims)}, "
                          f"the model has {dims}")
