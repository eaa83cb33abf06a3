"""Probes: what does each layer's residual stream encode? (Akyürek et al., docs/theory.md §3)

Akyürek et al. (arXiv 2211.15661) decode the task weight w, the moment Xᵀy and the
least-squares solution w_OLS from the hidden states of a trained transformer, layer by
layer: Xᵀy becomes decodable in the middle layers and w_OLS later, and two-layer MLP probes
decode better than linear ones (the encoding is nonlinear). This module does the same for
any model with a `residual_stream(tokens) -> (L + 1, T, W)` method
(`icl_toy.core.models.Transformer`, e.g. `models.softmax_transformer`):

- `residual_features`: per layer, the query token's state (optionally with the mean of the
  context tokens' states), for a batch of prompts, (L + 1, B, F).
- `probe_targets`: w, Xᵀy and w_OLS = X⁺y of each prompt, each (B, D).
- `linear_probe_r2` (closed-form ridge) and `mlp_probe_r2` (a one-hidden-layer GELU MLP
  trained by full-batch Adam): fitted on the features of one prompt set, scored on a
  disjoint held-out set by R².
- `probe_model`: all of that for every seed, layer and target.

R² of a target with K coordinates is the mean over coordinates of 1 − SSE_k/SST_k on the
held-out prompts (SST about the held-out mean), so predicting the training mean scores
about 0 and an exact decoder scores 1. Features and targets are standardised with the
training set's mean and standard deviation before fitting (the probes are affine).
Only d_y = 1 is supported (w and Xᵀy are then vectors in R^D).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from icl_toy.core.linalg import einsum, matmul
from icl_toy.core.tasks import Prompt, prompt_tokens

TARGETS = ("w", "xty", "w_ols")
PROBE_KINDS = ("linear", "mlp")
Pool = Literal["query", "query_and_context"]


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """How the probes are fitted."""

    ridge: float = 1e-2  # λ of the linear probe: (FᵀF/B + λI)⁻¹ on standardised features
    mlp_hidden: int = 32  # hidden units of the MLP probe
    mlp_steps: int = 300  # full-batch Adam steps of the MLP probe
    mlp_learning_rate: float = 1e-2
    # "query": the query token's state; "query_and_context": also the mean of the context
    # tokens' states (a fixed pooling, where Akyürek et al. learn an attention pooling).
    pool: Pool = "query"

    def __post_init__(self):
        if not self.ridge >= 0:
            raise ValueError(f"ProbeConfig.ridge must be >= 0, got {self.ridge}")
        for name in ("mlp_hidden", "mlp_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ProbeConfig.{name} must be an integer >= 1, got {value!r}")
        if not self.mlp_learning_rate > 0:
            raise ValueError(
                f"ProbeConfig.mlp_learning_rate must be > 0, got {self.mlp_learning_rate}"
            )
        if self.pool not in ("query", "query_and_context"):
            raise ValueError(
                f"ProbeConfig.pool must be 'query' or 'query_and_context', got {self.pool!r}"
            )


def probe_targets(prompts: Prompt) -> dict[str, jax.Array]:
    """w, Xᵀy (unnormalised) and w_OLS = X⁺y of each prompt, each (B, D); needs d_y = 1."""
    if prompts.y.shape[-1] != 1:
        raise ValueError(f"probe targets need d_y = 1, got d_y = {prompts.y.shape[-1]}")
    y_BxN = prompts.y[..., 0]
    xty_BxD = einsum("bnd,bn->bd", prompts.x, y_BxN)
    w_ols_BxD = einsum("bdn,bn->bd", jnp.linalg.pinv(prompts.x), y_BxN)
    return {"w": prompts.w[:, 0], "xty": xty_BxD, "w_ols": w_ols_BxD}


def residual_features(model, params, prompts: Prompt, pool: Pool = "query") -> jax.Array:
    """Per-layer features of each prompt, (L + 1, B, F), from `model.residual_stream`.

    F = W (the query token's state) or 2W (with the mean of the N context tokens' states).
    """
    tokens_BxTxE = jax.vmap(prompt_tokens)(prompts)

    def stream(tokens_TxE):
        return model.apply(params, tokens_TxE, method=model.residual_stream)

    stream_BxLxTxW = jax.vmap(stream)(tokens_BxTxE)
    features = stream_BxLxTxW[:, :, -1]
    if pool == "query_and_context":
        context_mean = stream_BxLxTxW[:, :, :-1].mean(axis=2)
        features = jnp.concatenate([features, context_mean], axis=-1)
    return jnp.swapaxes(features, 0, 1)


def r2_score(pred_BxK: jax.Array, target_BxK: jax.Array) -> jax.Array:
    """Mean over the K coordinates of 1 − Σ_b (t − p)² / Σ_b (t − t̄)²."""
    sse_K = jnp.sum((target_BxK - pred_BxK) ** 2, axis=0)
    sst_K = jnp.sum((target_BxK - target_BxK.mean(axis=0, keepdims=True)) ** 2, axis=0)
    return jnp.mean(1.0 - sse_K / sst_K)


def _standardiser(train_BxK: jax.Array):
    """(mean, scale) of the training columns; constant columns get scale 1."""
    mean_K = train_BxK.mean(axis=0)
    std_K = train_BxK.std(axis=0)
    return mean_K, jnp.where(std_K > 0, std_K, 1.0)


def _standardise(x_BxK, stats):
    mean_K, scale_K = stats
    return (x_BxK - mean_K[None]) / scale_K[None]


def linear_probe_r2(
    train_BxF: jax.Array,
    train_target_BxK: jax.Array,
    test_BxF: jax.Array,
    test_target_BxK: jax.Array,
    ridge: float,
) -> jax.Array:
    """Held-out R² of a ridge probe t ≈ A f + c fitted in closed form on the training set.

    On standardised features f̃ and targets t̃: A = (F̃ᵀF̃/B + λI)⁻¹ F̃ᵀT̃/B.
    """
    f_stats, t_stats = _standardiser(train_BxF), _standardiser(train_target_BxK)
    f_BxF, t_BxK = _standardise(train_BxF, f_stats), _standardise(train_target_BxK, t_stats)
    b, num_features = f_BxF.shape
    gram_FxF = matmul(f_BxF.T, f_BxF) / b + ridge * jnp.eye(num_features, dtype=f_BxF.dtype)
    a_FxK = jnp.linalg.solve(gram_FxF, matmul(f_BxF.T, t_BxK) / b)
    pred_BxK = matmul(_standardise(test_BxF, f_stats), a_FxK)
    return r2_score(pred_BxK * t_stats[1][None] + t_stats[0][None], test_target_BxK)


def mlp_probe_r2(
    key: jax.Array,
    train_BxF: jax.Array,
    train_target_BxK: jax.Array,
    test_BxF: jax.Array,
    test_target_BxK: jax.Array,
    cfg: ProbeConfig,
) -> jax.Array:
    """Held-out R² of an MLP probe t ≈ W₂ gelu(W₁ f + b₁) + b₂ (standardised f and t).

    Trained by `cfg.mlp_steps` full-batch Adam steps on the training set's mean squared
    error, from a fan-in normal init drawn from `key`.
    """
    f_stats, t_stats = _standardiser(train_BxF), _standardiser(train_target_BxK)
    f_BxF, t_BxK = _standardise(train_BxF, f_stats), _standardise(train_target_BxK, t_stats)
    num_features, num_targets, hidden = f_BxF.shape[1], t_BxK.shape[1], cfg.mlp_hidden
    key_1, key_2 = jax.random.split(key)
    params = {
        "w1": jax.random.normal(key_1, (num_features, hidden)) / jnp.sqrt(num_features),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(key_2, (hidden, num_targets)) / jnp.sqrt(hidden),
        "b2": jnp.zeros(num_targets),
    }

    def predict(p, f_BxF):
        hidden_BxH = jax.nn.gelu(matmul(f_BxF, p["w1"]) + p["b1"][None])
        return matmul(hidden_BxH, p["w2"]) + p["b2"][None]

    def loss(p):
        return jnp.mean((predict(p, f_BxF) - t_BxK) ** 2)

    optimizer = optax.adam(cfg.mlp_learning_rate)

    def step(carry, _):
        p, opt_state = carry
        grads = jax.grad(loss)(p)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, cfg.mlp_steps)
    pred_BxK = predict(params, _standardise(test_BxF, f_stats))
    return r2_score(pred_BxK * t_stats[1][None] + t_stats[0][None], test_target_BxK)


@functools.partial(jax.jit, static_argnames="ridge")
def _linear_r2_SxLxJ(train_SxLxBxF, train_JxBxK, test_SxLxBxF, test_JxBxK, ridge):
    def one(train_f, train_t, test_f, test_t):
        return linear_probe_r2(train_f, train_t, test_f, test_t, ridge)

    over_targets = jax.vmap(one, in_axes=(None, 0, None, 0))
    over_layers = jax.vmap(over_targets, in_axes=(0, None, 0, None))
    return jax.vmap(over_layers, in_axes=(0, None, 0, None))(
        train_SxLxBxF, train_JxBxK, test_SxLxBxF, test_JxBxK
    )


@functools.partial(jax.jit, static_argnames="cfg")
def _mlp_r2_SxLxJ(keys_SxLxJ, train_SxLxBxF, train_JxBxK, test_SxLxBxF, test_JxBxK, cfg):
    def one(key, train_f, train_t, test_f, test_t):
        return mlp_probe_r2(key, train_f, train_t, test_f, test_t, cfg)

    over_targets = jax.vmap(one, in_axes=(0, None, 0, None, 0))
    over_layers = jax.vmap(over_targets, in_axes=(0, 0, None, 0, None))
    return jax.vmap(over_layers, in_axes=(0, 0, None, 0, None))(
        keys_SxLxJ, train_SxLxBxF, train_JxBxK, test_SxLxBxF, test_JxBxK
    )


def probe_layers(
    key: jax.Array,
    train_SxLxBxF: jax.Array,
    train_targets: dict[str, jax.Array],
    test_SxLxBxF: jax.Array,
    test_targets: dict[str, jax.Array],
    cfg: ProbeConfig,
) -> dict[str, dict[str, jax.Array]]:
    """Held-out R² of every probe kind and target at every seed and layer: {kind: {target:
    (S, L)}}.

    Features have leading seed and layer axes; targets are {name: (B, K)} with one K for
    all, the same for every seed and layer. The MLP probe of seed s, layer l and target j
    starts from fold_in(fold_in(fold_in(key, s), l), j). Each probe kind is its own compiled
    program, vmapped over seeds, layers and targets: one program holding every probe and
    the features hung intermittently on a 2-core CPU (jax 0.10.2), like the whole-family
    program that `icl_toy.analysis.alignment` avoids.
    """
    names = list(train_targets)
    train_JxBxK = jnp.stack([train_targets[name] for name in names])
    test_JxBxK = jnp.stack([test_targets[name] for name in names])
    num_seeds, num_layers = train_SxLxBxF.shape[:2]

    def fold(k, i):
        return jax.random.fold_in(k, i)

    keys_SxLxJ = jax.vmap(
        lambda s: jax.vmap(
            lambda l: jax.vmap(lambda j: fold(fold(fold(key, s), l), j))(jnp.arange(len(names)))
        )(jnp.arange(num_layers))
    )(jnp.arange(num_seeds))
    linear = _linear_r2_SxLxJ(train_SxLxBxF, train_JxBxK, test_SxLxBxF, test_JxBxK, cfg.ridge)
    mlp = _mlp_r2_SxLxJ(keys_SxLxJ, train_SxLxBxF, train_JxBxK, test_SxLxBxF, test_JxBxK, cfg)
    return {
        kind: {name: r2_SxLxJ[..., j] for j, name in enumerate(names)}
        for kind, r2_SxLxJ in (("linear", linear), ("mlp", mlp))
    }


def probe_model(
    model,
    params_S,
    train_prompts: Prompt,
    test_prompts: Prompt,
    *,
    key: jax.Array,
    cfg: ProbeConfig | None = None,
) -> dict[str, dict[str, jax.Array]]:
    """Held-out probe R² for every seed, layer and target: {kind: {target: (S, L + 1)}}.

    `params_S` has a leading seed axis S (as `icl_toy.training.train.train` returns). The probes are
    fitted on `train_prompts` and scored on `test_prompts`, which must be different prompts
    (draw them from different keys); the targets are `probe_targets`.
    """
    cfg = cfg or ProbeConfig()

    @jax.jit
    def features(params_S, prompts):
        return jax.vmap(lambda p: residual_features(model, p, prompts, cfg.pool))(params_S)

    return probe_layers(
        key,
        features(params_S, train_prompts),
        jax.jit(probe_targets)(train_prompts),
        features(params_S, test_prompts),
        jax.jit(probe_targets)(test_prompts),
        cfg,
    )


def r2_summary(r2: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, dict]]:
    """`probe_model`'s R² as JSON: {kind: {target: {"mean": per layer, "per_seed": (S, L + 1)}}}."""
    return {
        kind: {
            target: {
                "mean": np.asarray(values).mean(axis=0).tolist(),
                "per_seed": np.asarray(values).tolist(),
            }
            for target, values in by_target.items()
        }
        for kind, by_target in r2.items()
    }


def probe_depths(
    trained: dict, train_prompts: Prompt, test_prompts: Prompt, *, key: jax.Array, cfg: ProbeConfig
) -> dict[int, dict[str, dict[str, np.ndarray]]]:
    """`probe_model` of every model of a depth sweep, {depth: {kind: {target: (S, L + 1)}}}.

    `trained` maps a depth to (model, train result with params of seed axis S); each depth
    fits its MLP probes from `fold_in(key, depth)`.
    """
    r2 = {
        depth: probe_model(
            model,
            result.params,
            train_prompts,
            test_prompts,
            key=jax.random.fold_in(key, depth),
            cfg=cfg,
        )
        for depth, (model, result) in trained.items()
    }
    return {
        depth: {
            kind: {t: np.asarray(v) for t, v in by_target.items()} for kind, by_target in r.items()
        }
        for depth, r in r2.items()
    }
