"""Tuned RBF baselines, grid predictions and sensitivities, and the MLP + GD kernel readout."""

import jax
import jax.numpy as jnp
import numpy as np

from icl_toy.analysis import kernel_views
from icl_toy.analysis.metrics import COSINE_EPS
from icl_toy.core.models import FeatureGD
from icl_toy.core.nonlinear import SineTaskConfig, rbf_ridge_predict, sine_oracle_predict
from icl_toy.core.tasks import Prompt, prompt_tokens, sample_batch


def _numpy_rbf(a, b, ell):
    return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * ell**2))


def _numpy_prompts(seed=0, batch=64):
    prompts = sample_batch(jax.random.key(seed), SineTaskConfig(), batch)
    return prompts, jax.tree.map(np.asarray, prompts)


def test_rbf_smoothing_fit_is_the_closed_form_best_step_on_the_grid(x64):
    prompts, p = _numpy_prompts()
    scales = (0.3, 1.0, 2.5)
    rows = []
    for ell in scales:  # unit-step smoothing ŷ = (1/N) Σ_i y_i k(x_i, x_q), then the best η
        s = np.stack(
            [
                _numpy_rbf(x, q[None], ell)[:, 0] @ y / len(x)
                for x, y, q in zip(p.x, p.y, p.x_q, strict=True)
            ]
        )
        eta = (s * p.y_q).sum() / (s * s).sum()
        rows.append((ell, eta, 0.5 * np.mean((eta * s - p.y_q) ** 2)))
    ell, eta, loss = min(rows, key=lambda r: r[2])
    assert len({r[2] for r in rows}) == 3  # the grid separates the scales
    fit = kernel_views.fit_rbf_smoothing(prompts, scales)
    assert fit["length_scale"] == ell
    np.testing.assert_allclose(fit["eta"], eta, rtol=1e-10)
    predict = kernel_views.tuned_rbf_predictors({"rbf_smoothing": fit, "rbf_ridge": {}})
    np.testing.assert_allclose(
        kernel_views.explicit_half_mse(predict["rbf_smoothing"], prompts), loss, rtol=1e-10
    )
    # η* is a minimum: a step 10% off either way is worse.
    for factor in (0.9, 1.1):
        shifted = {"rbf_smoothing": {**fit, "eta": factor * fit["eta"]}, "rbf_ridge": {}}
        worse = kernel_views.tuned_rbf_predictors(shifted)["rbf_smoothing"]
        assert kernel_views.explicit_half_mse(worse, prompts) > loss


def test_rbf_ridge_fit_picks_the_least_loss_of_the_grid(x64):
    prompts, p = _numpy_prompts(seed=1)
    scales, lambdas = (0.5, 2.0), (1e-3, 1.0)
    losses = {}
    for ell in scales:
        for lam in lambdas:
            pred = [
                _numpy_rbf(q[None], x, ell)
                @ np.linalg.solve(_numpy_rbf(x, x, ell) + lam * np.eye(10), y)
                for x, y, q in zip(p.x, p.y, p.x_q, strict=True)
            ]
            losses[ell, lam] = 0.5 * np.mean((np.concatenate(pred) - p.y_q) ** 2)
    ell, lam = min(losses, key=losses.get)
    fit = kernel_views.fit_rbf_ridge(prompts, scales, lambdas)
    assert (fit["length_scale"], fit["lambda"]) == (ell, lam)
    ridge = kernel_views.tuned_rbf_predictors({"rbf_smoothing": {}, "rbf_ridge": fit})["rbf_ridge"]
    np.testing.assert_allclose(kernel_views.explicit_half_mse(ridge, prompts), losses[ell, lam])


def test_explicit_grid_values_and_derivatives(x64):
    prompts, _ = _numpy_prompts(seed=2, batch=3)
    grid = jnp.linspace(-4.0, 4.0, 7)

    def ridge(x, y, x_q):
        return rbf_ridge_predict(x, y, x_q, 1.3, 0.1)

    pred_BxG, sens_BxG = kernel_views.explicit_grid(ridge, prompts, grid)
    assert pred_BxG.shape == sens_BxG.shape == (3, 7)
    h = 1e-5
    for b in range(3):
        x, y = prompts.x[b], prompts.y[b]
        at = np.array([ridge(x, y, g[None])[0] for g in grid])
        up = np.array([ridge(x, y, g[None] + h)[0] for g in grid])
        down = np.array([ridge(x, y, g[None] - h)[0] for g in grid])
        np.testing.assert_allclose(pred_BxG[b], at, rtol=1e-12)
        np.testing.assert_allclose(sens_BxG[b], (up - down) / (2 * h), rtol=1e-6, atol=1e-8)


