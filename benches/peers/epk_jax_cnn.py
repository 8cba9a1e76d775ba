"""Float64 reference for the exact path kernel of the digits CNN, in JAX (the MLP's is epk_jax.py).

Reads a store written by `examples/digits` with zarr-python 3: the weights of every step, the
learning rates, the batches, the data and the optimizer (docs/store.md). Nothing of epk's replay
is used; the network is written again here: conv 3x3 (1->8, pad 1), 2x2 max-pool, ReLU, conv
3x3 (8->16, pad 1), 2x2 max-pool, ReLU, linear 64->10 logits (Burn's layouts: conv weights
[out, in, kh, kw], the linear weight [in, out], flattening channels, rows, columns).

Per step s, with Delta w_s = w_{s+1} - w_s read from the store and a fixed rule (nodes t_q,
weights omega_q on [0, 1]):

    Jbar_s = sum_q omega_q J(w_s + t_q Delta w_s)                  [points, outputs, P]
    prediction = f(w_0) + sum_s Jbar_s Delta w_s

Burn's SGD with momentum mu and coupled weight decay lambda moves the weights by
Delta w_s = -lr_s v_s, v_s = mu v_{s-1} + g_s (v_0 = g_0), g_s = (1/B_s) sum_i grad l_i(w_s)
+ lambda w_s. So a training point i of step s reaches the prediction through every later step:
with U_s = lr_s Jbar_s + mu U_{s+1} (computed from the last step back), its term is
-U_s grad l_i(w_s) / B_s, and the decay's is -lambda U_s w_s. The whole replay is one
jax.lax.scan over the steps in reverse, XLA-compiled.

Printed (--json: one line per rule): the prediction's max error against the network f(w_S);
`attr_vs_path`, the largest difference between f(w_0) + every attribution + the decay's share and
the prediction, which is rounding only if the loss gradients recomputed here rebuild the recorded
steps (a check of the network written here, independent of the rule); `dloss_vs_store`, the
recomputed dl/df of every step's samples against the store's; and the wall time, the first run
including XLA's compilation.

    python benches/peers/epk_jax_cnn.py target/bench/digits.zarr --points 30 --rules gauss:2,mid:100
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import zarr

from epk_jax import rule  # the same nodes and weights on [0, 1] as the MLP's reference

jax.config.update("jax_enable_x64", True)


def f32(v):
    """Burn keeps momentum and the decay penalty as f32 (0.9 -> 0.8999999761581421)."""
    return float(np.float32(v))


class Store:
    def __init__(self, path):
        root = zarr.open_group(path, mode="r")
        meta = root.attrs["epk"]
        assert meta["model"]["kind"] == "cnn", meta["model"]["kind"]
        assert meta["loss"] == "cross_entropy", meta["loss"]
        self.config = meta["model"]["config"]
        self.params = meta["params"]
        s = int(meta["steps"])
        self.steps = s
        self.weights = np.asarray(root["weights"][: s + 1], dtype=np.float64)
        self.lr = np.asarray(root["lr"][:s], dtype=np.float64)
        self.batch_size = np.asarray(root["batch_size"][:s])
        self.batch_index = np.asarray(root["batch_index"][:s])
        self.dloss = np.asarray(root["dloss"][:s])
        self.x_train = np.asarray(root["train/inputs"][:], dtype=np.float64)
        self.y_train = np.asarray(root["train/targets"][:]).astype(np.int64).reshape(-1)
        self.x_eval = np.asarray(root["eval/inputs"][:], dtype=np.float64)
        opt = meta["optimizer"]
        assert opt["name"] == "sgd", opt
        cfg = opt["config"]
        mom = cfg.get("momentum") or {}
        assert not mom.get("nesterov", False) and f32(mom.get("dampening", 0.0)) == 0.0, mom
        assert cfg.get("gradient_clipping") is None, cfg
        self.mu = f32(mom.get("momentum", 0.0))
        self.decay = f32((cfg.get("weight_decay") or {}).get("penalty", 0.0))


def network(store):
    """f(w, x): logits of the digits CNN for flat weights w in the store's order."""
    side = store.config["side"]
    pieces = [(p["path"], p["offset"], p["len"], tuple(p["shape"])) for p in store.params]

    def unflatten(w):
        return {path: w[o : o + n].reshape(shape) for path, o, n, shape in pieces}

    def conv(x, W, b):
        # As patches times a matrix (im2col): XLA's CPU convolution has no fast float64 kernel,
        # its dot does. The patches' features run (channel, row, column), as W's last three axes.
        patches = jax.lax.conv_general_dilated_patches(
            x, (3, 3), (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NCHW", "OIHW", "NCHW"))
        y = jnp.einsum("nfhw,of->nohw", patches, W.reshape(W.shape[0], -1),
                       precision=jax.lax.Precision.HIGHEST)
        return y + b[None, :, None, None]

    def pool(x):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))

    def f(w, x):
        p = unflatten(w)
        x = x.reshape(x.shape[0], 1, side, side)
        x = jax.nn.relu(pool(conv(x, p["conv1.weight"], p["conv1.bias"])))
        x = jax.nn.relu(pool(conv(x, p["conv2.weight"], p["conv2.bias"])))
        x = x.reshape(x.shape[0], -1)
        return jnp.dot(x, p["head.weight"], precision=jax.lax.Precision.HIGHEST) + p["head.bias"]

    return f


