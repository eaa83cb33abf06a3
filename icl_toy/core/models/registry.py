"""One extension point for models: `ModelConfig(kind=...)`, `make_model` and the model interface.

A model variant is one class (often one per-layer update rule of `LSATransformer`, see
`LSATransformer.layer`) plus one entry of `MODEL_KINDS`: how it is built, the `ModelConfig`
fields it reads and the inits it supports. `make_model`, `--set model.kind=...`, sweeps,
`batch_predict`, checkpoints and `icl_toy.core.predictors.model_predictor` then reach it,
because every model has the same interface:
- `model.init(key, tokens_TxE)` and `model.apply(params, tokens_TxE) -> ŷ (Y,)` on one
  prompt's tokens `prompt_tokens(prompt)`, (T, E) = (N + 1, d + d_y);
- `check_params(model, params, tokens_TxE)` checks a params pytree against `model.init`;
- `learned_scalars(model, params)` names the model's scalar parameters ({"mu": μ}, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from icl_toy.core.models.causal import CausalLSATransformer
from icl_toy.core.models.features import FeatureGD, FeatureLSA
from icl_toy.core.models.lsa import LSATransformer
from icl_toy.core.models.momentum import DepthMomentumLSA, TokenMomentumLSA
from icl_toy.core.models.softmax import softmax_transformer
from icl_toy.core.models.standard_tokens import StandardTokenTransformer


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which model (`kind`, one of `MODEL_KINDS`) and its sizes; d, d_y and N come from the task.

    A field the kind does not read must keep its default, so that no setting is silently
    ignored (`MODEL_KINDS[kind].fields` lists what each kind reads).
    """

    kind: str = "lsa"  # lsa, causal_lsa, token_momentum, depth_momentum, ... (MODEL_KINDS)
    # "dense": the fan-in init of von Oswald et al.; "gd_sparsity" (kind lsa): the same with
    # the GD construction's zero blocks (`LSATransformer.gd_sparsity`).
    init: str = "dense"
    num_layers: int = 1  # K: LSA layers; softmax_transformer: pre-norm blocks
    num_heads: int = 1  # H per attention layer; standard_tokens: heads of the softmax layer
    # k; None: the token width (softmax_transformer: embed_dim // num_heads)
    key_size: int | None = None
    shared_weights: bool = False  # one LSA layer applied K times (recurrent)
    init_scale: float = 0.002  # fan-in variance scale of LSA layers, divided by K
    # token_momentum: Dai et al.'s EMA of earlier values with weight μ^{t−j}.
    mu: float | None = None  # fixed μ in [0, 1); None: learned as μ = sigmoid(logit)
    mu_init: float = 0.1  # initial learned μ, in (0, 1)
    # depth_momentum: heavy ball across layers, v_l = Δ_l + β v_{l−1}.
    beta: float | None = None  # fixed β; None: learned, unconstrained
    beta_init: float = 0.0  # initial learned β
    # softmax_transformer (Akyürek et al.'s pre-norm softmax transformer with MLPs).
    embed_dim: int = 32  # W, the width of the residual stream
    mlp_hidden: int = 128  # hidden units of each GELU MLP
    layer_norm: bool = True  # pre-norm blocks; False: no norms at all
    # softmax_transformer, standard_tokens: fan-in variance scale of softmax attention.
    softmax_init_scale: float = 1.0
    # feature_lsa, feature_gd: the feature MLP m(x) (von Oswald et al.'s F = 40, 160 hidden).
    feature_dim: int = 40  # F
    feature_hidden: int = 160  # hidden units of the residual GELU MLP
    eta_init: float = 0.01  # feature_gd: initial step size η (1/N inside η)

    def __post_init__(self):
        kind = MODEL_KINDS.get(self.kind)
        if kind is None:
            raise ValueError(
                f"ModelConfig.kind must be one of {', '.join(MODEL_KINDS)}; got {self.kind!r}"
            )
        if self.init not in kind.inits:
            raise ValueError(
                f"ModelConfig.init of kind {self.kind!r} must be one of "
                f"{', '.join(kind.inits)}; got {self.init!r}"
            )
        for field in dataclasses.fields(self):
            if field.name in ("kind", "init", *kind.fields):
                continue
            if getattr(self, field.name) != field.default:
                raise ValueError(
                    f"ModelConfig.{field.name} is not read by kind {self.kind!r} (it reads "
                    f"{', '.join(kind.fields)}); leave it at {field.default!r}"
                )
        positive_ints = ["num_layers", "num_heads", "embed_dim", "mlp_hidden", "feature_dim"]
        positive_ints += ["feature_hidden"] + ([] if self.key_size is None else ["key_size"])
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("init_scale", "softmax_init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ModelConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.mu is not None and not 0 <= self.mu < 1:
            raise ValueError(f"ModelConfig.mu must be None or in [0, 1), got {self.mu}")
        if not 0 < self.mu_init < 1:
            raise ValueError(f"ModelConfig.mu_init must be in (0, 1), got {self.mu_init}")


class ModelKind(NamedTuple):
    """One registered model kind."""

    build: Callable[[Any, ModelConfig], nn.Module]  # (task, cfg) -> the flax model
    fields: tuple[str, ...]  # the ModelConfig fields it reads, besides kind and init
    inits: tuple[str, ...] = ("dense",)  # the values of ModelConfig.init it supports


_LSA_FIELDS = ("num_layers", "num_heads", "key_size", "shared_weights", "init_scale")
_LSA_INITS = ("dense", "gd_sparsity")


def _lsa_kwargs(task, cfg: ModelConfig) -> dict:
    """The `LSATransformer` attributes of every LSA kind."""
    fields = {name: getattr(cfg, name) for name in _LSA_FIELDS}
    return {"d": task.d, "d_y": task.d_y, "gd_sparsity": cfg.init == "gd_sparsity", **fields}


def _lsa(task, cfg: ModelConfig) -> LSATransformer:
    return LSATransformer(**_lsa_kwargs(task, cfg))


def _causal_lsa(task, cfg: ModelConfig) -> CausalLSATransformer:
    return CausalLSATransformer(**_lsa_kwargs(task, cfg))


def _token_momentum(task, cfg: ModelConfig) -> TokenMomentumLSA:
    return TokenMomentumLSA(**_lsa_kwargs(task, cfg), momentum=cfg.mu, momentum_init=cfg.mu_init)


def _depth_momentum(task, cfg: ModelConfig) -> DepthMomentumLSA:
    return DepthMomentumLSA(
        **_lsa_kwargs(task, cfg), momentum=cfg.beta, momentum_init=cfg.beta_init
    )


def _softmax_transformer(task, cfg: ModelConfig) -> nn.Module:
    return softmax_transformer(
        task.d_y,
        cfg.num_layers,
        cfg.num_heads,
        cfg.mlp_hidden,
        embed_dim=cfg.embed_dim,
        key_size=cfg.key_size,
        layer_norm=cfg.layer_norm,
        init_scale=cfg.softmax_init_scale,
    )


def _feature_lsa(task, cfg: ModelConfig) -> FeatureLSA:
    return FeatureLSA(
        d=task.d,
        d_y=task.d_y,
        embed_dim=cfg.feature_dim,
        hidden_size=cfg.feature_hidden,
        init_scale=cfg.init_scale,
    )


def _feature_gd(task, cfg: ModelConfig) -> FeatureGD:
    return FeatureGD(
        d=task.d,
        d_y=task.d_y,
        embed_dim=cfg.feature_dim,
        hidden_size=cfg.feature_hidden,
        eta_init=cfg.eta_init,
    )


def _standard_tokens(task, cfg: ModelConfig) -> StandardTokenTransformer:
    return StandardTokenTransformer(
        d=task.d,
        n_context=task.n_context,
        d_y=task.d_y,
        num_heads=cfg.num_heads,
        key_size=cfg.key_size,
        softmax_init_scale=cfg.softmax_init_scale,
        lsa_init_scale=cfg.init_scale,
    )


# kind -> how to build it, what it reads, which inits it has
MODEL_KINDS: dict[str, ModelKind] = {
    "lsa": ModelKind(_lsa, _LSA_FIELDS, _LSA_INITS),
    "causal_lsa": ModelKind(_causal_lsa, _LSA_FIELDS),
    "token_momentum": ModelKind(_token_momentum, (*_LSA_FIELDS, "mu", "mu_init"), _LSA_INITS),
    "depth_momentum": ModelKind(_depth_momentum, (*_LSA_FIELDS, "beta", "beta_init"), _LSA_INITS),
    "softmax_transformer": ModelKind(
        _softmax_transformer,
        (
            "num_layers",
            "num_heads",
            "key_size",
            "embed_dim",
            "mlp_hidden",
            "layer_norm",
            "softmax_init_scale",
        ),
    ),
    "feature_lsa": ModelKind(_feature_lsa, ("feature_dim", "feature_hidden", "init_scale")),
    "feature_gd": ModelKind(_feature_gd, ("feature_dim", "feature_hidden", "eta_init")),
    "standard_tokens": ModelKind(
        _standard_tokens, ("num_heads", "key_size", "init_scale", "softmax_init_scale")
    ),
}


def make_model(task, cfg: ModelConfig) -> nn.Module:
    """The model of kind `cfg.kind` for prompts of `task` (its d, d_y and, for standard_tokens,
    n_context): a flax module mapping one prompt's tokens (T, E) to ŷ (Y,)."""
    return MODEL_KINDS[cfg.kind].build(task, cfg)


def _shapes(tree) -> Any:
    return jax.tree.map(lambda a: tuple(np.shape(a)), tree)


def check_params(model: nn.Module, params, tokens_TxE: jax.Array) -> None:
    """Raise ValueError unless `params` has the pytree and leaf shapes that
    `model.init(key, tokens_TxE)` gives (found abstractly with `jax.eval_shape`)."""
    expected = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct(tokens_TxE.shape, tokens_TxE.dtype)
    )
    if jax.tree.structure(params) != jax.tree.structure(expected):
        raise ValueError(
            f"params have the leaves {_shapes(params)}, but this {type(model).__name__} expects "
            f"{_shapes(expected)}"
        )
    leaves, _ = jax.tree_util.tree_flatten_with_path(expected)
    for (path, want), got in zip(leaves, jax.tree.leaves(params), strict=True):
        if np.shape(got) != want.shape:
            raise ValueError(
                f"params{jax.tree_util.keystr(path)} has shape {np.shape(got)}, but this "
                f"{type(model).__name__} expects {want.shape}"
            )


