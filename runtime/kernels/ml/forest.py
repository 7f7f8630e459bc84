"""Tree ensembles as flat arrays over their nodes (`Forest`): built from the (tree id, node id)
attributes of TreeEnsembleClassifier/Regressor (`forest_from_ids`) or the node and leaf arrays
of TreeEnsemble, opset 5 (`forest_from_arrays`), and evaluated.

Trees are validated as they are built (node and child ids, attribute lengths, target ids,
shape: every node reached from its tree's root exactly once, so no cycles, no node with two
parents, none unreachable; feature ids against X by `check_features`), in time and memory
linear in the attributes, and evaluated one depth level at a time over all rows and trees at
once; a tree's leaves loop to themselves, so extra levels change nothing. Leaf weights are
kept as given (sparse, per leaf), never as a nodes x targets table, so the number of targets
or classes costs memory only in the scores of a run (which the output's size bounds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from edgerun.runtime.kernels.base import Kernel
from edgerun.runtime.kernels.ml.attrs import float64s, float64s_or_tensor, int64s, same_length, strings
from edgerun.runtime.kernels.ml.lookup import find

LEAF = -1
MEMBER = 6
MODE_CODES = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5,
              "LEAF": LEAF}
COMPARE = {0: np.less_equal, 1: np.less, 2: np.greater_equal, 3: np.greater, 4: np.equal, 5: np.not_equal}
ROWS_TREES_PER_CHUNK = 1 << 22  # rows * trees * (weights on a leaf) evaluated at once


@dataclass(frozen=True)
class Forest:
    """Trees as flat arrays over their nodes, leaves included (a leaf's children are itself).

    Node i's leaf weights are `weight_target[j]`, `weight_value[j]` for j in
    `weight_start[i]:weight_start[i + 1]` (none for a branch). `depth` is the most branch
    steps from any root.
    """

    feature: np.ndarray  # int64 [nodes]
    threshold: np.ndarray  # float [nodes], in the dtype rows are compared in
    mode: np.ndarray  # int8 [nodes]: a key of COMPARE, MEMBER or LEAF
    true_next: np.ndarray  # int64 [nodes]
    false_next: np.ndarray  # int64 [nodes]
    nan_true: np.ndarray  # bool [nodes]: a NaN feature takes the true branch
    members: dict[int, np.ndarray]  # BRANCH_MEMBER node -> its set
    roots: np.ndarray  # int64 [trees]
    weight_start: np.ndarray  # int64 [nodes + 1]
    weight_target: np.ndarray  # int64 [weights]
    weight_value: np.ndarray  # float64 [weights]
    n_targets: int
    depth: int
    max_feature: int  # the largest feature id a branch reads (-1: none)

    def with_dtype(self, dtype: np.dtype) -> Forest:
        """The forest comparing in `dtype` (thresholds and member sets cast to it)."""
        members = {node: values.astype(dtype) for node, values in self.members.items()}
        return replace(self, threshold=self.threshold.astype(dtype), members=members)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """The node each row of `x` [N, F] (compare dtype) ends at in each tree: [N, trees]."""
        node = np.repeat(self.roots[None, :], len(x), axis=0)
        rows = np.arange(len(x))[:, None]
        branch_modes = [m for m in np.unique(self.mode).tolist() if m in COMPARE]
        for _ in range(self.depth):
            value = x[rows, self.feature[node]]
            mode = self.mode[node]
            if len(branch_modes) == 1 and not self.members:
                go = COMPARE[branch_modes[0]](value, self.threshold[node])
            else:
                go = np.zeros(node.shape, bool)
                for m in branch_modes:
                    at = mode == m
                    go[at] = COMPARE[m](value[at], self.threshold[node[at]])
                for member, allowed in self.members.items():
                    at = node == member
                    go[at] = np.isin(value[at], allowed)
            if self.nan_true.any():
                go |= self.nan_true[node] & np.isnan(value)
            node = np.where(go, self.true_next[node], self.false_next[node])
        return node

    def scores(self, x: np.ndarray, aggregate: str) -> tuple[np.ndarray, np.ndarray]:
        """(scores [N, targets] float64, hit [N, targets]): the weights of the leaves each row
        ends at, combined per target over the leaves and trees by `aggregate` (AVERAGE divides
        the sum by the tree count); a target no leaf of the row has a weight for scores 0."""
        trees, targets = len(self.roots), self.n_targets
        scores = np.zeros((len(x), targets))
        hit = np.zeros((len(x), targets), bool)
        per_leaf = int(np.diff(self.weight_start).max(initial=0))
        step = max(1, ROWS_TREES_PER_CHUNK // max(1, trees * per_leaf))
        for start in range(0, len(x), step):
            block = slice(start, start + step)
            cells, weights = self._weights_reached(self.leaves(x[block]))
            _combine(scores[block].reshape(-1), hit[block].reshape(-1), cells, weights, aggregate)
        if aggregate == "AVERAGE":
            scores /= trees
        return scores, hit

    def _weights_reached(self, leaves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cells, weights): every weight of the leaves [R, trees] and where it scores, as
        row * targets + target, in row, tree and attribute order."""
        first, count = self.weight_start[leaves].reshape(-1), np.diff(self.weight_start)[leaves].reshape(-1)
        owner = np.repeat(np.arange(leaves.size), count)  # the (row, tree) of each weight reached
        at = first[owner] + np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
        return owner // leaves.shape[1] * self.n_targets + self.weight_target[at], self.weight_value[at]


def _combine(scores: np.ndarray, hit: np.ndarray, cells: np.ndarray, weights: np.ndarray, aggregate: str) -> None:
    """Combine `weights` into the flat (zeroed) `scores` at `cells` by `aggregate`; mark `hit`."""
    if aggregate in ("MIN", "MAX"):
        best = np.full(scores.shape, np.inf if aggregate == "MIN" else -np.inf)
        (np.minimum if aggregate == "MIN" else np.maximum).at(best, cells, weights)
        hit[cells] = True
        scores[hit] = best[hit]
    else:
        scores += np.bincount(cells, weights=weights, minlength=scores.size)
        hit[cells] = True


def _leaf_weights(n: int, rows: np.ndarray, targets: np.ndarray,
                  weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight_start [n + 1], weight_target, weight_value): the weights on (node row, target)
    pairs grouped by node, in attribute order within a node."""
    order = np.argsort(rows, kind="stable")
    start = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=start[1:])
    return start, targets[order].astype(np.int64), weights[order].astype(np.float64)


def _depth(kernel: Kernel, true_next: np.ndarray, false_next: np.ndarray, leaf: np.ndarray,
           roots: np.ndarray, name: Callable[[int], str]) -> int:
    """The most branch steps from a root to a leaf, after checking that the branches make
    trees: ModelError naming (`name`) a node with more than one parent (a root counts as
    one; the two branches of one node may share a child) or one no root reaches (which
    covers cycles). Linear in the node count: each node is reached once, a level at a time."""
    branch = np.nonzero(~leaf)[0]
    parents = np.bincount(np.concatenate([roots, _children(branch, true_next, false_next)]), minlength=len(leaf))
    if (parents > 1).any():
        node = int(np.argmax(parents > 1))
        raise kernel.fail(f"{name(node)} has more than one parent (a tree root, or the child of two branches); "
                          "the nodes must form trees")
    reached = np.zeros(len(leaf), bool)
    reached[roots] = True
    frontier, depth = roots[~leaf[roots]], 0
    while frontier.size:  # every node has one parent at most, so this visits each node once
        depth += 1
        children = _children(frontier, true_next, false_next)
        reached[children] = True
        frontier = children[~leaf[children]]
    if not reached.all():
        raise kernel.fail(f"{name(int(np.argmin(reached)))} is not reached from any tree root (unreachable, "
                          "or on a cycle)")
    return depth


def _children(branches: np.ndarray, true_next: np.ndarray, false_next: np.ndarray) -> np.ndarray:
    """The children of `branches`, each once (a branch whose two sides agree has one child)."""
    on_true, on_false = true_next[branches], false_next[branches]
    return np.concatenate([on_true, on_false[on_false != on_true]])


def _check_targets(kernel: Kernel, key: str, ids: np.ndarray, count: int) -> None:
    bad = ids[(ids < 0) | (ids >= count)]
    if bad.size:
        raise kernel.fail(f"{key}: {int(bad[0])} is out of range [0, {count})")


def check_features(kernel: Kernel, forest: Forest, features: int) -> None:
    """ModelError when a branch reads a feature beyond X's `features` columns."""
    if forest.max_feature >= features:
        raise kernel.fail(f"nodes_featureids: feature {forest.max_feature} is out of range for X "
                          f"with {features} features")


class _NodeIndex:
    """Finds nodes by (tree id, node id), as TreeEnsembleClassifier/Regressor name them."""

    def __init__(self, kernel: Kernel, tree_ids: np.ndarray, node_ids: np.ndarray) -> None:
        self.kernel = kernel
        self.trees, self.tree_of = np.unique(tree_ids, return_inverse=True)
        self.ids = np.unique(node_ids)
        keys = self.tree_of * len(self.ids) + np.searchsorted(self.ids, node_ids)
        self.order = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]
        twice = np.nonzero(self.sorted[1:] == self.sorted[:-1])[0]
        if twice.size:
            i = self.order[twice[0] + 1]
            raise kernel.fail(f"tree {int(tree_ids[i])}: node id {int(node_ids[i])} appears twice")

    def locate(self, tree_ids: np.ndarray, node_ids: np.ndarray, what: str) -> np.ndarray:
        """The node positions of (tree, node) pairs; ModelError naming `what` for a missing one."""
        tree_at, tree_found = find(self.trees, tree_ids)
        id_at, id_found = find(self.ids, node_ids)
        at, found = find(self.sorted, tree_at * len(self.ids) + id_at)
        found &= tree_found & id_found
        if not found.all():
            i = int(np.argmin(found))
            raise self.kernel.fail(f"{what}: tree {int(tree_ids[i])} has no node {int(node_ids[i])}")
        return self.order[at]


