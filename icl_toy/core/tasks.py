"""Linear-regression prompts, written for one task and batched with `jax.vmap`.

A task draws a teacher W ~ N(0, τ² I) of shape (d_y, d), N context inputs and one query
input, and labels y = W x (+ noise). Shapes use the letters of the README:
N context pairs, D input dim d, Y output dim d_y, E = d + d_y token width, T = N + 1 tokens.

PRNG: threefry2x32 keys (JAX's default) with the non-partitionable bit layout
(`jax.threefry_partitionable(False)`), set locally around every sampler here. On a CPU,
vmapped over tasks, it samples a batch about 3x faster and compiles in 1.8 s instead of
2.8 s (benchmarks/train_throughput.py). Every batch is a pure function of (key, step)
through `jax.random.fold_in`; changing the PRNG implementation or this layout changes every
random stream and so every figure.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.core.linalg import matmul


class Prompt(NamedTuple):
    """One regression prompt (add a leading batch axis B when vmapped)."""

    x: jax.Array  # (N, D) context inputs
    y: jax.Array  # (N, Y) context labels (noisy if noise_std > 0)
    x_q: jax.Array  # (D,) query input
    y_q: jax.Array  # (Y,) query label (noisy only if query_noise)
    w: jax.Array  # (Y, D) teacher weights


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Distribution of linear-regression prompts."""

    d: int = 10  # input dimension
    n_context: int = 10  # N, number of (x, y) pairs in the context
    d_y: int = 1  # output dimension
    inputs: Literal["uniform", "gaussian"] = "uniform"  # law of each input vector
    input_low: float = -0.5  # uniform inputs: each coordinate ~ U(input_low, input_high)
    input_high: float = 0.5
    # gaussian inputs: x ~ N(0, input_cov); None means the identity. Nested tuples keep the
    # config hashable (it is a static argument of jitted functions).
    input_cov: tuple[tuple[float, ...], ...] | None = None
    w_scale: float = 1.0  # τ, teacher W ~ N(0, τ² I)
    noise_std: float = 0.0  # σ, Gaussian noise added to context labels
    query_noise: bool = False  # also add the noise to the query label

    def __post_init__(self):
        validate_task_config(self)

    @property
    def token_dim(self) -> int:
        """E = d + d_y, the width of a token (x, y)."""
        return self.d + self.d_y


def validate_task_config(cfg: TaskConfig) -> None:
    """Raise ValueError naming the field if `cfg` describes an impossible distribution."""
    for name in ("d", "n_context", "d_y"):
        value = getattr(cfg, name)
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"TaskConfig.{name} must be an integer >= 1, got {value!r}")
    if cfg.inputs not in ("uniform", "gaussian"):
        raise ValueError(f"TaskConfig.inputs must be 'uniform' or 'gaussian', got {cfg.inputs!r}")
    if cfg.inputs == "uniform" and not cfg.input_low < cfg.input_high:
        raise ValueError(
            f"TaskConfig needs input_low < input_high, got {cfg.input_low} and {cfg.input_high}"
        )
    if cfg.input_cov is not None:
        cov = np.asarray(cfg.input_cov, dtype=float)
        if cov.shape != (cfg.d, cfg.d):
            raise ValueError(f"TaskConfig.input_cov must be {cfg.d}x{cfg.d}, got shape {cov.shape}")
        if not np.allclose(cov, cov.T) or np.linalg.eigvalsh(cov).min() <= 0:
            raise ValueError("TaskConfig.input_cov must be symmetric positive definite")
        if cfg.inputs != "gaussian":
            raise ValueError("TaskConfig.input_cov is only used with inputs='gaussian'")
    if cfg.w_scale <= 0:
        raise ValueError(f"TaskConfig.w_scale must be > 0, got {cfg.w_scale}")
    if cfg.noise_std < 0:
        raise ValueError(f"TaskConfig.noise_std must be >= 0, got {cfg.noise_std}")


