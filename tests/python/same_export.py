"""Checks that `replay verify --out` exports of one job, computed differently (one process,
MPI ranks, shards joined by `replay reduce`), hold the same machine: every array within 1e-15
relative to its value (absolute below 1).

    python same_export.py REFERENCE OTHER [OTHER ...]
"""

import sys

import numpy as np
import xarray as xr

BOUND = 1e-15
reference = xr.open_zarr(sys.argv[1], consolidated=False)
for path in sys.argv[2:]:
    other = xr.open_zarr(path, consolidated=False)
    for name in ["attributions", "bias", "nondata", "residual", "network"]:
        a, b = other[name].values, reference[name].values
        assert a.shape == b.shape, (path, name, a.shape, b.shape)
        gap = float((np.abs(a - b) / np.maximum(np.abs(b), 1.0)).max())
        print(f"{path}: {name} {gap:.1e}")
        assert gap <= BOUND, (path, name, gap)
print(f"{len(sys.argv) - 2} exports equal {sys.argv[1]} within {BOUND:g}")