def forest_from_ids(kernel: Kernel, prefix: str, n_targets: int) -> Forest:
    """The Forest of a TreeEnsembleClassifier (`prefix` "class") or Regressor ("target"):
    nodes named by (tree id, node id), weights on leaves named the same way."""
    tree_ids, node_ids = int64s(kernel, "nodes_treeids", True), int64s(kernel, "nodes_nodeids", True)
    feature = int64s(kernel, "nodes_featureids", True)
    modes = strings(kernel, "nodes_modes")
    true_ids, false_ids = int64s(kernel, "nodes_truenodeids", True), int64s(kernel, "nodes_falsenodeids", True)
    threshold = float64s_or_tensor(kernel, "nodes_values", required=True)
    nan_true = int64s(kernel, "nodes_missing_value_tracks_true")
    nan_true = None if nan_true is not None and nan_true.size == 0 else nan_true
    if modes is None:
        raise kernel.fail("attribute 'nodes_modes' is required")
    n = same_length(kernel, {"nodes_treeids": tree_ids, "nodes_nodeids": node_ids, "nodes_featureids": feature,
                              "nodes_modes": modes, "nodes_truenodeids": true_ids, "nodes_falsenodeids": false_ids,
                              "nodes_values": threshold, "nodes_missing_value_tracks_true": nan_true})
    if n == 0:
        raise kernel.fail("the ensemble has no nodes")
    unknown = [m for m in modes if m not in MODE_CODES]
    if unknown:
        raise kernel.fail(f"nodes_modes: unknown mode {unknown[0]!r} (expected LEAF or BRANCH_LEQ, BRANCH_LT, "
                          "BRANCH_GTE, BRANCH_GT, BRANCH_EQ, BRANCH_NEQ)")
    mode = np.array([MODE_CODES[m] for m in modes], np.int8)
    leaf = mode == LEAF
    index = _NodeIndex(kernel, tree_ids, node_ids)
    true_next, false_next = np.arange(n), np.arange(n)
    true_next[~leaf] = index.locate(tree_ids[~leaf], true_ids[~leaf], "nodes_truenodeids")
    false_next[~leaf] = index.locate(tree_ids[~leaf], false_ids[~leaf], "nodes_falsenodeids")
    if (feature[~leaf] < 0).any():
        raise kernel.fail(f"nodes_featureids: feature {int(feature[~leaf].min())} is negative")
    _, first = np.unique(index.tree_of, return_index=True)
    roots = np.sort(first)

    w_trees, w_nodes = int64s(kernel, f"{prefix}_treeids", True), int64s(kernel, f"{prefix}_nodeids", True)
    w_targets, weights = int64s(kernel, f"{prefix}_ids", True), float64s_or_tensor(kernel, f"{prefix}_weights", True)
    same_length(kernel, {f"{prefix}_treeids": w_trees, f"{prefix}_nodeids": w_nodes, f"{prefix}_ids": w_targets,
                          f"{prefix}_weights": weights})
    _check_targets(kernel, f"{prefix}_ids", w_targets, n_targets)
    rows = index.locate(w_trees, w_nodes, f"{prefix}_nodeids")
    on_leaf = leaf[rows]  # weights on branch nodes are ignored, as onnxruntime ignores them
    weight_start, weight_target, weight_value = _leaf_weights(n, rows[on_leaf], w_targets[on_leaf], weights[on_leaf])
    return Forest(
        feature=np.where(leaf, 0, feature), threshold=threshold, mode=mode, true_next=true_next,
        false_next=false_next, nan_true=np.zeros(n, bool) if nan_true is None else nan_true.astype(bool),
        members={}, roots=roots, weight_start=weight_start, weight_target=weight_target, weight_value=weight_value,
        n_targets=n_targets, depth=_depth(kernel, true_next, false_next, leaf, roots,
                                          lambda i: f"tree {int(tree_ids[i])}: node {int(node_ids[i])}"),
        max_feature=int(feature[~leaf].max(initial=-1)))