def replay(store, f, n, k, nodes, weights):
    """The compiled replay of n held-out points: xt -> (prediction, attributions [points, train
    points, outputs], the decay's share, the largest dl/df error)."""
    m = store.x_train.shape[0]
    X, Y = jnp.asarray(store.x_train), jnp.asarray(store.y_train)
    jac = jax.vmap(jax.jacrev(lambda w, x: f(w, x[None])[0]), in_axes=(None, 0))

    def sample_loss(w, x, y):
        return -jax.nn.log_softmax(f(w, x[None])[0])[y]

    sample_grads = jax.vmap(jax.grad(sample_loss), in_axes=(None, 0, 0))
    dloss = jax.vmap(lambda w, x, y: jax.grad(lambda o: -jax.nn.log_softmax(o)[y])(f(w, x[None])[0]),
                     in_axes=(None, 0, 0))
    nodes, weights = jnp.asarray(nodes), jnp.asarray(weights)

    def back(xt, carry, s):
        U, attr, decay_share, dl_err = carry
        ws, wn = W[s], W[s + 1]
        d = wn - ws
        Jbar = jax.lax.fori_loop(0, nodes.shape[0],
                                 lambda q, acc: acc + weights[q] * jac(ws + nodes[q] * d, xt),
                                 jnp.zeros((n, k, ws.size)))
        U = lr[s] * Jbar + mu * U
        idx = index[s]
        live = jnp.arange(idx.shape[0]) < size[s]
        safe = jnp.where(live, idx, 0)
        G = sample_grads(ws, X[safe], Y[safe]) * live[:, None] / size[s]  # [B, P]
        attr = attr.at[:, safe, :].add(-jnp.einsum("nkp,bp->nbk", U, G))
        decay_share = decay_share - decay * jnp.einsum("nkp,p->nk", U, ws)
        dl = dloss(ws, X[safe], Y[safe]) / size[s]  # the store keeps the batch mean's
        dl_err = jnp.maximum(dl_err, jnp.max(jnp.where(live[:, None], jnp.abs(dl - DL[s]), 0.0)))
        return (U, attr, decay_share, dl_err), jnp.einsum("nkp,p->nk", Jbar, d)

    W = jnp.asarray(store.weights)
    lr, mu, decay = jnp.asarray(store.lr), store.mu, store.decay
    index, size = jnp.asarray(store.batch_index), jnp.asarray(store.batch_size)
    DL = jnp.asarray(store.dloss[:, : index.shape[1], :])

    @jax.jit
    def run(xt):
        init = (jnp.zeros((n, k, W.shape[1])), jnp.zeros((n, m, k)), jnp.zeros((n, k)), 0.0)
        (U, attr, decay_share, dl_err), steps = jax.lax.scan(
            lambda c, s: back(xt, c, s), init, jnp.arange(store.steps - 1, -1, -1))
        return f(W[0], xt) + steps.sum(axis=0), attr, decay_share, dl_err

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--points", type=int, default=30)
    ap.add_argument("--rules", default="gauss:2,gauss:8,mid:100")
    ap.add_argument("--repeat", type=int, default=2, help="runs per rule; the first includes XLA compilation")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    store = Store(a.store)
    f = network(store)
    xt = jnp.asarray(store.x_eval[: a.points])
    target = f(jnp.asarray(store.weights[-1]), xt)
    b = f(jnp.asarray(store.weights[0]), xt)
    for spec in a.rules.split(","):
        name, T = spec.split(":")
        run = replay(store, f, xt.shape[0], target.shape[1], *rule(name, int(T)))
        times = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            pred, attr, decay_share, dl_err = run(xt)
            pred.block_until_ready()
            attr.block_until_ready()
            times.append(time.perf_counter() - t0)
        err = float(jnp.max(jnp.abs(pred - target)))
        rebuilt = b + attr.sum(axis=1) + decay_share
        attr_vs_path = float(jnp.max(jnp.abs(rebuilt - pred)))
        row = {"rule": spec, "max_abs_err": err, "attr_vs_path": attr_vs_path,
               "dloss_vs_store": float(dl_err), "seconds_first": times[0],
               "seconds_best": min(times), "params": int(store.weights.shape[1]),
               "train_points": int(store.x_train.shape[0]), "test_points": int(xt.shape[0]),
               "steps": store.steps}
        if a.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"rule={spec:>8} max_abs_err={err:.3e} attr_vs_path={attr_vs_path:.1e} "
                  f"dloss_vs_store={float(dl_err):.1e} seconds_first={times[0]:.2f} "
                  f"seconds_best={min(times):.2f}", flush=True)


if __name__ == "__main__":
    main()
