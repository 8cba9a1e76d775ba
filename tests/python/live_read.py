"""Opens a store again and again while a training run writes it, and reads the newest
committed step each time (the one a torn commit would damage).

Usage: python tests/python/live_read.py STORE SECONDS
Prints the number of opens and failures; exits non-zero on any failure.
"""
import sys
import time

import numpy as np
import zarr


def newest_step(path):
    root = zarr.open_group(path, mode="r")
    epk = root.attrs["epk"]
    steps = epk["steps"]
    assert root["weights"].shape[0] >= steps + 1
    assert np.isfinite(root["weights"][steps]).all()
    if steps > 0:
        n = int(root["batch_size"][steps - 1])
        idx = root["batch_index"][steps - 1]
        assert 1 <= n <= epk["max_batch"]
        assert (idx[:n] >= 0).all() and (idx[n:] == -1).all()
        assert np.isfinite(root["dloss"][steps - 1][:n]).all()
        assert np.isfinite(root["lr"][steps - 1])
    return steps


path, seconds = sys.argv[1], float(sys.argv[2])
deadline = time.time() + seconds
opens, failures, last = 0, [], -1
while time.time() < deadline:
    try:
        steps = newest_step(path)
    except FileNotFoundError:
        time.sleep(0.005)  # the store does not exist yet
        continue
    except Exception as e:
        opens += 1
        failures.append(repr(e))
        continue
    opens += 1
    if steps < last:
        failures.append(f"committed steps went back from {last} to {steps}")
    last = steps
print(f"live reading from Python: {opens} opens, {len(failures)} failures, last committed step {last}")
for f in failures[:5]:
    print("  ", f)
sys.exit(1 if failures or opens == 0 else 0)
