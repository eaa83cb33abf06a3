"""Learning algorithms written as LSA weights, in the exact pytree `LSATransformer.init` returns.

Column form, token e = (x, y), E = d + d_y (docs/theory.md §1):
- GD step (Proposition 1 of von Oswald et al., arXiv 2212.07677):
  W_K = W_Q = [[I_d, 0], [0, 0]], W_V = [[0, 0], [W0, −I]], P = (η/N) I, so every token
  becomes (x_j, y_j − ΔW x_j) with ΔW = −(η/N) Σ_i (W0 x_i − y_i) x_iᵀ.
- GD++ (same paper): W_V = [[I, 0], [W0, −I]], P = diag(−γ I_d, (η/N) I), which also moves
  every input, x_j ← (I − γH) x_j with H = Σ_i x_i x_iᵀ.
A GD layer is the GD++ layer with γ = 0. Head 0 carries the construction; other heads are 0.
- `feature_gd_lsa_params`: the same GD step on learned features (m(x), y) (Proposition 2).
- `copy_gd_weights`, on the standard tokens of `StandardTokenTransformer` (Proposition 3 of the
  same paper): layer 1 gives every x-token the logit τ on its right
  neighbour (its y-token) and 0 elsewhere, and y-tokens and the query the logit τ on
  themselves, and writes the attended token's y-slot into the attending token's y-slot.
  Keys are all S tokens. Then x-token 2i holds (x_i, e_{2i}, y_i + O(N e^{−τ})): the copy is
  exact as τ → ∞. Layer 2 is the GD construction (`gd_weights`) on the
  (x-slot, position) block of width d + P, with the 2N context tokens as keys. The y-tokens
  take part exactly, with weight 0: a y-token's key score with the query is
  (0, e_{2i+1})ᵀ(x_q, e_{2N}) = 0, and an x-token's is x_iᵀx_q, since one-hot positions of
  different tokens are orthogonal. So ŷ is one GD step on the copied pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.core.models import (
    DepthMomentumLSA,
    FeatureLSA,
    LSATransformer,
    StandardTokenTransformer,
)


def _per_layer(values: float | Sequence[float], num_layers: int, name: str) -> np.ndarray:
    """Broadcast a scalar or check a length-K sequence of per-layer values."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0:
        return np.full(num_layers, float(arr))
    if arr.shape != (num_layers,):
        raise ValueError(
            f"{name} needs a scalar or {num_layers} values (one per layer), got shape {arr.shape}"
        )
    return arr


def _check_w0(model: LSATransformer, w0: jax.Array | None) -> jax.Array:
    shape = (model.d_y, model.d)
    if w0 is None:
        return jnp.zeros(shape)
    if jnp.shape(w0) != shape:
        raise ValueError(f"w0 has shape {jnp.shape(w0)} but the model expects (d_y, d) = {shape}")
    return jnp.asarray(w0)


def gdpp_layer_weights(
    model: LSATransformer, eta: float, gamma: float, n_context: int, w0: jax.Array | None = None
) -> dict[str, jax.Array]:
    """One layer's weights (H, k, E) / (H, E, k) implementing a GD++ step (γ = 0: a GD step)."""
    d, d_y, e, k, h = model.d, model.d_y, model.token_dim, model.head_size, model.num_heads
    if k < e:
        raise ValueError(f"the GD constructions need key_size >= d + d_y = {e}, model has {k}")
    if n_context < 1:
        raise ValueError(f"n_context must be >= 1, got {n_context}")
    w0 = _check_w0(model, w0)
    eye_d, eye_y = jnp.eye(d), jnp.eye(d_y)
    w_qk = jnp.zeros((h, k, e)).at[0, :d, :d].set(eye_d)
    w_v = jnp.zeros((h, k, e)).at[0, :d, :d].set(eye_d)
    w_v = w_v.at[0, d:e, :d].set(w0).at[0, d:e, d:].set(-eye_y)
    w_p = jnp.zeros((h, e, k)).at[0, :d, :d].set(-gamma * eye_d)
    w_p = w_p.at[0, d:, d:e].set((eta / n_context) * eye_y)
    return {"w_q": w_qk, "w_k": w_qk, "w_v": w_v, "w_p": w_p}


