"""Reads a `replay verify|attribute|layers --out` export with xarray, as docs/attributions.md
shows, and checks b + Σ_i A + N + R = f to the export's stated error."""

import sys

import numpy as np
import xarray as xr

ds = xr.open_zarr(sys.argv[1], consolidated=False)
print(ds)
a = ds["attributions"]
assert a.dims == ("point", "train_sample", "output"), a.dims
total = ds["bias"] + a.sum("train_sample") + ds["nondata"] + ds["residual"]
error = float(np.abs(total - ds["network"]).max())
stated = ds.attrs["epk_export"]["max_abs_error"]
assert error <= max(2 * stated, 1e-15), (error, stated)
# The ten training samples that pushed the first point's predicted class up most.
first = ds.isel(point=0)
k = int(first["network"].argmax("output"))
top = first["attributions"].isel(output=k).to_series().nlargest(10)
print(f"point {int(first['point'])}, class {k}: b + ΣA + N + R − f = {error:.1e}")
print(top.to_string())
if "layer_attributions" in ds:
    layers = ds["layer_attributions"].sum("layer")
    assert float(np.abs(layers - a).max()) < 1e-12
    print("layers:", ds.attrs["epk_export"]["layers"])
