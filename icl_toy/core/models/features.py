"""Learned features, then LSA or GD: von Oswald et al.'s MLP + LSA and MLP + GD (docs/theory.md §1).

An MLP m(·) maps every input to features, tokens become (m(x_i), y_i) and (m(x_q), 0), and an
LSA layer reads them; with the GD weights (`icl_toy.core.constructions.feature_gd_lsa_params`)
it makes one GD step on the output layer (Proposition 2 of arXiv 2212.07677):
ŷ = (η/N) Σ_i y_i k(x_i, x_q), k(a, b) = m(a)ᵀ m(b).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from icl_toy.core.linalg import PRECISION, matmul
from icl_toy.core.models.lsa import LSATransformer
from icl_toy.core.models.softmax import MLPBlock


class MLPFeatures(nn.Module):
    """m(x) = h + W₂ gelu(W₁ h + b₁) + b₂ with h = W_e x + b_e, for rows x, (T, F).

    von Oswald et al.'s feature stack: a linear embedding (F = 40) and a residual GELU MLP
    (160 hidden units). Here it reads only the input x, so the label keeps its own slot
    and the LSA layer after it can be the GD construction (Proposition 2).
    """

    embed_dim: int = 40  # F
    hidden_size: int = 160

    @nn.compact
    def __call__(self, x_TxD: jax.Array) -> jax.Array:
        h_TxF = nn.Dense(self.embed_dim, precision=PRECISION, name="embed")(x_TxD)
        return MLPBlock(self.hidden_size, name="mlp")(h_TxF)


def feature_tokens(features_TxF: jax.Array, tokens_TxE: jax.Array, d: int) -> jax.Array:
    """Tokens (m(x_i), y_i) and (m(x_q), y-slot of the query), (T, F + Y)."""
    return jnp.concatenate([features_TxF, tokens_TxE[:, d:]], axis=-1)


class FeatureLSA(nn.Module):
    """The MLP features m(·) on every token's x, then one LSA layer on (m(x), y); ŷ = −y_q.

    Params: {"features": MLPFeatures params, "lsa": `LSATransformer` params with d = F}.
    `__call__` maps one prompt's tokens (T, d + d_y) to ŷ (d_y,), like `LSATransformer`.
    """

    d: int  # input dimension
    d_y: int = 1
    embed_dim: int = 40  # F, the feature width
    hidden_size: int = 160
    init_scale: float = 0.002  # fan-in variance scale of the LSA layer (von Oswald et al.)

    def setup(self):
        self.features = MLPFeatures(self.embed_dim, self.hidden_size)
        self.lsa = LSATransformer(d=self.embed_dim, d_y=self.d_y, init_scale=self.init_scale)

    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        return self.lsa(feature_tokens(self.features(tokens_TxE[:, : self.d]), tokens_TxE, self.d))


def kernel_smoothing(
    features_NxF: jax.Array, features_q_F: jax.Array, y_NxY: jax.Array, eta: jax.Array
) -> jax.Array:
    """One GD step from 0 on the output layer: ŷ = (η/N) Σ_i y_i m(x_i)ᵀ m(x_q), (Y,)."""
    kernel_N = matmul(features_NxF, features_q_F)
    return eta / features_NxF.shape[0] * matmul(kernel_N, y_NxY)


class FeatureGD(nn.Module):
    """The "MLP + GD" learner: MLP features m(·) and one GD step of size η on the output layer.

    ŷ = (η/N) Σ_i y_i m(x_i)ᵀ m(x_q) (kernel smoothing with k(a, b) = m(a)ᵀ m(b)). Meta-learning
    its params (the MLP and η) is von Oswald et al.'s "MLP + GD" baseline. Params:
    {"features": MLPFeatures params, "eta": ()}. Same call signature as `FeatureLSA`.
    """

    d: int
    d_y: int = 1
    embed_dim: int = 40
    hidden_size: int = 160
    eta_init: float = 0.01  # initial step size (1/N inside η)

    def setup(self):
        self.features = MLPFeatures(self.embed_dim, self.hidden_size)
        self.eta = self.param("eta", nn.initializers.constant(self.eta_init), ())

    def learned_scalars(self) -> dict[str, jax.Array]:
        """{"eta": the step size η}."""
        return {"eta": self.eta}

    def __call__(self, tokens_TxE: jax.Array) -> jax.Array:
        features_TxF = self.features(tokens_TxE[:, : self.d])
        y_NxY = tokens_TxE[:-1, self.d :]
        return kernel_smoothing(features_TxF[:-1], features_TxF[-1], y_NxY, self.eta)