def test_model_grid_and_kernel_readout_of_feature_gd(x64):
    """On a prompt whose inputs lie on the grid, MLP + GD's ŷ is Σ_i y_i k(x_i, x_q) with the
    read-out kernel, for every grid query; the grid values are the model's own outputs."""
    model = FeatureGD(d=1, embed_dim=8, hidden_size=16, eta_init=0.7)
    grid = jnp.linspace(-3.0, 3.0, 9)
    idx = np.array([0, 2, 3, 5, 8])
    y = jnp.asarray(np.random.default_rng(0).normal(size=(5, 1)))
    prompt = Prompt(x=grid[idx][:, None], y=y, x_q=grid[4:5], y_q=jnp.zeros(1), w=jnp.zeros((1, 2)))
    tokens = prompt_tokens(prompt)
    params = model.init(jax.random.key(0), tokens)
    params_S = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)  # two "seeds"
    pred_SxBxG, sens_SxBxG = kernel_views.model_grid(model, params_S, tokens[None], grid)
    assert pred_SxBxG.shape == sens_SxBxG.shape == (2, 1, 9)
    for s in range(2):
        seed = jax.tree.map(lambda a, s=s: a[s], params_S)
        kernel = kernel_views.feature_gd_kernel(model, seed, grid, n_context=5)
        np.testing.assert_allclose(kernel, kernel.T, rtol=1e-12)
        expected_G = kernel[idx].T @ np.asarray(y[:, 0])
        direct_G = [model.apply(seed, tokens.at[-1, 0].set(g))[0] for g in grid]
        np.testing.assert_allclose(pred_SxBxG[s, 0], direct_G, rtol=1e-12)
        np.testing.assert_allclose(pred_SxBxG[s, 0], expected_G, rtol=1e-10, atol=1e-12)
    assert np.abs(pred_SxBxG).max() > 1e-3  # a real comparison


def _numpy_cosine(a_BxG, b_BxG):
    """Mean over tasks of the cosine, with `metrics`' ε added to each norm."""
    norms = np.linalg.norm(a_BxG, axis=-1) + COSINE_EPS
    norms = norms * (np.linalg.norm(b_BxG, axis=-1) + COSINE_EPS)
    return np.mean((a_BxG * b_BxG).sum(-1) / norms)


def test_seed_sensitivity_cosine_per_seed_and_shared(x64):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 4, 6))
    flipped = a * np.array([1.0, -1.0])[:, None, None]
    got = kernel_views.seed_sensitivity_cosine(jnp.asarray(a), jnp.asarray(flipped))
    np.testing.assert_allclose(got, [1.0, -1.0], rtol=1e-7)  # only ε keeps |cos| below 1
    np.testing.assert_allclose(got, [_numpy_cosine(a[s], flipped[s]) for s in range(2)])
    shared_BxG = rng.normal(size=(4, 6))
    got = kernel_views.seed_sensitivity_cosine(jnp.asarray(a), jnp.asarray(shared_BxG))
    np.testing.assert_allclose(got, [_numpy_cosine(a[s], shared_BxG) for s in range(2)])


def test_oracle_sensitivity_is_the_true_derivative(x64):
    """Least squares on (sin x, cos x) recovers a·sin(x + ρ), so ∂ŷ/∂x_q = a·cos(x_q + ρ)."""
    prompts, p = _numpy_prompts(seed=4, batch=5)
    grid = jnp.linspace(-5.0, 5.0, 11)
    pred, sens = kernel_views.explicit_grid(sine_oracle_predict, prompts, grid)
    a, rho = p.w[:, 0, :1], p.w[:, 0, 1:]
    np.testing.assert_allclose(pred, a * np.sin(np.asarray(grid) + rho), atol=1e-9)
    np.testing.assert_allclose(sens, a * np.cos(np.asarray(grid) + rho), atol=1e-9)
    assert float(jnp.abs(sens).max()) > 0.1  # a real comparison, not of two zeros
