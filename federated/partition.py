"""Data partitioning for federated simulation: which examples each virtual client holds.

Pure numpy. Every function takes labels (or a count) and a seed and returns index
arrays; the same arguments give the same result (`np.random.default_rng(seed)`).
The client functions return a partition of `range(n)`: one int64 array per client,
sorted ascending, every index in exactly one array.

- `iid`: a uniform random split, sizes differ by at most 1.
- `dirichlet`: label skew; per class, proportions ~ Dir(alpha) over the clients
  (Hsu et al. 2019). Small alpha -> each client sees few classes; large alpha -> IID.
- `label_shards`: McMahan et al. 2017's "pathological non-IID" split: sort by label,
  cut into equal shards, deal each client `shards_per_client` random shards.
- `stratified_split`: a train/test split that keeps every class's proportion.

Bad arguments raise ValueError with a message that names the argument.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

Partition = list[np.ndarray]


# ---------------------------------------------------------------- validation


def _count(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _labels(labels: object) -> tuple[np.ndarray, np.ndarray]:
    """(1-D labels array, class id per example in 0..num_classes-1)."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {array.shape}")
    _, classes = np.unique(array, return_inverse=True)
    return array, classes.reshape(-1)


def _check_clients(num_clients: object, num_examples: int) -> int:
    num_clients = _count("num_clients", num_clients)
    if num_clients > num_examples:
        raise ValueError(f"num_clients ({num_clients}) must not exceed "
                         f"the number of examples ({num_examples})")
    return num_clients


def _finish(parts: list[np.ndarray]) -> Partition:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


# ---------------------------------------------------------------- client partitions


def iid(num_examples: int, num_clients: int, seed: int | None) -> Partition:
    """A uniformly random split of range(num_examples) into `num_clients` parts whose
    sizes differ by at most 1. ValueError if num_clients > num_examples."""
    num_examples = _count("num_examples", num_examples)
    num_clients = _check_clients(num_clients, num_examples)
    order = np.random.default_rng(seed).permutation(num_examples)
    return _finish(np.array_split(order, num_clients))


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float, seed: int | None, min_size: int = 1,
              max_tries: int = 100) -> Partition:
    """Label-skewed split: each class's examples are divided among the clients in
    proportions drawn from Dir(alpha, ..., alpha).

    The whole draw is repeated (up to `max_tries` times, from one seeded generator)
    until every client holds at least `min_size` examples; ValueError if no draw
    succeeds, or if num_clients * min_size exceeds the number of examples."""
    labels, classes = _labels(labels)
    num_clients = _check_clients(num_clients, labels.size)
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    min_size = _count("min_size", min_size, minimum=0)
    max_tries = _count("max_tries", max_tries)
    if num_clients * min_size > labels.size:
        raise ValueError(f"min_size ({min_size}) x num_clients ({num_clients}) exceeds "
                         f"the number of examples ({labels.size})")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts = _dirichlet_draw(classes, num_clients, float(alpha), rng)
        if parts is not None and min(len(p) for p in parts) >= min_size:
            return _finish(parts)
    raise ValueError(f"dirichlet: no draw in max_tries={max_tries} gave every one of {num_clients} clients "
                     f"min_size={min_size} examples with alpha={alpha}; raise alpha or lower min_size")


def _dirichlet_draw(classes: np.ndarray, num_clients: int, alpha: float,
                    rng: np.random.Generator) -> list[np.ndarray] | None:
    """One draw: per class, shuffle its examples and cut them at the cumulative
    Dirichlet proportions. None if the sampler produced non-finite proportions
    (possible for tiny alpha)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for k in range(int(classes.max()) + 1):
        members = rng.permutation(np.flatnonzero(classes == k))
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        if not np.all(np.isfinite(proportions)):
            return None
        cuts = np.floor(np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
        for client, piece in enumerate(np.split(members, cuts)):
            parts[client].append(piece)
    return [np.concatenate(p) for p in parts]


def label_shards(labels: np.ndarray, num_clients: int, shards_per_client: int, seed: int | None) -> Partition:
    """McMahan et al. 2017's pathological non-IID split.

    The examples are sorted by label (ties in random order), cut into
    num_clients * shards_per_client contiguous shards and each client gets
    `shards_per_client` of them at random. Shards are equal when their number
    divides the number of examples; otherwise sizes differ by at most 1, so every
    example is still used. A client sees at most `shards_per_client` labels when
    every class size is a multiple of the shard size (a shard that straddles a
    class boundary holds two labels). ValueError if there are more shards than examples."""
    labels, classes = _labels(labels)
    num_clients = _check_clients(num_clients, labels.size)
    shards_per_client = _count("shards_per_client", shards_per_client)
    num_shards = num_clients * shards_per_client
    if num_shards > labels.size:
        raise ValueError(f"shards_per_client ({shards_per_client}) x num_clients ({num_clients}) = "
                         f"{num_shards} shards do not divide {labels.size} examples (a shard would be empty)")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(labels.size)
    by_label = shuffled[np.argsort(classes[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return _finish([np.concatenate([shards[s] for s in row]) for row in dealt])


# ---------------------------------------------------------------- train / test


def stratified_split(labels: np.ndarray, test_fraction: float,
                     seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices), both sorted, together a partition of range(n).

    The test set holds round(test_fraction * n) examples; each class contributes
    floor or ceil of test_fraction * (its size), so every class's proportion is kept
    to within one example (largest remainders get the ceil). ValueError unless
    0 < test_fraction < 1 and both sets are non-empty."""
    labels, classes = _labels(labels)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, Real) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    n = labels.size
    num_test = int(round(test_fraction * n))
    if not 0 < num_test < n:
        raise ValueError(f"test_fraction {test_fraction} of {n} examples leaves the train or test set empty")
    sizes = np.bincount(classes)
    exact = test_fraction * sizes
    per_class = np.floor(exact).astype(np.int64)
    remainder = num_test - int(per_class.sum())
    largest = np.argsort(-(exact - per_class), kind="stable")
    per_class[largest[:remainder]] += 1
    rng = np.random.default_rng(seed)
    test = [rng.permutation(np.flatnonzero(classes == k))[:count] for k, count in enumerate(per_class)]
    test_idx = np.sort(np.concatenate(test).astype(np.int64))
    train_idx = np.setdiff1d(np.arange(n, dtype=np.int64), test_idx, assume_unique=True)
    return train_idx, test_idx
