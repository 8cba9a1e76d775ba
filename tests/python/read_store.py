"""Reads an epk store with zarr-python 3, as a Python user would (see docs/store.md).

Usage: python tests/python/read_store.py STORE
Exits non-zero if the store does not read back as the documented layout.
"""
import sys

import numpy as np
import zarr

def check(path):
    """Reads the committed prefix of the store at `path`; raises if it is not as documented."""
    root = zarr.open_group(path, mode="r")
    epk = root.attrs["epk"]
    assert epk["format"] == "epk" and epk["version"] == 2, epk
    steps, P, K, B = epk["steps"], epk["num_params"], epk["outputs"], epk["max_batch"]

    weights = root["weights"]
    assert weights.metadata.dimension_names == ("state", "param"), weights.metadata.dimension_names
    assert weights.shape[0] >= steps + 1 and weights.shape[1] == P
    w = weights[: steps + 1]
    assert np.isfinite(w).all()
    assert str(weights.dtype) == {"f64": "float64", "f32": "float32"}[epk["dtype"]]

    lr = root["lr"][:steps]
    sizes = root["batch_size"][:steps]
    index = root["batch_index"][:steps]
    dloss = root["dloss"][:steps]
    assert dloss.shape == (steps, B, K)
    n_train = epk["train_samples"]
    for s in range(steps):
        n = int(sizes[s])
        assert 1 <= n <= B
        assert ((index[s, :n] >= 0) & (index[s, :n] < n_train)).all()
        assert (index[s, n:] == -1).all()
        assert np.isfinite(dloss[s, :n]).all()

    x = root["train/inputs"][:]
    y = root["train/targets"][:]
    assert x.shape == (n_train, *epk["input_shape"]) and y.shape == (n_train,)
    offsets = [p["offset"] for p in epk["params"]]
    assert offsets == sorted(offsets) and sum(p["len"] for p in epk["params"]) == P

    # The parameter layout slices the flat vector into the model's tensors.
    first = epk["params"][0]
    tensor = w[-1, first["offset"] : first["offset"] + first["len"]].reshape(first["shape"])
    return (
        f"ok: {steps} steps, {P} parameters ({first['path']} {tensor.shape}), "
        f"lr[0]={lr[0]}, {n_train} training samples, {epk['eval_samples']} held-out"
    )


if __name__ == "__main__":
    print(check(sys.argv[1]))
