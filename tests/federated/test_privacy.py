"""DP noise and accounting: the mechanism the accountant sees is the one that runs."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest

from edgerun.federated.privacy import DpOptions, PrivacyAccountant, client_stddev, gaussian_noise


def test_measured_noise_stddev_is_noise_multiplier_times_clip_norm():
    options = DpOptions(noise_multiplier=1.3, clip_norm=0.7)
    noise = gaussian_noise([(200_000,)], options.stddev)[0]
    assert abs(noise.std() - 1.3 * 0.7) < 0.01 and abs(noise.mean()) < 0.01
    shares = sum(gaussian_noise([(200_000,)], client_stddev(options, 16))[0] for _ in range(16))
    assert abs(shares.std() - 1.3 * 0.7) < 0.01  # distributed: 16 shares add up to the same noise


def test_event_is_sampling_without_replacement_of_the_cohort():
    options = DpOptions(noise_multiplier=1.1, clip_norm=1.0)
    event = options.event(50, 25)
    assert isinstance(event, dp_accounting.SampledWithoutReplacementDpEvent)
    assert (event.source_dataset_size, event.sample_size) == (50, 25)
    assert event.event.noise_multiplier == 1.1 / 2  # replace-one sensitivity of the sum is 2 S


def _reference(event, count):
    relation = dp_accounting.privacy_accountant.NeighboringRelation.REPLACE_ONE
    reference = dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
    reference.compose(dp_accounting.SelfComposedDpEvent(event, count))
    return reference.get_epsilon(1e-5)


def test_epsilon_grows_with_rounds_and_matches_dp_accounting():
    options = DpOptions(noise_multiplier=1.1, clip_norm=1.0, delta=1e-5)
    accountant = PrivacyAccountant(options)
    epsilons = [accountant.record(100, 10) for _ in range(5)]
    assert all(a < b for a, b in zip(epsilons, epsilons[1:], strict=False))
    assert math.isclose(epsilons[-1], _reference(options.event(100, 10), 5), rel_tol=1e-9)
    restored = PrivacyAccountant(options, accountant.history)
    assert math.isclose(restored.epsilon, epsilons[-1], rel_tol=1e-12)


def test_budget_allows_rounds_until_it_would_be_exceeded():
    options = DpOptions(noise_multiplier=2.0, clip_norm=1.0, epsilon_budget=5.0)
    accountant = PrivacyAccountant(options)
    rounds = 0
    while accountant.allows(50, 10):
        accountant.record(50, 10)
        rounds += 1
    assert rounds > 0 and accountant.epsilon <= 5.0
    reference = PrivacyAccountant(options, [[50, 10, 2.0]] * (rounds + 1))
    assert reference.epsilon > 5.0


def test_legacy_sampling_probabilities_are_charged_as_unsampled_rounds():
    options = DpOptions(noise_multiplier=2.0, clip_norm=1.0)
    legacy = PrivacyAccountant(options, [0.1, 0.1])
    assert legacy.history == [[1, 1, 2.0]] * 2
    assert legacy.epsilon >= PrivacyAccountant(options, [[10, 1, 2.0]] * 2).epsilon


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="noise_multiplier"):
        DpOptions(noise_multiplier=0.0, clip_norm=1.0)
    with pytest.raises(ValueError, match="mode"):
        DpOptions(noise_multiplier=1.0, clip_norm=1.0, mode="local")
    with pytest.raises(ValueError, match="selected"):
        DpOptions(1.0, 1.0).event(10, 0)
    with pytest.raises(ValueError, match="selected"):
        DpOptions(1.0, 1.0).event(10, 11)


def test_dropouts_in_distributed_mode_lower_the_effective_multiplier():
    from edgerun.federated.privacy import effective_multiplier

    options = DpOptions(noise_multiplier=1.2, clip_norm=1.0, mode="distributed")
    assert effective_multiplier(options, "distributed", 16, 16) == 1.2
    assert math.isclose(effective_multiplier(options, "distributed", 16, 4), 0.6)
    assert effective_multiplier(options, "central", 16, 4) == 1.2
    full, dropped = PrivacyAccountant(options), PrivacyAccountant(options)
    full.record(100, 16, effective_multiplier(options, "distributed", 16, 16))
    dropped.record(100, 16, effective_multiplier(options, "distributed", 16, 4))
    assert dropped.epsilon > full.epsilon


def test_noise_is_fresh_each_call():
    a, b = gaussian_noise([(10,)], 1.0), gaussian_noise([(10,)], 1.0)
    assert not np.array_equal(a[0], b[0])
