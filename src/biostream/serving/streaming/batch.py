"""A batch of one engine: each bed's plan (its segments of new seconds, late merges, episodes touched), the windows
its new seconds are scored as (built a few at a time, never a message's whole), and the cache of beds' states."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from biostream.serving.streaming.answers import BedAnswer, Chunk
from biostream.serving.streaming.policy import Episode

if TYPE_CHECKING:
    from biostream.serving.streaming.engine import BedState


class StateCache(OrderedDict):
    """Beds' states, the least recently used dropped beyond `capacity` (they are read again from the store)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def get(self, bed: str, default: BedState | None = None) -> BedState | None:
        state = super().get(bed, default)
        if state is not None:
            self.move_to_end(bed)
        return state

    def __setitem__(self, bed: str, state: BedState) -> None:
        super().__setitem__(bed, state)
        self.move_to_end(bed)
        while len(self) > self.capacity:
            self.popitem(last=False)


class Windows:
    """The window ending at each new second of a batch's plans, in order (row i: (signals, W)), built a few rows at
    a time from each segment's history and new seconds; each segment's `last_row` is set to its newest row."""

    def __init__(self, plans: list[Plan], w: int) -> None:
        self.w = w
        self.parts: list[tuple[int, np.ndarray, np.ndarray]] = []  # (first row, history (S, W), new (S, m))
        row = 0
        for plan in plans:
            for seg in plan.segments:
                m = len(seg.new)
                if m:
                    seg.stacked = seg.new[0][:, None] if m == 1 else np.stack(seg.new, axis=1)
                    self.parts.append((row, seg.hist, seg.stacked))
                seg.last_row = row + m - 1 if m else None
                row += m
        self.n = row
        self._firsts = np.asarray([p[0] for p in self.parts], dtype=np.int64)
        self.last_rows = np.asarray([p[0] + p[2].shape[1] - 1 for p in self.parts], dtype=np.int64)
        self.newest_windows: dict[int, np.ndarray] = {}  # each segment's last window, kept as `_outputs` builds it

    def get(self, a: int, b: int) -> np.ndarray:
        """Rows a..b-1 (b - a, S, W)."""
        return self.rows(np.arange(a, b))

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """The windows of rows `idx` (ascending), as a new array (len(idx), S, W)."""
        w = self.w
        out = np.empty((len(idx), self._signals(), w))
        which = np.searchsorted(self._firsts, idx, side="right") - 1
        cuts = [0, *(np.flatnonzero(np.diff(which)) + 1).tolist(), len(idx)]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            first, hist, new = self.parts[which[a]]
            j = idx[a:b] - first  # the new second each window ends at (0-based in its segment)
            if b - a == 1:  # one window (a bed's usual second): its history's tail and its new seconds
                k = int(j[0])
                h = max(0, w - k - 1)
                out[a, :, :h] = hist[:, w - h:]
                out[a, :, h:] = new[:, k + 1 - (w - h):k + 1]
                continue
            lo, hi = int(j[0]), int(j[-1])
            # the stretch these windows read: history from lo + 1, new seconds up to hi
            span = np.concatenate([hist[:, min(lo + 1, w):], new[:, max(0, lo + 1 - w):hi + 1]], axis=1)
            out[a:b] = sliding_window_view(span, w, axis=1).transpose(1, 0, 2)[j - lo]
        return out

    def newest(self) -> np.ndarray:
        """Each row's own second (n, S), C order (as stored)."""
        if not self.parts:
            return np.empty((0, self._signals()))
        return np.ascontiguousarray(np.concatenate([new for _, _, new in self.parts], axis=1).T)

    def _signals(self) -> int:
        return self.parts[0][1].shape[0] if self.parts else 0


class Segment:
    """New seconds of one recording: from second `first`, after the (S, W) history `hist`."""

    def __init__(self, first: int, hist: np.ndarray, reset: bool, owned: bool = True) -> None:
        self.first, self.hist, self.reset = first, hist, reset
        self.owned = owned  # False: `hist` is the bed's cached state, copied before a late value is merged in
        self.new: list[np.ndarray] = []  # (S,) per second
        self.stacked: np.ndarray | None = None  # `new` as one (S, m) array (`Windows`)
        self.last_row: int | None = None  # the row of its newest second's window in the batch


class Plan:
    """One bed's part of a batch: its segments of new seconds, late merges, episodes touched."""

    def __init__(self, bed: str, state: BedState) -> None:
        self.bed, self.state = bed, state
        self.answer = BedAnswer(bed)
        self.segments = [Segment((state.last_second or 0) + 1, state.values, False, owned=False)]
        self.last_second, self.first_second = state.last_second, state.first_second
        self.merged: dict[int, np.ndarray] = {}
        self.beyond: list[tuple[Chunk, int, np.ndarray]] = []  # seconds older than the history: asked of the store
        self.refused: dict[int, tuple[Chunk, list[int]]] = {}  # per chunk (its id): its seconds not stored
        self.touched: dict[tuple[int, str], Episode] = {}  # by start and advisory kind ('' for an alarm)

    def new_segment(self, first: int, reset: bool) -> Segment:
        seg = Segment(first, np.full_like(self.segments[0].hist, np.nan), reset)
        self.segments.append(seg)
        return seg

    def column(self, last: int, t: int) -> np.ndarray:
        """Second t's values (t <= last, in the current recording), as a view to merge a late value into."""
        seg = self.segments[-1]
        back = last - t
        if back < len(seg.new):
            return seg.new[len(seg.new) - 1 - back]
        if not seg.owned:
            seg.hist, seg.owned = seg.hist.copy(), True
        return seg.hist[:, seg.hist.shape[1] - 1 - (back - len(seg.new))]