def gdpp_weights(
    model: LSATransformer,
    etas: float | Sequence[float],
    gammas: float | Sequence[float],
    n_context: int,
    w0: jax.Array | None = None,
) -> dict:
    """Params for K GD++ layers (η_k, γ_k), structured exactly like `model.init`'s.

    A model with shared weights needs the same (η, γ) in every layer.
    """
    etas = _per_layer(etas, model.num_layers, "etas")
    gammas = _per_layer(gammas, model.num_layers, "gammas")
    if model.shared_weights:
        if np.ptp(etas) > 0 or np.ptp(gammas) > 0:
            raise ValueError(
                "a model with shared_weights=True applies one layer K times; "
                "give one η and one γ (or equal values per layer)"
            )
        return {"params": gdpp_layer_weights(model, etas[0], gammas[0], n_context, w0)}
    layers = [
        gdpp_layer_weights(model, eta, gamma, n_context, w0)
        for eta, gamma in zip(etas, gammas, strict=True)
    ]
    return {"params": jax.tree.map(lambda *a: jnp.stack(a), *layers)}


def gd_weights(
    model: LSATransformer,
    etas: float | Sequence[float],
    n_context: int,
    w0: jax.Array | None = None,
) -> dict:
    """Params for K GD steps from W0 with step η_k (1/N inside η), one step per layer.

    Feed tokens from `prompt_tokens(prompt, w0)`; then ŷ equals W_K x_q of explicit GD.
    """
    return gdpp_weights(model, etas, 0.0, n_context, w0)


def preconditioned_gd_weights(model: LSATransformer, gamma_DxD: jax.Array, n_context: int) -> dict:
    """Params of one LSA layer computing one preconditioned GD step from 0, ŷ = x_qᵀ Γ h.

    Column form, with h = Xᵀy/N (docs/theory.md §0, §5):
    W_Q = [[Γᵀ, 0], [0, 0]], W_K = [[I_d, 0], [0, 0]], W_V = [[0, 0], [0, −I]], P = (1/N) I, so
    W_KQ = [[Γᵀ, 0], [0, 0]] and the query's y-slot becomes −(1/N) Σ_i y_i x_iᵀ Γᵀ x_q, i.e.
    ŷ = W x_q with W = (1/N) Yᵀ X Γᵀ: the step W ← W − ∇L(W) Γᵀ on L of docs/theory.md §0, which is
    x_qᵀ Γ h for d_y = 1 and the same Γ for every output when d_y > 1. Γ = ηI is the GD
    construction. Head 0 carries it; other heads are 0. Only one-layer models: a second
    layer would be a second preconditioned step, which has no explicit learner here.
    """
    d, d_y, e, k, h = model.d, model.d_y, model.token_dim, model.head_size, model.num_heads
    if model.num_layers != 1:
        raise ValueError(
            f"preconditioned_gd_weights builds one layer; the model has K = {model.num_layers}"
        )
    if k < e:
        raise ValueError(f"the construction needs key_size >= d + d_y = {e}, model has {k}")
    if n_context < 1:
        raise ValueError(f"n_context must be >= 1, got {n_context}")
    if jnp.shape(gamma_DxD) != (d, d):
        raise ValueError(f"gamma has shape {jnp.shape(gamma_DxD)}; the model needs ({d}, {d})")
    w_q = jnp.zeros((h, k, e)).at[0, :d, :d].set(jnp.asarray(gamma_DxD).T)
    w_k = jnp.zeros((h, k, e)).at[0, :d, :d].set(jnp.eye(d))
    w_v = jnp.zeros((h, k, e)).at[0, d:e, d:].set(-jnp.eye(d_y))
    w_p = jnp.zeros((h, e, k)).at[0, d:, d:e].set(jnp.eye(d_y) / n_context)
    layer = {"w_q": w_q, "w_k": w_k, "w_v": w_v, "w_p": w_p}
    if model.shared_weights:
        return {"params": layer}
    return {"params": jax.tree.map(lambda a: a[None], layer)}


