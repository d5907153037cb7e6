"""scikit-learn's Isolation Forest scores, computed by a compiled walk of the forest's flattened trees.

`IsolationForest.score_samples` walks each tree with a Cython `apply`, after copying every row's feature subset for
every tree, one numpy pass per tree, on one core: slow over a study's validation rows, and costly per served row
(docs/benchmarks.md). Here a forest is one set of node arrays (`FlatForest`) walked by a `nogil` numba loop: a block
of rows descends a tree one level at a time (the tree and the rows stay in cache, and no branch depends on the
data), and large batches are split over threads. The scores are scikit-learn's to the bit (`FlatForest`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from threading import Lock

import numba
import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length

BLOCK_ROWS = 512  # rows that descend a tree together
THREAD_ROWS = 16384  # batches larger than this are split over threads (one per core)

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = Lock()


@numba.njit(nogil=True, cache=True)
def _level_order(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One tree's nodes renumbered breadth first so that a split node's children are neighbours:
    (old index of each new node, new index of each new node's left child; a leaf points at itself)."""
    n = left.shape[0]
    old = np.empty(n, dtype=np.int64)
    child = np.empty(n, dtype=np.int64)
    old[0] = 0
    filled = 1
    for new in range(n):  # `old` grows behind this loop: a queue in breadth-first order
        o = old[new]
        if left[o] < 0:
            child[new] = new
        else:
            child[new] = filled
            old[filled] = left[o]
            old[filled + 1] = right[o]
            filled += 2
    return old, child


@numba.njit(nogil=True, cache=True)
def _forest_depths(X: np.ndarray, roots: np.ndarray, levels: np.ndarray, feature: np.ndarray,
                   threshold: np.ndarray, child: np.ndarray, missing_left: np.ndarray, leaf_value: np.ndarray,
                   out: np.ndarray) -> None:
    """out[i] = the sum over trees, in order, of `leaf_value` at the leaf row i of X (float32) reaches. Every
    row descends `levels[t]` times: a leaf's child is itself and its threshold +inf, so it stays."""
    n = X.shape[0]
    node = np.empty(BLOCK_ROWS, dtype=np.int64)
    for lo in range(0, n, BLOCK_ROWS):
        m = min(n, lo + BLOCK_ROWS) - lo
        for i in range(m):
            out[lo + i] = 0.0
        for t in range(roots.shape[0]):
            for i in range(m):
                node[i] = roots[t]
            for _ in range(levels[t]):
                for i in range(m):
                    k = node[i]
                    x = X[lo + i, feature[k]]
                    node[i] = child[k] + ((x > threshold[k]) | ((x != x) & (not missing_left[k])))
            for i in range(m):
                out[lo + i] += leaf_value[node[i]]


@dataclass(frozen=True)
class FlatForest:
    """A fitted IsolationForest's trees as one set of node arrays, each tree's nodes breadth first; node
    features index the forest's input columns (each tree's feature subset resolved).

    The arithmetic is scikit-learn's, in its order, so the scores are the same to the bit: a float32 row value
    (scikit-learn's tree input) goes right when it is above the float64 threshold, a NaN where the node's
    `missing_go_to_left` says, each tree adds `depth + c(samples in the leaf) - 1` to the row's float64 sum in tree
    order, and the score is `2 ** -(sum / (n_trees * c(max_samples)))`. It reads attributes scikit-learn keeps
    private (`_max_features`, `_decision_path_lengths`, `_average_path_length_per_tree`; scikit-learn is pinned),
    so tests/model/test_forest_kernel.py, which holds it to `score_samples`, is what a scikit-learn upgrade must
    pass."""

    roots: np.ndarray  # (n_trees,) int64: each tree's first node
    levels: np.ndarray  # (n_trees,) int64: each tree's depth
    feature: np.ndarray  # int64 column of X at each node (0 at leaves)
    threshold: np.ndarray  # float64; +inf at leaves
    child: np.ndarray  # int64 index of the left child (the right one follows it); a leaf's own index
    missing_left: np.ndarray  # bool: a NaN goes left (True at leaves)
    leaf_value: np.ndarray  # float64 at leaves: depth + c(samples in the leaf) - 1; 0 elsewhere
    denominator: float  # n_trees * c(max_samples)
    n_features: int

    @classmethod
    def of(cls, forest: IsolationForest) -> FlatForest:
        # as score_samples: a tree reads its feature subset only when the forest subsamples features
        subsample = forest._max_features != forest.n_features_in_
        parts: list[tuple[np.ndarray, ...]] = []
        roots, levels, offset = [], [], 0
        for est, feats, depth, avg in zip(forest.estimators_, forest.estimators_features_,
                                          forest._decision_path_lengths, forest._average_path_length_per_tree,
                                          strict=True):
            tree = est.tree_
            old, child = _level_order(tree.children_left.astype(np.int64), tree.children_right.astype(np.int64))
            leaf = tree.children_left[old] < 0
            cols = tree.feature[old].clip(0)
            if subsample:
                cols = np.asarray(feats, dtype=np.int64)[cols]
            missing = getattr(tree, "missing_go_to_left", None)
            missing = np.ones(len(old), dtype=bool) if missing is None else np.asarray(missing, dtype=bool)[old]
            parts.append((np.where(leaf, 0, cols).astype(np.int64), np.where(leaf, np.inf, tree.threshold[old]),
                          child + offset, missing | leaf, np.where(leaf, (depth + avg - 1.0)[old], 0.0)))
            roots.append(offset)
            levels.append(tree.max_depth)
            offset += len(old)
        feature, threshold, child, missing_left, leaf_value = (np.concatenate(a) for a in zip(*parts, strict=True))
        denominator = len(forest.estimators_) * float(_average_path_length([forest._max_samples])[0])
        return cls(np.asarray(roots, dtype=np.int64), np.asarray(levels, dtype=np.int64), feature, threshold, child,
                   missing_left, leaf_value, denominator, int(forest.n_features_in_))

    def _depths(self, X: np.ndarray, out: np.ndarray) -> None:
        _forest_depths(X, self.roots, self.levels, self.feature, self.threshold, self.child, self.missing_left,
                       self.leaf_value, out)

    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        """-IsolationForest.score_samples(X): higher is more anomalous."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {X.shape}")
        depths = np.empty(len(X), dtype=np.float64)
        workers = min(os.cpu_count() or 1, -(-len(X) // THREAD_ROWS))
        if workers <= 1:
            self._depths(X, depths)
        else:
            cut = np.linspace(0, len(X), workers + 1).astype(int)
            list(_pool().map(lambda k: self._depths(X[cut[k] : cut[k + 1]], depths[cut[k] : cut[k + 1]]),
                             range(workers)))
        if self.denominator == 0:  # one training sample: scikit-learn's ratio is 1 for every row
            return np.full(len(X), 0.5)
        return 2 ** (-(depths / self.denominator))


def _pool() -> ThreadPoolExecutor:
    """Threads for large batches, made on first use (the kernel releases the GIL)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="forest")
        return _POOL