def _flags(kernel: Kernel, key: str, array: np.ndarray) -> np.ndarray:
    if array.size and not np.isin(array, (0, 1)).all():
        raise kernel.fail(f"{key}: expected 0 or 1 per node, got {int(array[~np.isin(array, (0, 1))][0])}")
    return array.astype(bool)


def _child_ids(kernel: Kernel, key: str, ids: np.ndarray, is_leaf: np.ndarray, nodes: int, leaves: int) -> np.ndarray:
    """Children as positions in nodes + leaves (leaf l at nodes + l); ModelError out of range."""
    limit = np.where(is_leaf, leaves, nodes)
    bad = (ids < 0) | (ids >= limit)
    if bad.any():
        i = int(np.argmax(bad))
        kind = "leaf" if is_leaf[i] else "node"
        raise kernel.fail(f"{key}: node {i} points to {kind} {int(ids[i])}, out of range [0, {int(limit[i])})")
    return np.where(is_leaf, nodes + ids, ids)


def _member_sets(kernel: Kernel, mode: np.ndarray) -> dict[int, np.ndarray]:
    """BRANCH_MEMBER node -> its set: membership_values lists the sets in node order, each
    ended by a NaN."""
    nodes = np.nonzero(mode == MEMBER)[0]
    values = float64s(kernel, "membership_values")
    if not nodes.size:
        return {}
    if values is None:
        raise kernel.fail(f"{nodes.size} BRANCH_MEMBER nodes need attribute 'membership_values'")
    ends = np.nonzero(np.isnan(values))[0]
    if len(ends) != nodes.size or not np.isnan(values[-1]):
        raise kernel.fail(f"membership_values holds {len(ends)} NaN-terminated sets; the {nodes.size} "
                          "BRANCH_MEMBER nodes need one each")
    sets = np.split(values, ends + 1)[:-1]
    return {int(node): np.unique(members[:-1]) for node, members in zip(nodes, sets, strict=True)}