def heavy_ball_weights(
    model: DepthMomentumLSA,
    etas: float | Sequence[float],
    betas: float | Sequence[float],
    n_context: int,
    w0: jax.Array | None = None,
) -> dict:
    """Params of a `DepthMomentumLSA` running K heavy-ball GD steps (η_k, β), exactly.

    The attention of layer k is the GD construction with step η_k (`gd_weights`); the
    model's velocity v_k = Δ_k + β v_{k−1} then gives the y-slots y_j − W_k x_j with
    W_{k+1} = W_k − η_k ∇L(W_k) + β (W_k − W_{k−1}), W_{−1} = W_0, and ŷ = W_K x_q.
    The model has one β for all layers, so `betas` is a scalar or K equal values; a model
    with a fixed `momentum` needs β equal to it. Structured exactly like `model.init`'s.
    """
    betas = _per_layer(betas, model.num_layers, "betas")
    if np.ptp(betas) > 0:
        raise ValueError(
            f"DepthMomentumLSA shares one β across its layers; got different betas {betas}"
        )
    beta = float(betas[0])
    if model.momentum is not None and beta != model.momentum:
        raise ValueError(f"the model fixes β = {model.momentum}, but betas give β = {beta}")
    params = gd_weights(model, etas, n_context, w0)
    if model.momentum is None:
        params["params"]["beta"] = jnp.asarray(beta, params["params"]["w_q"].dtype)
    return params


# --- Learned features and standard tokens -----------------------------------------------------


def feature_gd_lsa_params(model: FeatureLSA, feature_gd_params: dict, n_context: int) -> dict:
    """`FeatureLSA` params that compute the `FeatureGD` with `feature_gd_params` exactly.

    The same MLP, then the GD construction (Proposition 1) with the learner's η on tokens
    (m(x), y): Proposition 2 of von Oswald et al. η must be a concrete number.
    """
    params = feature_gd_params["params"]
    lsa = LSATransformer(d=model.embed_dim, d_y=model.d_y)
    eta = float(np.asarray(params["eta"]))
    return {
        "params": {"features": params["features"], "lsa": gd_weights(lsa, eta, n_context)["params"]}
    }


def copy_targets(n_context: int) -> np.ndarray:
    """(S, S) 0/1 matrix of the construction's attention targets: x-token 2i → 2i + 1, and
    every y-token and the query → itself."""
    num_tokens = 2 * n_context + 1
    targets = np.eye(num_tokens)
    for i in range(n_context):
        targets[2 * i, 2 * i] = 0.0
        targets[2 * i, 2 * i + 1] = 1.0
    return targets


def copy_layer_weights(model: StandardTokenTransformer, temperature: float) -> dict:
    """Softmax-layer params (H, k, W) / (H, W, k) that copy each y_i into its x-token.

    Logit(p → t) = τ·targets[p, t] (`copy_targets`): W_K reads the key's one-hot position,
    W_Q = τ√k · targetsᵀ on the query's position (cancelling the 1/√k). W_V reads the
    key's y-slot and P writes it into the attending token's y-slot. Head 0 copies; other
    heads are 0. The mass off the target is (S − 1)/(e^τ + S − 1) ≤ 2N e^{−τ}.
    """
    d, d_y, p, w, h = model.d, model.d_y, model.num_positions, model.width, model.num_heads
    k = w if model.key_size is None else model.key_size
    if k < max(p, d_y):
        raise ValueError(f"the copy layer needs key_size >= max(P, d_y) = {max(p, d_y)}, got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    targets = jnp.asarray(copy_targets(model.n_context))
    pos = slice(d, d + p)
    y_slot = slice(d + p, w)
    w_q = jnp.zeros((h, k, w)).at[0, :p, pos].set(temperature * np.sqrt(k) * targets.T)
    w_k = jnp.zeros((h, k, w)).at[0, :p, pos].set(jnp.eye(p))
    w_v = jnp.zeros((h, k, w)).at[0, :d_y, y_slot].set(jnp.eye(d_y))
    w_p = jnp.zeros((h, w, k)).at[0, y_slot, :d_y].set(jnp.eye(d_y))
    return {"w_q": w_q, "w_k": w_k, "w_v": w_v, "w_p": w_p}


def copy_gd_weights(model: StandardTokenTransformer, eta: float, temperature: float) -> dict:
    """Params of `model` computing one GD step of size η (1/N inside η) after the copy layer.

    Structured exactly like `model.init`'s: {"params": {"copy": ..., "lsa": ...}}. Exact up
    to the copy's softmax leak, O(N e^{−τ}) (see the module docstring).
    """
    lsa = LSATransformer(d=model.d + model.num_positions, d_y=model.d_y)
    return {
        "params": {
            "copy": copy_layer_weights(model, temperature),
            "lsa": gd_weights(lsa, eta, model.n_context)["params"],
        }
    }
