"""Simulation partitions (federated.partition): each is a partition of range(n), has the
promised sizes and label skew, and is deterministic given the seed."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edgerun.federated import partition


@pytest.fixture(scope="module")
def digits_labels() -> np.ndarray:
    return load_digits().target


def assert_partition(parts: list[np.ndarray], n: int) -> None:
    """Every index of range(n) in exactly one part; parts are sorted int arrays."""
    for p in parts:
        assert p.dtype == np.int64 and p.ndim == 1
        assert np.all(np.diff(p) > 0)
    joined = np.concatenate(parts)
    assert len(joined) == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))


def distinct_labels(labels: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    return np.array([len(np.unique(labels[p])) for p in parts])


def label_histogram(labels: np.ndarray, index: np.ndarray, num_classes: int = 10) -> np.ndarray:
    return np.bincount(labels[index], minlength=num_classes) / len(index)


# ---------------------------------------------------------------- iid


@pytest.mark.parametrize("n, clients", [(10, 10), (11, 3), (1797, 10), (100, 1), (7, 4)])
def test_iid_is_a_partition_with_sizes_within_one(n, clients):
    parts = partition.iid(n, clients, seed=0)

    assert len(parts) == clients
    assert_partition(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_is_deterministic_and_depends_on_the_seed():
    a, b, c = partition.iid(100, 4, 1), partition.iid(100, 4, 1), partition.iid(100, 4, 2)

    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_clients_have_label_distributions_close_to_the_global_one(digits_labels):
    parts = partition.iid(len(digits_labels), 5, seed=0)

    overall = label_histogram(digits_labels, np.arange(len(digits_labels)))
    for p in parts:  # ~360 examples per client: sampling noise per class is about 0.016
        assert np.max(np.abs(label_histogram(digits_labels, p) - overall)) < 0.06


# ---------------------------------------------------------------- dirichlet


@pytest.mark.parametrize("alpha", [0.05, 0.5, 100.0])
def test_dirichlet_is_a_partition_with_min_size(digits_labels, alpha):
    parts = partition.dirichlet(digits_labels, 10, alpha, seed=3, min_size=5)

    assert len(parts) == 10
    assert_partition(parts, len(digits_labels))
    assert min(len(p) for p in parts) >= 5


def test_dirichlet_is_deterministic(digits_labels):
    a = partition.dirichlet(digits_labels, 8, 0.3, seed=7)
    b = partition.dirichlet(digits_labels, 8, 0.3, seed=7)

    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_small_alpha_skews_clients_and_large_alpha_does_not(digits_labels):
    skewed = [distinct_labels(digits_labels, partition.dirichlet(digits_labels, 20, 0.05, s)).mean()
              for s in range(5)]
    uniform = [distinct_labels(digits_labels, partition.dirichlet(digits_labels, 20, 100.0, s)).mean()
               for s in range(5)]

    assert np.mean(uniform) > 9.9  # ~90 examples per client: every class present
    assert np.mean(skewed) < 4.0
    assert np.mean(skewed) < np.mean(uniform) / 2


def test_dirichlet_works_on_string_labels():
    labels = np.array(["cat", "dog", "cow"] * 20)

    parts = partition.dirichlet(labels, 3, 1.0, seed=0)

    assert_partition(parts, 60)


def test_dirichlet_gives_up_with_a_clear_error():
    labels = np.repeat(np.arange(2), 50)

    with pytest.raises(ValueError, match=r"no draw in max_tries=3 .* min_size=30"):
        partition.dirichlet(labels, 3, 0.01, seed=0, min_size=30, max_tries=3)


# ---------------------------------------------------------------- label shards


def test_label_shards_on_balanced_sorted_digits_give_at_most_two_labels(digits_labels):
    # 170 examples of each of the 10 digits: 20 shards of 85, each within one class.
    index = np.concatenate([np.flatnonzero(digits_labels == k)[:170] for k in range(10)])
    labels = digits_labels[index]

    parts = partition.label_shards(labels, 10, 2, seed=0)

    assert_partition(parts, len(labels))
    assert [len(p) for p in parts] == [170] * 10
    assert distinct_labels(labels, parts).max() <= 2


@pytest.mark.parametrize("shards_per_client", [1, 2, 3])
def test_label_shards_on_all_digits_use_every_example(digits_labels, shards_per_client):
    # digit classes hold 174..183 examples: a 180-example shard may span three labels,
    # a shard no bigger than the smallest class at most two.
    parts = partition.label_shards(digits_labels, 10, shards_per_client, seed=1)

    assert_partition(parts, len(digits_labels))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= shards_per_client  # shard sizes differ by at most 1
    labels_per_shard = 3 if shards_per_client == 1 else 2
    assert distinct_labels(digits_labels, parts).max() <= labels_per_shard * shards_per_client


def test_label_shards_are_far_from_iid(digits_labels):
    shards = distinct_labels(digits_labels, partition.label_shards(digits_labels, 10, 2, seed=0))
    iid = distinct_labels(digits_labels, partition.iid(len(digits_labels), 10, seed=0))

    assert shards.mean() <= 4 and iid.mean() == 10


def test_label_shards_are_deterministic(digits_labels):
    a = partition.label_shards(digits_labels, 10, 2, seed=5)
    b = partition.label_shards(digits_labels, 10, 2, seed=5)

    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- stratified split


@pytest.mark.parametrize("fraction", [0.2, 0.1, 0.5, 0.33])
def test_stratified_split_keeps_class_proportions(digits_labels, fraction):
    train, test = partition.stratified_split(digits_labels, fraction, seed=0)

    assert_partition([train, test], len(digits_labels))
    assert len(test) == round(fraction * len(digits_labels))
    want = fraction * np.bincount(digits_labels)
    got = np.bincount(digits_labels[test], minlength=10)
    assert np.all(np.abs(got - want) <= 1)


def test_stratified_split_is_deterministic(digits_labels):
    a = partition.stratified_split(digits_labels, 0.2, seed=4)
    b = partition.stratified_split(digits_labels, 0.2, seed=4)
    c = partition.stratified_split(digits_labels, 0.2, seed=5)

    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize("call, message", [
    (lambda: partition.iid(5, 6, 0), r"num_clients \(6\) must not exceed the number of examples \(5\)"),
    (lambda: partition.iid(5, 0, 0), r"num_clients must be an integer >= 1, got 0"),
    (lambda: partition.iid(0, 1, 0), r"num_examples must be an integer >= 1"),
    (lambda: partition.iid(5, 2.5, 0), r"num_clients must be an integer"),
    (lambda: partition.dirichlet(np.arange(4), 5, 1.0, 0), r"num_clients \(5\) must not exceed"),
    (lambda: partition.dirichlet(np.arange(9), 3, 0.0, 0), r"alpha must be a finite number > 0, got 0.0"),
    (lambda: partition.dirichlet(np.arange(9), 3, -1, 0), r"alpha must be a finite number > 0"),
    (lambda: partition.dirichlet(np.arange(9), 3, float("nan"), 0), r"alpha must be a finite number > 0"),
    (lambda: partition.dirichlet(np.arange(9), 3, 1.0, 0, min_size=4), r"min_size \(4\) x num_clients \(3\)"),
    (lambda: partition.dirichlet(np.zeros((3, 3)), 3, 1.0, 0), r"labels must be a non-empty 1-D array"),
    (lambda: partition.dirichlet([], 1, 1.0, 0), r"labels must be a non-empty 1-D array"),
    (lambda: partition.label_shards(np.arange(9), 5, 2, 0), r"10 shards do not divide 9 examples"),
    (lambda: partition.label_shards(np.arange(9), 3, 0, 0), r"shards_per_client must be an integer >= 1"),
    (lambda: partition.stratified_split(np.arange(9), 1.0, 0), r"test_fraction must be a number in \(0, 1\)"),
    (lambda: partition.stratified_split(np.arange(9), 0, 0), r"test_fraction must be a number in \(0, 1\)"),
    (lambda: partition.stratified_split(np.arange(9), 0.01, 0), r"leaves the train or test set empty"),
])
def test_bad_arguments_raise_value_errors_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_device_behaviours_are_assigned_by_share():
    from edgerun.federated.simulation import DeviceBehaviour, SimulationConfig, assign_behaviours

    behaviours = (DeviceBehaviour("fast", 0.7), DeviceBehaviour("slow", 0.3, 2.0))
    config = SimulationConfig(num_clients=10, behaviours=behaviours)
    kinds = assign_behaviours(config)
    assert len(kinds) == 10 and sum(k.name == "slow" for k in kinds) == 3
    assert assign_behaviours(config) == kinds  # deterministic
