"""In-context learning of nonlinear functions: task families and kernel baselines.

docs/theory.md §1 (von Oswald et al., arXiv 2212.07677, Proposition 2). The models that learn
features m(·) and then one LSA or GD step on (m(x), y) are `icl_toy.core.models.features`;
their prediction is kernel smoothing with k(a, b) = m(a)ᵀ m(b), compared here with the RBF
kernel and the sine family's true features.

Task families are frozen dataclasses with a `sample(key) -> Prompt` method, so
`icl_toy.core.tasks.sample_task` (and through it every sampler and
`icl_toy.training.train.train`) takes them like a linear `TaskConfig`. Their `Prompt.w` holds
the task's parameters, (1, p).
With `pool_size = P` every prompt draws its function uniformly from a fixed pool of P
tasks (drawn once from `pool_seed`), for task-diversity studies; x and noise stay fresh.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.core.linalg import einsum, matmul
from icl_toy.core.tasks import Prompt


def _check_pool(cfg) -> None:
    if cfg.pool_size is not None and (
        not isinstance(cfg.pool_size, int | np.integer) or cfg.pool_size < 1
    ):
        raise ValueError(
            f"{type(cfg).__name__}.pool_size must be None or an integer >= 1, got {cfg.pool_size!r}"
        )
    if not isinstance(cfg.n_context, int | np.integer) or cfg.n_context < 1:
        raise ValueError(
            f"{type(cfg).__name__}.n_context must be an integer >= 1, got {cfg.n_context!r}"
        )
    if not cfg.input_low < cfg.input_high:
        raise ValueError(
            f"{type(cfg).__name__} needs input_low < input_high, got "
            f"{cfg.input_low} and {cfg.input_high}"
        )
    if cfg.noise_std < 0:
        raise ValueError(f"{type(cfg).__name__}.noise_std must be >= 0, got {cfg.noise_std}")


class _FunctionFamily:
    """Shared sampler of a family y = f_θ(x) + noise with x ~ U(input_low, input_high)^d.

    A subclass defines `d`, `draw_params(key) -> θ (1, p)` and `evaluate(θ, x_TxD) -> (T, 1)`.
    """

    d_y = 1

    @property
    def token_dim(self) -> int:
        """E = d + d_y, the width of a token (x, y)."""
        return self.d + self.d_y

    def task_pool(self) -> jax.Array:
        """The P task parameters of the finite pool, (P, 1, p), a function of `pool_seed`."""
        if self.pool_size is None:
            raise ValueError(f"{type(self).__name__} has no task pool (pool_size is None)")
        # The layout of `core.tasks`' samplers, so the pool is the same wherever it is drawn.
        with jax.threefry_partitionable(False):
            keys = jax.random.split(jax.random.key(self.pool_seed), self.pool_size)
            return jax.vmap(self.draw_params)(keys)

    def sample(self, key: jax.Array) -> Prompt:
        """One prompt: θ (fresh, or uniform from the pool), N + 1 inputs, labels f_θ(x) + noise."""
        with jax.threefry_partitionable(False):  # as every sampler of `icl_toy.core.tasks`
            return self._sample(key)

    def _sample(self, key: jax.Array) -> Prompt:
        key_task, key_x, key_noise = jax.random.split(key, 3)
        if self.pool_size is None:
            theta = self.draw_params(key_task)
        else:
            theta = self.task_pool()[jax.random.randint(key_task, (), 0, self.pool_size)]
        t = self.n_context + 1
        x_TxD = jax.random.uniform(
            key_x, (t, self.d), minval=self.input_low, maxval=self.input_high
        )
        y_TxY = self.evaluate(theta, x_TxD)
        if self.noise_std > 0:
            noise_TxY = self.noise_std * jax.random.normal(key_noise, y_TxY.shape)
            y_TxY = y_TxY + noise_TxY.at[-1].set(0.0)  # the query label stays clean
        return Prompt(x=x_TxD[:-1], y=y_TxY[:-1], x_q=x_TxD[-1], y_q=y_TxY[-1], w=theta)


@dataclasses.dataclass(frozen=True)
class SineTaskConfig(_FunctionFamily):
    """Sine regression y = a·sin(x + ρ), x ~ U(−5, 5), a ~ U(0.1, 5), ρ ~ U(0, π), N = 10.

    The ranges are those of von Oswald et al.'s text (docs/theory.md §1), which are the sine
    benchmark of MAML (Finn et al. 2017); their code draws a ~ U(0.1, 0.5) instead. a and ρ
    come from two independent keys. The official notebook draws both with the SAME key,
    a = 0.1 + 0.4u and ρ = πu for one uniform u, so its family has one parameter, not two
    (a and ρ have correlation 1). `Prompt.w` is (1, 2) = [[a, ρ]].
    Note a·sin(x + ρ) = (a cos ρ) sin x + (a sin ρ) cos x: the family is linear in the two
    features (sin x, cos x), so least squares on them is the noiseless oracle.
    """

    n_context: int = 10  # N
    input_low: float = -5.0  # x ~ U(input_low, input_high)
    input_high: float = 5.0
    amplitude_low: float = 0.1  # a ~ U(amplitude_low, amplitude_high)
    amplitude_high: float = 5.0
    phase_low: float = 0.0  # ρ ~ U(phase_low, phase_high)
    phase_high: float = math.pi
    noise_std: float = 0.0  # Gaussian noise on context labels (the query label stays clean)
    pool_size: int | None = None  # P: draw each prompt's task from a fixed pool; None: fresh
    pool_seed: int = 0  # root key of the task pool

    d = 1

    def __post_init__(self):
        _check_pool(self)
        if not 0 <= self.amplitude_low < self.amplitude_high:
            raise ValueError(
                "SineTaskConfig needs 0 <= amplitude_low < amplitude_high, got "
                f"{self.amplitude_low} and {self.amplitude_high}"
            )
        if not self.phase_low < self.phase_high:
            raise ValueError(
                f"SineTaskConfig needs phase_low < phase_high, got {self.phase_low} and "
                f"{self.phase_high}"
            )

    def draw_params(self, key: jax.Array) -> jax.Array:
        """θ = [[a, ρ]], (1, 2), a and ρ from independent keys."""
        key_amplitude, key_phase = jax.random.split(key)
        a = jax.random.uniform(
            key_amplitude, (), minval=self.amplitude_low, maxval=self.amplitude_high
        )
        rho = jax.random.uniform(key_phase, (), minval=self.phase_low, maxval=self.phase_high)
        return jnp.stack([a, rho])[None]

    def evaluate(self, theta_1xP: jax.Array, x_TxD: jax.Array) -> jax.Array:
        """y = a·sin(x + ρ), (T, 1)."""
        a, rho = theta_1xP[0, 0], theta_1xP[0, 1]
        return a * jnp.sin(x_TxD + rho)


@dataclasses.dataclass(frozen=True)
class FourierTaskConfig(_FunctionFamily):
    """Random Fourier-feature teachers, f(x) = √(2/M) Σ_j c_j cos(ω_jᵀx + b_j), fresh per task.

    ω_j ~ N(0, ℓ⁻² I_d), b_j ~ U(0, 2π), c_j ~ N(0, 1), j = 1..M, x ~ U(input_low, input_high)^d.
    For every M the prior covariance is exactly the RBF kernel,
    E f(x) f(x') = E_ω cos(ωᵀ(x − x')) = exp(−||x − x'||² / (2ℓ²)) (Rahimi & Recht 2007),
    so RBF kernel ridge with λ = σ² is the posterior mean of the matching Gaussian process.
    `Prompt.w` is (1, M(d + 2)) = [ω (row-major), b, c].
    """

    d: int = 1  # input dimension
    n_context: int = 10  # N
    num_features: int = 16  # M
    length_scale: float = 1.0  # ℓ of the RBF prior covariance
    input_low: float = -3.0  # x ~ U(input_low, input_high)^d
    input_high: float = 3.0
    noise_std: float = 0.0  # Gaussian noise on context labels (the query label stays clean)
    pool_size: int | None = None  # P: draw each prompt's task from a fixed pool; None: fresh
    pool_seed: int = 0  # root key of the task pool

    def __post_init__(self):
        _check_pool(self)
        for name in ("d", "num_features"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"FourierTaskConfig.{name} must be an integer >= 1, got {value!r}")
        if not self.length_scale > 0:
            raise ValueError(f"FourierTaskConfig.length_scale must be > 0, got {self.length_scale}")

    def draw_params(self, key: jax.Array) -> jax.Array:
        """θ = [ω, b, c] flattened, (1, M(d + 2))."""
        m, d = self.num_features, self.d
        key_omega, key_phase, key_coef = jax.random.split(key, 3)
        omega_MxD = jax.random.normal(key_omega, (m, d)) / self.length_scale
        b_M = jax.random.uniform(key_phase, (m,), minval=0.0, maxval=2 * math.pi)
        c_M = jax.random.normal(key_coef, (m,))
        return jnp.concatenate([omega_MxD.reshape(-1), b_M, c_M])[None]

    def evaluate(self, theta_1xP: jax.Array, x_TxD: jax.Array) -> jax.Array:
        """f(x) for every row of x, (T, 1)."""
        m, d = self.num_features, self.d
        omega_MxD = theta_1xP[0, : m * d].reshape(m, d)
        b_M, c_M = theta_1xP[0, m * d : m * d + m], theta_1xP[0, m * d + m :]
        phases_TxM = matmul(x_TxD, omega_MxD.T) + b_M[None]
        return math.sqrt(2.0 / m) * matmul(jnp.cos(phases_TxM), c_M[:, None])


# --- Kernel baselines -----------------------------------------------------------------------


def rbf_kernel(a_AxD: jax.Array, b_BxD: jax.Array, length_scale: float) -> jax.Array:
    """k(a, b) = exp(−||a − b||² / (2ℓ²)), (A, B)."""
    sq_AxB = (
        jnp.sum(a_AxD**2, axis=-1)[:, None]
        + jnp.sum(b_BxD**2, axis=-1)[None, :]
        - 2.0 * matmul(a_AxD, b_BxD.T)
    )
    return jnp.exp(-jnp.maximum(sq_AxB, 0.0) / (2.0 * length_scale**2))


def rbf_smoothing_predict(x_NxD, y_NxY, x_q_D, length_scale: float, eta: float) -> jax.Array:
    """One functional GD step from f = 0 in the RBF RKHS: ŷ = (η/N) Σ_i y_i k(x_i, x_q), (Y,)."""
    k_N = rbf_kernel(x_NxD, x_q_D[None], length_scale)[:, 0]
    return eta / x_NxD.shape[0] * matmul(k_N, y_NxY)


def rbf_ridge_predict(x_NxD, y_NxY, x_q_D, length_scale: float, lam: float) -> jax.Array:
    """Kernel ridge, ŷ = k(x_q, X)(K + λI)⁻¹ y with the RBF kernel (a GP posterior mean), (Y,)."""
    gram_NxN = rbf_kernel(x_NxD, x_NxD, length_scale)
    n = x_NxD.shape[0]
    alpha_NxY = jnp.linalg.solve(gram_NxN + lam * jnp.eye(n, dtype=x_NxD.dtype), y_NxY)
    return matmul(rbf_kernel(x_q_D[None], x_NxD, length_scale)[0], alpha_NxY)


def sine_features(x_TxD: jax.Array) -> jax.Array:
    """(sin x, cos x), (T, 2): the sine family is linear in these two features."""
    return jnp.concatenate([jnp.sin(x_TxD), jnp.cos(x_TxD)], axis=-1)


def sine_oracle_predict(x_NxD, y_NxY, x_q_D) -> jax.Array:
    """Least squares on the true features (sin x, cos x): exact for noiseless sine tasks, (Y,)."""
    phi_NxF = sine_features(x_NxD)
    w_FxY = matmul(jnp.linalg.pinv(phi_NxF), y_NxY)
    return matmul(sine_features(x_q_D[None])[0], w_FxY)


def grid_sensitivities(model: nn.Module, params, tokens_TxE: jax.Array, grid_G: jax.Array):
    """(ŷ, ∂ŷ/∂x_q) of a d = 1 model at every query point of `grid_G`, each (G,).

    With d = 1 the per-query sensitivity is a scalar, and its cosine between two learners
    is only its sign; the sensitivity over a grid of queries, one vector per task, is the
    d = 1 analogue of von Oswald et al.'s "model cos".
    """

    def predict(x_q):
        return model.apply(params, tokens_TxE.at[-1, 0].set(x_q))[0]

    return jax.vmap(jax.value_and_grad(predict))(grid_G)


def feature_kernel(features_AxF: jax.Array, features_BxF: jax.Array) -> jax.Array:
    """The learned kernel k(a, b) = m(a)ᵀ m(b) between two sets of features, (A, B)."""
    return einsum("af,bf->ab", features_AxF, features_BxF)
