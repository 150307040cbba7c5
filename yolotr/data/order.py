"""The deterministic global sample order of an epoch, and how it is cut into steps and ranks.

This is the whole resume design (Megatron/OLMo style: one global cursor over a deterministic global order):

* The order of epoch e is a pure function of (seed, e, index): shards are permuted, then the samples of each window
  of `window_shards` consecutive (permuted) shards are permuted together. Windows keep a batch's reads within a few
  shard files; mixing within a window breaks up runs of similar samples stored together.
* Global step s consumes global positions [s·G, (s+1)·G); rank r of W takes [s·G + r·G/W, s·G + (r+1)·G/W).
  Every rank therefore gets `steps_per_epoch = N // G` batches of G/W positions for any shard and rank count;
  the last N mod G positions of each epoch's order (different samples each epoch) are dropped, and counted.
* A position (epoch, step) names the same samples for any world size or worker count, so a checkpointed position
  resumes exactly on 2→1, 1→2 or 2→4 ranks, provided G (and seed, window, dataset) stay the same.
"""

from __future__ import annotations

import hashlib

import numpy as np


def epoch_order(shard_sizes: list[int] | np.ndarray, *, seed: int, epoch: int, window_shards: int) -> np.ndarray:
    """(N,) int64 global sample ids in the order epoch `epoch` visits them."""
    if window_shards < 1:
        raise ValueError(f"shuffle_window_shards must be >= 1, got {window_shards}")
    sizes = np.asarray(shard_sizes, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    # SeedSequence mixes (seed, epoch) into a well-spread state; a plain seed+epoch would correlate epochs.
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)])))
    shard_order = rng.permutation(len(sizes))
    windows = []
    for first in range(0, len(shard_order), window_shards):
        ids = np.concatenate([np.arange(starts[s], starts[s + 1]) for s in shard_order[first:first + window_shards]])
        windows.append(rng.permutation(ids))
    return np.concatenate(windows) if windows else np.zeros(0, dtype=np.int64)


def order_digest(order: np.ndarray) -> str:
    """A short hash of an order, saved with stream states to detect a library change that alters the order."""
    return hashlib.sha256(np.ascontiguousarray(order, dtype=np.int64).tobytes()).hexdigest()[:16]


def local_positions(step: int, *, rank: int, world_size: int, global_batch_size: int) -> range:
    """Positions in the epoch order that rank `rank` turns into its batch of global step `step`."""
    local = global_batch_size // world_size
    first = step * global_batch_size + rank * local
    return range(first, first + local)


def check_batch_split(global_batch_size: int, world_size: int, rank: int) -> None:
    """Refuses splits that cannot give every rank the same number of samples per step."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if global_batch_size < 1 or global_batch_size % world_size:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the world size {world_size}: every rank must "
            f"get the same number of samples per step; choose a global batch size that is a multiple of {world_size}")