def _sampler(fn: Callable) -> Callable:
    """Trace `fn` with the non-partitionable threefry layout (see the module docstring)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.threefry_partitionable(False):
            return fn(*args, **kwargs)

    return wrapped


# Draws are uniform on the open interval (-1, 1); normals come from the inverse-CDF map
# √2·erfinv(v), which is how jax.random.normal itself is computed.
_OPEN_LOW = float(np.nextafter(np.float32(-1.0), np.float32(0.0)))


def _standard_normal(v: jax.Array) -> jax.Array:
    return jnp.sqrt(2.0) * jax.scipy.special.erfinv(v)


def _inputs_from_draws(v_TxD: jax.Array, cfg: TaskConfig) -> jax.Array:
    """Map draws in (-1, 1) to inputs of the configured law, (T, D)."""
    if cfg.inputs == "uniform":
        return cfg.input_low + (cfg.input_high - cfg.input_low) * 0.5 * (v_TxD + 1.0)
    z_TxD = _standard_normal(v_TxD)
    if cfg.input_cov is None:
        return z_TxD
    chol_DxD = jnp.asarray(np.linalg.cholesky(np.asarray(cfg.input_cov)), dtype=z_TxD.dtype)
    return matmul(z_TxD, chol_DxD.T)


@_sampler
def sample_task(key: jax.Array, cfg: TaskConfig) -> Prompt:
    """Draw one prompt: W ~ N(0, τ²I), x_i and x_q from the input law, y = W x + noise.

    All numbers of a task come from one `jax.random.uniform` call: one threefry call per
    task compiles about twice as fast as one call per distribution, at the same speed.
    A task family with its own `sample(key) -> Prompt` method (the nonlinear families of
    `icl_toy.core.nonlinear`) draws its prompt itself, so every sampler and trainer takes it.
    """
    if hasattr(cfg, "sample"):
        return cfg.sample(key)
    t, d, d_y = cfg.n_context + 1, cfg.d, cfg.d_y
    n_noise = t * d_y if cfg.noise_std > 0 else 0
    v = jax.random.uniform(key, (t * d + d_y * d + n_noise,), minval=_OPEN_LOW, maxval=1.0)
    x_all = _inputs_from_draws(v[: t * d].reshape(t, d), cfg)  # (T, D); last row is the query
    w_YxD = cfg.w_scale * _standard_normal(v[t * d : t * d + d_y * d].reshape(d_y, d))
    y_all = matmul(x_all, w_YxD.T)  # (T, Y)
    if n_noise:
        noise_TxY = cfg.noise_std * _standard_normal(v[t * d + d_y * d :].reshape(t, d_y))
        if not cfg.query_noise:
            noise_TxY = noise_TxY.at[-1].set(0.0)
        y_all = y_all + noise_TxY
    return Prompt(x=x_all[:-1], y=y_all[:-1], x_q=x_all[-1], y_q=y_all[-1], w=w_YxD)


@_sampler
def sample_batch(key: jax.Array, cfg: TaskConfig, batch_size: int) -> Prompt:
    """B independent prompts, each field with a leading axis B."""
    return jax.vmap(sample_task, in_axes=(0, None))(jax.random.split(key, batch_size), cfg)


@_sampler
def batch_at_step(key: jax.Array, cfg: TaskConfig, batch_size: int, step: jax.Array) -> Prompt:
    """The training batch of `step`: a pure function of (key, step), so runs can resume."""
    return sample_batch(jax.random.fold_in(key, step), cfg, batch_size)


def prompt_tokens(prompt: Prompt, w0: jax.Array | None = None) -> jax.Array:
    """Tokens (T, E): context e_i = (x_i, y_i), then the query (x_q, -W0 x_q).

    With W0 = 0 (the default) the query's y-slot is 0 (von Oswald et al., arXiv 2212.07677).
    """
    context_NxE = jnp.concatenate([prompt.x, prompt.y], axis=-1)
    y_slot = jnp.zeros_like(prompt.y_q) if w0 is None else -matmul(w0, prompt.x_q)
    query_E = jnp.concatenate([prompt.x_q, y_slot])
    return jnp.concatenate([context_NxE, query_E[None]], axis=0)


def von_oswald_preset() -> TaskConfig:
    """The single-layer setting of von Oswald et al. (arXiv 2212.07677): d = N = 10, d_y = 1.

    Inputs are U(-0.5, 0.5)^d, not the U(-1, 1) that the paper's text states: the official
    code samples in ±input_range/2 with input_range = 1, and only at this scale do the
    paper's numbers come out (the one-step GD loss of about 0.2, the eigenvalue ranges of
    XᵀX, the fitted GD++ γ). U(-1, 1) would give a one-step GD half-MSE of 0.825.
    Teacher W ~ N(0, I), no label noise.
    """
    return TaskConfig(d=10, n_context=10, d_y=1, inputs="uniform", input_low=-0.5, input_high=0.5)


PRESETS = {"von_oswald": von_oswald_preset}


def get_preset(name: str) -> TaskConfig:
    """The TaskConfig of a named preset; unknown names raise a ValueError listing the known."""
    if name not in PRESETS:
        raise ValueError(f"unknown task preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name]()


def input_moments(cfg: TaskConfig) -> tuple[float, float]:
    """(s, κ): per-coordinate variance and kurtosis E x⁴ / s² of i.i.d. zero-mean inputs.

    Closed forms for one GD step (docs/theory.md §8) need inputs with i.i.d. symmetric coordinates;
    other laws raise a ValueError.
    """
    if cfg.inputs == "uniform":
        if not np.isclose(cfg.input_low, -cfg.input_high):
            raise ValueError("closed forms need zero-mean inputs: set input_low = -input_high")
        half_width = cfg.input_high
        return half_width**2 / 3.0, 9.0 / 5.0
    if cfg.input_cov is None:
        return 1.0, 3.0
    cov = np.asarray(cfg.input_cov)
    if not np.allclose(cov, cov[0, 0] * np.eye(cfg.d)):
        raise ValueError("closed forms for a scalar GD step need isotropic inputs")
    return float(cov[0, 0]), 3.0


def input_covariance(cfg: TaskConfig) -> np.ndarray:
    """Σ_x = E x xᵀ of the task's input law, (D, D) (the second moment; zero-mean laws give Σ)."""
    if cfg.inputs == "gaussian":
        return np.eye(cfg.d) if cfg.input_cov is None else np.asarray(cfg.input_cov)
    lo, hi = cfg.input_low, cfg.input_high
    second_moment = (lo**2 + lo * hi + hi**2) / 3.0
    mean2 = ((lo + hi) / 2) ** 2
    return (second_moment - mean2) * np.eye(cfg.d) + mean2 * np.ones((cfg.d, cfg.d))


def anisotropic_task(
    d: int = 5,
    n_context: int = 20,
    eig_low: float = 0.5,
    eig_high: float = 2.0,
    rotation_seed: int = 0,
    noise_std: float = 0.5,
) -> TaskConfig:
    """Gaussian inputs N(0, Σ), Σ = Q diag(geomspace(eig_low, eig_high, d)) Qᵀ, w ~ N(0, I).

    Q is the orthogonal factor of a Gaussian matrix drawn with numpy's `default_rng(
    rotation_seed)`, so Σ and hence Γ* are not diagonal.
    """
    rotation, _ = np.linalg.qr(np.random.default_rng(rotation_seed).normal(size=(d, d)))
    cov = rotation @ np.diag(np.geomspace(eig_low, eig_high, d)) @ rotation.T
    cov = (cov + cov.T) / 2  # exactly symmetric, as TaskConfig checks
    return TaskConfig(
        d=d,
        n_context=n_context,
        inputs="gaussian",
        input_cov=tuple(map(tuple, cov.tolist())),
        noise_std=noise_std,
    )
