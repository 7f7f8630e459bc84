"""Request signatures, replay protection, payload signatures, and the array codec."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest

from edgerun.federated.auth import (
    AuthError,
    KeyPair,
    ReplayGuard,
    SignedFields,
    payload_message,
    sha256,
    verify,
    verify_request,
)
from edgerun.federated.codec import PayloadError, decode_arrays, encode_arrays


@pytest.fixture
def device():
    return KeyPair.generate()


def test_a_signed_request_verifies_once(device):
    body = sha256(b"round 3 update")
    fields = device.sign_request("Upload", "pi-7", body)
    guard = ReplayGuard()
    verify_request(device.public_bytes, fields, "Upload", body, guard)
    with pytest.raises(AuthError, match="replayed"):
        verify_request(device.public_bytes, fields, "Upload", body, guard)


@pytest.mark.parametrize("tamper", ["method", "body", "client", "key", "timestamp"])
def test_tampering_breaks_the_signature(device, tamper):
    body = sha256(b"payload")
    fields = device.sign_request("GetWork", "pi-7", body)
    key, method = device.public_bytes, "GetWork"
    if tamper == "method":
        method = "Upload"
    elif tamper == "body":
        body = sha256(b"other payload")
    elif tamper == "client":
        fields = SignedFields("pi-8", fields.timestamp, fields.nonce, fields.signature)
    elif tamper == "key":
        key = KeyPair.generate().public_bytes
    else:
        fields = SignedFields(fields.client_id, fields.timestamp + 1, fields.nonce, fields.signature)
    with pytest.raises(AuthError, match="signature does not verify"):
        verify_request(key, fields, method, body, ReplayGuard())


def test_stale_and_future_requests_are_refused(device):
    body = sha256(b"")
    for offset in (-400.0, 400.0):
        fields = device.sign_request("GetWork", "pi-7", body, now=1_000_000.0 + offset)
        with pytest.raises(AuthError, match="timestamp"):
            verify_request(device.public_bytes, fields, "GetWork", body, ReplayGuard(), now=1_000_000.0)


def test_keys_persist_with_owner_only_permissions(tmp_path):
    path = tmp_path / "keys" / "device.pem"
    first = KeyPair.load_or_create(path)
    assert (os.stat(path).st_mode & 0o777) == 0o600
    assert KeyPair.load_or_create(path).public_bytes == first.public_bytes


def test_payload_signatures(device):
    digest = sha256(b"model bytes")
    signature = device.sign(payload_message("parameters", 4, digest))
    verify(device.public_bytes, signature, payload_message("parameters", 4, digest), "parameters v4")
    with pytest.raises(AuthError):
        verify(device.public_bytes, signature, payload_message("parameters", 5, digest), "parameters v5")


SPEC = {"w": (np.dtype(np.float32), (2, 3)), "b": (np.dtype(np.float32), (3,))}


def arrays():
    return {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}


def test_codec_round_trip():
    decoded = decode_arrays(encode_arrays(arrays()), SPEC)
    assert all(np.array_equal(decoded[k], v) for k, v in arrays().items())


@pytest.mark.parametrize("change,message", [
    (lambda a: a.pop("b"), "missing \\['b'\\]"),
    (lambda a: a.update(extra=np.zeros(1)), "unexpected \\['extra'\\]"),
    (lambda a: a.update(w=np.zeros((3, 2), np.float32)), "expected float32\\[2, 3\\]"),
    (lambda a: a.update(w=np.zeros((2, 3), np.float64)), "bytes, more than|expected float32"),
    (lambda a: a.update(b=np.array([1, np.nan, 0], np.float32)), "NaN or Inf"),
])
def test_codec_refuses_payloads_that_do_not_match(change, message):
    bad = arrays()
    change(bad)
    with pytest.raises(PayloadError, match=message):
        decode_arrays(encode_arrays(bad), SPEC)


def test_codec_refuses_garbage_and_zip_bombs():
    with pytest.raises(PayloadError, match="not a valid .npz"):
        decode_arrays(b"definitely not a zip", SPEC)
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.npy", b"\0" * (50 << 20))  # 50 MB of zeros compresses to ~50 KB
        z.writestr("b.npy", b"\0" * 10)
    with pytest.raises(PayloadError, match="more than float32\\[2, 3\\] needs"):
        decode_arrays(stream.getvalue(), SPEC)
