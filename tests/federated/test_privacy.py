"""DP noise and accounting: the mechanism the accountant sees is the one that runs."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest

from federated.privacy import DpOptions, PrivacyAccountant, client_stddev, gaussian_noise


def test_measured_noise_stddev_is_noise_multiplier_times_clip_norm():
    options = DpOptions(noise_multiplier=1.3, clip_norm=0.7)
    noise = gaussian_noise([(200_000,)], options.stddev)[0]
    assert abs(noise.std() - 1.3 * 0.7) < 0.01 and abs(noise.mean()) < 0.01
    shares = sum(gaussian_noise([(200_000,)], client_stddev(options, 16))[0] for _ in range(16))
    assert abs(shares.std() - 1.3 * 0.7) < 0.01  # distributed: 16 shares add up to the same noise


def test_event_is_the_sampled_gaussian_with_the_round_probability():
    options = DpOptions(noise_multiplier=1.1, clip_norm=1.0)
    event = options.event(25 / 50)
    assert isinstance(event, dp_accounting.PoissonSampledDpEvent)
    assert event.sampling_probability == 0.5 and event.event.noise_multiplier == 1.1


def test_epsilon_grows_with_rounds_and_matches_dp_accounting():
    options = DpOptions(noise_multiplier=1.1, clip_norm=1.0, delta=1e-5)
    accountant = PrivacyAccountant(options)
    epsilons = [accountant.record(0.1) for _ in range(5)]
    assert all(a < b for a, b in zip(epsilons, epsilons[1:], strict=False))
    reference = dp_accounting.rdp.RdpAccountant()
    reference.compose(dp_accounting.SelfComposedDpEvent(options.event(0.1), 5))
    assert math.isclose(epsilons[-1], reference.get_epsilon(1e-5), rel_tol=1e-9)


def test_budget_allows_rounds_until_it_would_be_exceeded():
    options = DpOptions(noise_multiplier=1.0, clip_norm=1.0, epsilon_budget=5.0)
    accountant = PrivacyAccountant(options)
    rounds = 0
    while accountant.allows(0.2):
        accountant.record(0.2)
        rounds += 1
    assert rounds > 0 and accountant.epsilon <= 5.0
    reference = PrivacyAccountant(options, [0.2] * (rounds + 1))
    assert reference.epsilon > 5.0


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="noise_multiplier"):
        DpOptions(noise_multiplier=0.0, clip_norm=1.0)
    with pytest.raises(ValueError, match="mode"):
        DpOptions(noise_multiplier=1.0, clip_norm=1.0, mode="local")
    with pytest.raises(ValueError, match="sampling probability"):
        DpOptions(1.0, 1.0).event(0.0)


def test_noise_is_fresh_each_call():
    a, b = gaussian_noise([(10,)], 1.0), gaussian_noise([(10,)], 1.0)
    assert not np.array_equal(a[0], b[0])
