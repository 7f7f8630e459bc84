"""The coordinator's secure-aggregation and differential-privacy paths (a mixin of
federated.coordinator.Coordinator, kept apart so each module stays small).

Secure rounds: handlers for the protocol messages and masked inputs, and the round
thread's driver that runs the stages and aggregates the unmasked weighted sum. DP rounds:
noise on the sum of clipped deltas and the accountant's charge for the round.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from edgerun.federated.errors import Rejected
from edgerun.federated.privacy import effective_multiplier, gaussian_noise
from edgerun.federated.secagg.errors import ImplausibleWeight, SecAggError
from edgerun.federated.secagg.session import StageReply
from edgerun.federated.secagg.update import decode_sum

log = logging.getLogger("edgerun.federated")


class SecureRoundsMixin:
    """Needs the Coordinator's lock, store, strategy, spec, parameters, config, secure,
    accountant, upload_bytes, _announce and _conclude."""

    def secure_step(self, client_id: str, round_number: int, stage: str, payload: Any) -> StageReply:
        """One secure-aggregation message (or poll) from a client; Rejected says why not."""
        with self.lock:
            secure = self.secure
            if secure is None or secure.params.round != round_number:
                return StageReply("aborted", message=f"no secure aggregation is open for round {round_number}")
            try:
                reply = secure.handle(client_id, stage, payload)
            except SecAggError as exc:
                log.warning("round %d: %s from %s refused: %s", round_number, stage, client_id, exc)
                raise Rejected("failed_precondition", f"{type(exc).__name__}: {exc}") from None
            self.lock.notify_all()
            return reply

    def submit_masked(self, client_id: str, round_number: int, bits: int, vector: np.ndarray) -> None:
        """Add one masked input into the round's running sum; Rejected says why not."""
        with self.lock:
            secure = self.secure
            if secure is None or secure.params.round != round_number:
                raise Rejected("failed_precondition", f"no secure aggregation is open for round {round_number}")
            if bits != secure.params.quantization.bits:
                raise Rejected("invalid_argument", f"masked input in Z_2^{bits}, the round uses "
                               f"Z_2^{secure.params.quantization.bits}")
            try:
                secure.receive_masked(client_id, vector)
            except SecAggError as exc:
                raise Rejected("invalid_argument", f"{type(exc).__name__}: {exc}") from None
            self.lock.notify_all()

    def _finish_secure(self, current: Any, stop: threading.Event) -> None:
        """Drive the secure-aggregation stages, then aggregate the unmasked weighted sum. An
        aborted protocol (too few clients, a refused reconstruction, a restart: the protocol
        state is not persisted) fails the round and keeps the global model."""
        order = list(self.spec)
        config = current.config["secagg"]
        with self.lock:
            secure = self.secure
            try:
                if secure is None or secure.params.round != current.round:
                    raise SecAggError(f"round {current.round}: secure-aggregation state was lost (restart)")
                total = secure.drive(self.lock, stop)
                survivors = secure.server.survivor_list()
            except SecAggError as exc:
                if stop.is_set():
                    return
                log.warning("round %d failed: %s", current.round, exc)
                self.store.fail_round(current.round, str(exc))
                self._announce(current.round)
                return
            finally:
                self.secure = None
        params = secure.params
        self.upload_bytes = float(params.length * params.quantization.bytes_per_value)
        failures = len(current.selected) - len(survivors)
        charge = self._charge_privacy(current, len(survivors)) if "dp" in current.config else None
        try:
            sums, weight = decode_sum(total, params.quantization, len(survivors),
                                      [tuple(self.spec[n][1]) for n in order])
            levels = params.quantization.levels
            if charge is not None and round(weight * levels) != len(survivors) * levels:
                raise ImplausibleWeight(f"round {current.round}: DP clients send weight 1, the total is {weight:.6g} "
                                        f"for {len(survivors)} clients")
        except SecAggError as exc:  # e.g. a client's weight slot outside (0, 1]: it would rescale the average
            log.warning("round %d failed: %s", current.round, exc)
            self.store.fail_round(current.round, f"{type(exc).__name__}: {exc}")
            self._announce(current.round)
            return
        scale = float(config["max_weight"])
        if charge is not None:  # clients sent weight 1: the sum is the plain sum of clipped deltas
            self._conclude(current, len(survivors),
                           lambda: self._private_sum(current, sums, len(survivors), failures, charge))
            return
        self._conclude(current, len(survivors), lambda: self.strategy.aggregate_sum(
            current.round, [self.parameters[n] for n in order], [s * scale for s in sums], weight * scale,
            len(survivors), failures))

    def _charge_privacy(self, current: Any, counted: int) -> float:
        """Charge the accountant for a round whose sum the coordinator has learnt (whatever
        happens next), at the round's effective noise multiplier; returns epsilon so far."""
        dp = current.config["dp"]
        z = effective_multiplier(self.config.dp, dp["mode"], dp["expected_clients"], counted)
        available = int(dp.get("available") or round(dp["expected_clients"] / dp["sampling_probability"]))
        epsilon = self.accountant.record(available, dp["expected_clients"], z)
        self.store.put_state("privacy", {"rounds": self.accountant.history})
        return epsilon

    def _private_sum(self, current: Any, total: list[np.ndarray], reports: int,
                     failures: int, epsilon: float) -> tuple[list, dict]:
        """DP-FedAvg: the sum of clipped deltas, plus N(0, (z S)^2) in central mode (clients added
        their shares in distributed mode), over the expected number of clients. The round was
        already charged to the accountant (`epsilon`)."""
        dp = current.config["dp"]
        if dp["mode"] == "central":
            noise = gaussian_noise([t.shape for t in total], self.config.dp.stddev)
            total = [t + z for t, z in zip(total, noise, strict=True)]
        new, metrics = self.strategy.aggregate_sum(current.round, [self.parameters[n] for n in self.spec], total,
                                                   dp["expected_clients"], reports, failures)
        z = effective_multiplier(self.config.dp, dp["mode"], dp["expected_clients"], reports)
        return new, {**metrics, "epsilon": epsilon, "delta": self.config.dp.delta, "noise_multiplier": z}