def learned_scalars(model: nn.Module, params) -> dict[str, jax.Array]:
    """The named scalar parameters `model` uses, e.g. {"mu": μ} (token_momentum), {"beta": β}
    (depth_momentum), {"eta": η} (feature_gd); {} for a model without any.

    A fixed momentum (`ModelConfig.mu` or `beta` set) is reported as well. For params with a
    leading seed axis, vmap: `jax.vmap(lambda p: learned_scalars(model, p))(params_S)`.
    """
    method = getattr(type(model), "learned_scalars", None)
    return {} if method is None else model.apply(params, method=method)


# The momentum scalar of each momentum LSA kind: its fixed value and init are the ModelConfig
# fields NAME and NAME_init.
MOMENTUM_SCALARS = {"token_momentum": "mu", "depth_momentum": "beta"}


def momentum_lsa_config(
    kind: str, momentum_init: float, momentum: float | None = None, **fields
) -> ModelConfig:
    """`ModelConfig` of the plain LSA (kind "lsa", no momentum: `momentum_init` is unused) or
    of a momentum LSA kind of `MOMENTUM_SCALARS`, its μ or β fixed at `momentum`, or learned
    from `momentum_init` when `momentum` is None; `fields` are the other ModelConfig fields."""
    if kind == "lsa":
        return ModelConfig(**fields)
    scalar = MOMENTUM_SCALARS[kind]
    return ModelConfig(kind=kind, **fields, **{scalar: momentum, f"{scalar}_init": momentum_init})


def momentum_scalar(model: nn.Module, params) -> jax.Array:
    """The μ or β a model uses (`learned_scalars`), 0 for a model without one (the plain LSA)."""
    return next(iter(learned_scalars(model, params).values()), jax.numpy.zeros(()))
