"""Window profiles: the reservoir is uniform."""


from __future__ import annotations

import numpy as np

from mlpulse.detectors.profile import Reservoir


def test_reservoir_is_uniform():
    rng = np.random.default_rng(12)
    reservoir = Reservoir(2000, rng)
    for i in range(20):
        reservoir.add(np.full(5000, float(i)))
    shares = np.bincount(reservoir.values.astype(int), minlength=20) / 2000
    assert shares.max() - shares.min() < 0.05
