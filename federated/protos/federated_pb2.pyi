# ruff: noqa
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Auth(_message.Message):
    __slots__ = ("client_id", "timestamp", "nonce", "signature")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    timestamp: float
    nonce: bytes
    signature: bytes
    def __init__(self, client_id: _Optional[str] = ..., timestamp: _Optional[float] = ..., nonce: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class EnrolRequest(_message.Message):
    __slots__ = ("client_id", "public_key", "token", "info", "auth")
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    public_key: bytes
    token: str
    info: _containers.ScalarMap[str, str]
    auth: Auth
    def __init__(self, client_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., token: _Optional[str] = ..., info: _Optional[_Mapping[str, str]] = ..., auth: _Optional[_Union[Auth, _Mapping]] = ...) -> None: ...

class EnrolReply(_message.Message):
    __slots__ = ("coordinator_public_key",)
    COORDINATOR_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    coordinator_public_key: bytes
    def __init__(self, coordinator_public_key: _Optional[bytes] = ...) -> None: ...

class WorkRequest(_message.Message):
    __slots__ = ("auth", "wait_seconds")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    auth: Auth
    wait_seconds: float
    def __init__(self, auth: _Optional[_Union[Auth, _Mapping]] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class WorkReply(_message.Message):
    __slots__ = ("action", "round", "model_version", "config_json", "deadline", "retry_after")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        WAIT: _ClassVar[WorkReply.Action]
        TRAIN: _ClassVar[WorkReply.Action]
        STOP: _ClassVar[WorkReply.Action]
        EVALUATE: _ClassVar[WorkReply.Action]
    WAIT: WorkReply.Action
    TRAIN: WorkReply.Action
    STOP: WorkReply.Action
    EVALUATE: WorkReply.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    action: WorkReply.Action
    round: int
    model_version: int
    config_json: str
    deadline: float
    retry_after: float
    def __init__(self, action: _Optional[_Union[WorkReply.Action, str]] = ..., round: _Optional[int] = ..., model_version: _Optional[int] = ..., config_json: _Optional[str] = ..., deadline: _Optional[float] = ..., retry_after: _Optional[float] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("auth", "kind", "model_version")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PARAMETERS: _ClassVar[DownloadRequest.Kind]
        MODEL: _ClassVar[DownloadRequest.Kind]
    PARAMETERS: DownloadRequest.Kind
    MODEL: DownloadRequest.Kind
    AUTH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    auth: Auth
    kind: DownloadRequest.Kind
    model_version: int
    def __init__(self, auth: _Optional[_Union[Auth, _Mapping]] = ..., kind: _Optional[_Union[DownloadRequest.Kind, str]] = ..., model_version: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("data", "total_size", "sha256", "signature", "model_version")
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    total_size: int
    sha256: bytes
    signature: bytes
    model_version: int
    def __init__(self, data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., sha256: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., model_version: _Optional[int] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("auth", "round", "num_examples", "metrics", "total_size", "sha256")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    AUTH_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    auth: Auth
    round: int
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    total_size: int
    sha256: bytes
    def __init__(self, auth: _Optional[_Union[Auth, _Mapping]] = ..., round: _Optional[int] = ..., num_examples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., total_size: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadReply(_message.Message):
    __slots__ = ("accepted", "message")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message: str
    def __init__(self, accepted: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class EvaluationReport(_message.Message):
    __slots__ = ("auth", "round", "num_examples", "loss", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    AUTH_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    auth: Auth
    round: int
    num_examples: int
    loss: float
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, auth: _Optional[_Union[Auth, _Mapping]] = ..., round: _Optional[int] = ..., num_examples: _Optional[int] = ..., loss: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class DeclineRequest(_message.Message):
    __slots__ = ("auth", "round", "reason")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    auth: Auth
    round: int
    reason: str
    def __init__(self, auth: _Optional[_Union[Auth, _Mapping]] = ..., round: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class SecAggKeys(_message.Message):
    __slots__ = ("client_id", "encryption_key", "mask_key", "seed_commitment", "signature", "device_key")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_KEY_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_FIELD_NUMBER: _ClassVar[int]
    SEED_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_KEY_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    encryption_key: bytes
    mask_key: bytes
    seed_commitment: bytes
    signature: bytes
    device_key: bytes
    def __init__(self, client_id: _Optional[str] = ..., encryption_key: _Optional[bytes] = ..., mask_key: _Optional[bytes] = ..., seed_commitment: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., device_key: _Optional[bytes] = ...) -> None: ...

class SecAggShare(_message.Message):
    __slots__ = ("sender", "recipient", "nonce", "ciphertext")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    sender: str
    recipient: str
    nonce: bytes
    ciphertext: bytes
    def __init__(self, sender: _Optional[str] = ..., recipient: _Optional[str] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class SecAggProof(_message.Message):
    __slots__ = ("client_id", "signature")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    signature: bytes
    def __init__(self, client_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SecAggReveal(_message.Message):
    __slots__ = ("owner", "kind", "x", "y")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    owner: str
    kind: str
    x: int
    y: bytes
    def __init__(self, owner: _Optional[str] = ..., kind: _Optional[str] = ..., x: _Optional[int] = ..., y: _Optional[bytes] = ...) -> None: ...

class SecAggRequest(_message.Message):
    __slots__ = ("auth", "round", "stage", "keys", "shares", "proof", "revealed")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    REVEALED_FIELD_NUMBER: _ClassVar[int]
    auth: Auth
    round: int
    stage: str
    keys: SecAggKeys
    shares: _containers.RepeatedCompositeFieldContainer[SecAggShare]
    proof: SecAggProof
    revealed: _containers.RepeatedCompositeFieldContainer[SecAggReveal]
    def __init__(self, auth: _Optional[_Union[Auth, _Mapping]] = ..., round: _Optional[int] = ..., stage: _Optional[str] = ..., keys: _Optional[_Union[SecAggKeys, _Mapping]] = ..., shares: _Optional[_Iterable[_Union[SecAggShare, _Mapping]]] = ..., proof: _Optional[_Union[SecAggProof, _Mapping]] = ..., revealed: _Optional[_Iterable[_Union[SecAggReveal, _Mapping]]] = ...) -> None: ...

class SecAggReply(_message.Message):
    __slots__ = ("stage", "expects_you", "roster", "inbox", "survivors", "proofs", "message", "retry_after")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    EXPECTS_YOU_FIELD_NUMBER: _ClassVar[int]
    ROSTER_FIELD_NUMBER: _ClassVar[int]
    INBOX_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    PROOFS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    stage: str
    expects_you: bool
    roster: _containers.RepeatedCompositeFieldContainer[SecAggKeys]
    inbox: _containers.RepeatedCompositeFieldContainer[SecAggShare]
    survivors: _containers.RepeatedScalarFieldContainer[str]
    proofs: _containers.RepeatedCompositeFieldContainer[SecAggProof]
    message: str
    retry_after: float
    def __init__(self, stage: _Optional[str] = ..., expects_you: _Optional[bool] = ..., roster: _Optional[_Iterable[_Union[SecAggKeys, _Mapping]]] = ..., inbox: _Optional[_Iterable[_Union[SecAggShare, _Mapping]]] = ..., survivors: _Optional[_Iterable[str]] = ..., proofs: _Optional[_Iterable[_Union[SecAggProof, _Mapping]]] = ..., message: _Optional[str] = ..., retry_after: _Optional[float] = ...) -> None: ...

class MaskedHeader(_message.Message):
    __slots__ = ("auth", "round", "bits", "length", "total_size", "sha256")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    auth: Auth
    round: int
    bits: int
    length: int
    total_size: int
    sha256: bytes
    def __init__(self, auth: _Optional[_Union[Auth, _Mapping]] = ..., round: _Optional[int] = ..., bits: _Optional[int] = ..., length: _Optional[int] = ..., total_size: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class MaskedChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: MaskedHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[MaskedHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...