def forest_from_arrays(kernel: Kernel, n_targets: int) -> Forest:
    """The Forest of a TreeEnsemble (opset 5): interior nodes by position, children flagged
    as nodes or leaves, one (target, weight) per leaf."""
    feature, splits = int64s(kernel, "nodes_featureids", True), float64s(kernel, "nodes_splits", True)
    mode = int64s(kernel, "nodes_modes", True)
    true_ids, false_ids = int64s(kernel, "nodes_truenodeids", True), int64s(kernel, "nodes_falsenodeids", True)
    true_leaf, false_leaf = int64s(kernel, "nodes_trueleafs", True), int64s(kernel, "nodes_falseleafs", True)
    nan_true = int64s(kernel, "nodes_missing_value_tracks_true")
    nan_true = None if nan_true is not None and nan_true.size == 0 else nan_true
    roots = int64s(kernel, "tree_roots", True)
    targets, weights = int64s(kernel, "leaf_targetids", True), float64s(kernel, "leaf_weights", True)
    n = same_length(kernel, {"nodes_featureids": feature, "nodes_splits": splits, "nodes_modes": mode,
                              "nodes_truenodeids": true_ids, "nodes_falsenodeids": false_ids,
                              "nodes_trueleafs": true_leaf, "nodes_falseleafs": false_leaf,
                              "nodes_missing_value_tracks_true": nan_true})
    leaves = same_length(kernel, {"leaf_targetids": targets, "leaf_weights": weights})
    if n == 0 or roots.size == 0:
        raise kernel.fail("the ensemble has no nodes (or no tree_roots)")
    if ((mode < 0) | (mode > MEMBER)).any():
        raise kernel.fail(f"nodes_modes: {int(mode[(mode < 0) | (mode > MEMBER)][0])} is not a mode (0..6)")
    if ((roots < 0) | (roots >= n)).any():
        raise kernel.fail(f"tree_roots: node {int(roots[(roots < 0) | (roots >= n)][0])} is out of range [0, {n})")
    if (feature < 0).any():
        raise kernel.fail(f"nodes_featureids: feature {int(feature.min())} is negative")
    _check_targets(kernel, "leaf_targetids", targets, n_targets)
    true_next = _child_ids(kernel, "nodes_truenodeids", true_ids, _flags(kernel, "nodes_trueleafs", true_leaf),
                           n, leaves)
    false_next = _child_ids(kernel, "nodes_falsenodeids", false_ids, _flags(kernel, "nodes_falseleafs", false_leaf),
                            n, leaves)
    own = np.arange(n, n + leaves)
    true_next, false_next = np.concatenate([true_next, own]), np.concatenate([false_next, own])
    all_modes = np.concatenate([mode, np.full(leaves, LEAF)]).astype(np.int8)
    weight_start, weight_target, weight_value = _leaf_weights(n + leaves, own, targets, weights)
    nan = np.zeros(n + leaves, bool)
    nan[:n] = False if nan_true is None else _flags(kernel, "nodes_missing_value_tracks_true", nan_true)
    return Forest(
        feature=np.concatenate([feature, np.zeros(leaves, np.int64)]),
        threshold=np.concatenate([splits, np.zeros(leaves)]), mode=all_modes, true_next=true_next,
        false_next=false_next, nan_true=nan, members=_member_sets(kernel, mode), roots=roots,
        weight_start=weight_start, weight_target=weight_target, weight_value=weight_value, n_targets=n_targets,
        depth=_depth(kernel, true_next, false_next, all_modes == LEAF, roots,
                     lambda i: f"node {i}" if i < n else f"leaf {i - n}"),
        max_feature=int(feature.max()))
