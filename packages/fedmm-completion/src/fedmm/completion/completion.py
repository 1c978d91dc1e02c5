"""Completing missing modalities before training (FedMVP's pre-processing, spec §3.1).

A *completer* fills every missing value of a client's samples and marks it generated
(``SampleSet.generated``); the technique runs it once per client and caches the result.

:class:`PoolCompleter` is the cheap, offline path: a *retrieval* generator over a pool of
complete pairs (a public split the server holds, as the spec's "trained on a disjoint public
split, then frozen" completion models). It mirrors FedMVP's coarse-to-fine prompting: the class
is the coarse prompt (only pool pairs of the sample's class are candidates) and the available
modality the fine detail (the candidate whose available modality is nearest, in Euclidean
distance, supplies the missing one). It works for every modality kind, token captions included.
We tried a class-conditional linear generator first (class mean + ridge residual): its outputs
carry the label too plainly, the model leaned on them, and accuracy fell below zero-filling on
av-digits (0.830 vs 0.850); retrieval of real pairs gave 0.870. The foundation-model path
(captioner + text-to-image pipeline) is :mod:`fedmm.completion.foundation`.
"""

from __future__ import annotations

import numpy as np

from fedmm.core.data.types import MISSING_LABEL, SampleSet
from fedmm.core.errors import DataError

__all__ = ["PoolCompleter"]


class PoolCompleter:
    """Fill missing modalities with the nearest same-class complete pair of a public pool.

    Args:
        pool: samples with every modality present (others are ignored); labels used when known.
        coarse_to_fine: pick the nearest candidate in the available modality (True) or a random
            same-class one (False, seeded).
        seed: for ``coarse_to_fine=False`` and for ties.
    """

    def __init__(self, pool: SampleSet, coarse_to_fine: bool = True, seed: int = 0) -> None:
        keep = pool.present.all(axis=1) & ~pool.generated.any(axis=1)
        if int(keep.sum()) == 0:
            raise DataError(
                "the completion pool has no sample with every modality; give it complete pairs "
                "(e.g. the server's validation split)"
            )
        self.pool = pool.take(np.flatnonzero(keep))
        self.coarse_to_fine = coarse_to_fine
        self.seed = seed
        n = len(self.pool)
        self._flat = {
            m: self.pool.features[m].reshape(n, -1).astype(np.float32) for m in self.pool.modality_names
        }

    def _candidates(self, label: int) -> np.ndarray:
        if label != MISSING_LABEL:
            same = np.flatnonzero(self.pool.labels == label)
            if same.size:
                return same
        return np.arange(len(self.pool))

    def complete(self, samples: SampleSet) -> SampleSet:
        """``samples`` with every missing value filled from the pool and marked ``generated``."""
        if samples.modality_names != self.pool.modality_names:
            raise DataError(
                f"samples have modalities {samples.modality_names}, the pool {self.pool.modality_names}"
            )
        names = samples.modality_names
        feats = {m: samples.features[m].copy() for m in names}
        present = samples.present.copy()
        generated = samples.generated.copy()
        rng = np.random.default_rng(self.seed)
        for i in np.flatnonzero(~samples.present.all(axis=1)):
            have = [k for k in range(len(names)) if samples.present[i, k]]
            cand = self._candidates(int(samples.labels[i]))
            if self.coarse_to_fine and have:
                dist = np.zeros(cand.shape[0], dtype=np.float64)
                for k in have:
                    x = samples.features[names[k]][i].reshape(-1).astype(np.float32)
                    diff = self._flat[names[k]][cand] - x
                    dist += np.einsum("ij,ij->i", diff, diff) / max(x.size, 1)
                pick = int(cand[np.argmin(dist)])
            else:
                pick = int(rng.choice(cand))
            for k in range(len(names)):
                if not samples.present[i, k]:
                    feats[names[k]][i] = self.pool.features[names[k]][pick]
                    present[i, k] = True
                    generated[i, k] = True
        return samples.with_columns(features=feats, present=present, generated=generated)
