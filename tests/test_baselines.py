"""The baseline family's exact identities (docs/theory.md §8) and closed-form risks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.analysis import baselines
from icl_toy.core import learners, predictors
from icl_toy.core.linalg import matrix_products, products_below_full_precision
from icl_toy.core.tasks import Prompt, TaskConfig, von_oswald_preset


def _prompts(d, n, num_tasks=16, noise_std=0.0, d_y=1, seed=0):
    """Gaussian prompts drawn with numpy (no sampler to compile), in the default float dtype."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_tasks, n + 1, d))
    w = rng.standard_normal((num_tasks, d_y, d))
    y = np.einsum("btd,byd->bty", x, w)
    y[:, :-1] += noise_std * rng.standard_normal((num_tasks, n, d_y))
    dtype = jnp.result_type(float)
    return Prompt(*(jnp.asarray(a, dtype) for a in (x[:, :-1], y[:, :-1], x[:, -1], y[:, -1], w)))


def _batched(predictor, prompts):
    return jax.jit(jax.vmap(predictor))(prompts)


def test_ols_is_ridge_at_vanishing_lambda(x64):
    """N ≥ d: (XᵀX + λI)⁻¹Xᵀy → X⁺y as λ → 0.

    ŵ_λ − ŵ_0 = −λ(S + λI)⁻¹ŵ_0, so |ŷ_λ − ŷ_0| ≤ (λ/λ_min(S)) ||x_q|| ||ŵ_0||: at N = d,
    where λ_min(S) can be small, that bound is the test; at N = 3d the error is < 1e-8.
    """
    lam = 1e-10
    for n in (8, 24):
        prompts = _prompts(d=8, n=n, noise_std=0.3)
        ols_B = _batched(learners.ols, prompts)[:, 0]
        ridge_B = _batched(learners.ridge(lam), prompts)[:, 0]
        w_ols = np.einsum("bdn,bn->bd", np.linalg.pinv(prompts.x), prompts.y[..., 0])
        lam_min = np.linalg.eigvalsh(np.einsum("bnd,bne->bde", prompts.x, prompts.x))[:, 0]
        bound = (
            lam / lam_min * np.linalg.norm(prompts.x_q, axis=-1) * np.linalg.norm(w_ols, axis=-1)
        )
        assert np.all(np.abs(ridge_B - ols_B) <= bound + 1e-14), f"N = {n}"
        rel = np.max(np.abs(ridge_B - ols_B)) / np.max(np.abs(ols_B))
        if n >= 3 * 8:
            assert rel < 1e-8, f"ridge(1e-10) differs from OLS by {rel:.2e} relative"


def test_conjugate_gradient_is_exact_after_d_steps(x64):
    prompts = _prompts(d=8, n=20, noise_std=0.3, d_y=2)
    ols_B = _batched(learners.ols, prompts)
    cg_B = _batched(learners.conjugate_gradient(8), prompts)
    assert np.max(np.abs(cg_B - ols_B)) < 1e-10
    # Fewer steps than d are not exact (the test can fail).
    cg_short = _batched(learners.conjugate_gradient(4), prompts)
    assert np.max(np.abs(cg_short - ols_B)) > 1e-3


def test_newton_schulz_is_two_to_the_k_gd_steps(x64):
    """M_0 = αI: M_k Xᵀy = 2^k GD steps of step α on ½||Xw − y||², i.e. η = αN (1/N inside)."""
    prompts = _prompts(d=6, n=10, noise_std=0.1, d_y=2)
    n = prompts.x.shape[1]

    def both(prompt):
        alpha = 1.5 / jnp.linalg.eigvalsh(prompt.x.T @ prompt.x)[-1]  # any 0 < α < 2/λ_max
        ns = [
            learners.newton_schulz_fit(prompt.x, prompt.y, k, alpha) @ prompt.x_q for k in range(5)
        ]
        steps = [learners.gd(jnp.full(2**k, alpha * n))(prompt) for k in range(5)]
        return jnp.stack(ns), jnp.stack(steps)

    ns_BxK, gd_BxK = jax.jit(jax.vmap(both))(prompts)
    assert np.max(np.abs(ns_BxK - gd_BxK)) < 1e-12


def test_newton_schulz_default_alpha_converges_to_ols(x64):
    prompts = _prompts(d=6, n=30, noise_std=0.1)
    ns_B = _batched(learners.newton_schulz(12), prompts)
    np.testing.assert_allclose(ns_B, _batched(learners.ols, prompts), atol=1e-8)


def test_line_search_gd_decreases_the_loss_every_step(x64):
    prompts = _prompts(d=8, n=20, noise_std=0.5, d_y=2)
    iterates = jax.vmap(lambda x, y: learners.line_search_gd_iterates(x, y, 12))(
        prompts.x, prompts.y
    )  # (B, K+1, Y, D)
    resid = np.einsum("bnd,bkyd->bkny", prompts.x, iterates) - np.asarray(prompts.y)[:, None]
    loss_BxK = 0.5 * np.mean(np.sum(resid**2, axis=-1), axis=-1)
    assert np.all(np.diff(loss_BxK, axis=1) < 0), "the loss went up (or stalled) at some step"
    # Each step is the exact minimiser along −G: scaling the first step by 1 ± 1% is worse.
    x, y, w_1 = (np.asarray(a) for a in (prompts.x[0], prompts.y[0], iterates[0, 1]))

    def loss(w_YxD):
        return 0.5 * np.mean(np.sum((x @ w_YxD.T - y) ** 2, axis=-1))

    for scale in (0.99, 1.01):
        assert loss(w_1) < loss(scale * w_1)


def test_knn_with_k_equal_n_predicts_the_mean_label(x64):
    prompts = _prompts(d=3, n=7, d_y=2)
    np.testing.assert_allclose(
        _batched(learners.nearest_neighbours(7), prompts), prompts.y.mean(axis=1), atol=1e-14
    )


def test_knn_against_numpy():
    prompts = _prompts(d=3, n=9)
    pred = np.asarray(_batched(learners.nearest_neighbours(3), prompts))
    for b in range(prompts.x.shape[0]):
        dist = np.sum((np.asarray(prompts.x[b]) - np.asarray(prompts.x_q[b])) ** 2, axis=-1)
        expected = np.asarray(prompts.y[b])[np.argsort(dist)[:3]].mean(axis=0)
        np.testing.assert_allclose(pred[b], expected, rtol=1e-6)


def test_zero_predictor_and_shapes():
    prompts = _prompts(d=4, n=6, d_y=2)
    np.testing.assert_array_equal(_batched(learners.zero_predictor, prompts), 0.0)
    family = baselines.baseline_family(
        TaskConfig(d=4, n_context=6, d_y=2, noise_std=0.5),
        key=jax.random.key(0),
        max_steps=2,
        ridge_lambdas=(0.1,),
        num_tune_tasks=64,
    )
    assert any(name.startswith("ridge(Bayes λ=0.25") for name in family)
    outputs = jax.jit(lambda p: {name: jax.vmap(f)(p) for name, f in family.items()})(prompts)
    for name, out in outputs.items():
        assert out.shape == (prompts.x.shape[0], 2), name
        assert np.all(np.isfinite(out)), name


def test_preconditioned_gd_with_scalar_gamma_is_gd(x64):
    prompts = _prompts(d=5, n=7)
    np.testing.assert_allclose(
        _batched(learners.preconditioned_gd(0.7 * jnp.eye(5)), prompts),
        _batched(learners.gd(0.7), prompts),
        atol=1e-13,
    )


def test_model_predictor_runs_the_gd_construction(x64):
    from icl_toy.core.constructions import gd_weights
    from icl_toy.core.models import LSATransformer

    prompts = _prompts(d=5, n=7)
    model = LSATransformer(d=5, num_layers=2)
    construction = predictors.model_predictor(model, gd_weights(model, [0.5, 0.8], 7))
    np.testing.assert_allclose(
        _batched(construction, prompts), _batched(learners.gd([0.5, 0.8]), prompts), atol=1e-13
    )


def _monte_carlo_mse(predictor, prompts):
    err_B = np.sum((np.asarray(_batched(predictor, prompts)) - np.asarray(prompts.y_q)) ** 2, -1)
    return err_B.mean(), err_B.std(ddof=1) / np.sqrt(err_B.shape[0])


def test_ols_excess_risk_against_monte_carlo(x64):
    """σ² d/(N − d − 1) for N > d + 1; τ²(d − N) + σ² N/(d − N − 1) for N < d − 1 (N(0, I))."""
    for d, n, expected in [(4, 20, 0.25 * 4 / 15), (8, 4, 4 + 0.25 * 4 / 3)]:
        task = TaskConfig(d=d, n_context=n, inputs="gaussian", noise_std=0.5)
        assert baselines.ols_excess_risk(task) == pytest.approx(expected)
        prompts = _prompts(d=d, n=n, num_tasks=20_000, noise_std=0.5, seed=3)
        mean, sem = _monte_carlo_mse(learners.ols, prompts)
        assert abs(mean - expected) < 4 * sem, f"MC {mean:.4f} ± {sem:.4f} vs {expected:.4f}"


def test_closed_form_risk_edge_cases():
    assert baselines.ols_excess_risk(von_oswald_preset()) == 0.0  # noiseless, N = d
    assert baselines.ols_excess_risk(
        TaskConfig(d=4, n_context=5, inputs="gaussian", noise_std=1)
    ) == float("inf")
    with pytest.raises(ValueError, match="Gaussian"):
        baselines.ols_excess_risk(TaskConfig(d=4, n_context=20, noise_std=0.1))
    # docs/theory.md §10b: the zero predictor's MSE for U(−0.5, 0.5)^10 inputs is 10/12 = 0.833.
    assert baselines.zero_predictor_risk(von_oswald_preset()) == pytest.approx(10 / 12)


def test_bayes_ridge_risk_matches_monte_carlo_and_beats_ols(x64):
    task = TaskConfig(d=5, n_context=8, inputs="gaussian", w_scale=1.0, noise_std=0.7)
    risk, risk_sem = baselines.bayes_ridge_excess_risk(
        task, key=jax.random.key(5), num_tasks=20_000
    )
    ridge = learners.ridge(baselines.bayes_ridge_lambda(task))
    mean, sem = _monte_carlo_mse(ridge, _prompts(d=5, n=8, num_tasks=20_000, noise_std=0.7, seed=6))
    assert abs(mean - risk) < 4 * np.hypot(sem, risk_sem), f"MC {mean:.4f} vs {risk:.4f}"
    assert risk < baselines.ols_excess_risk(task)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="λ"):
        learners.ridge(-1.0)
    with pytest.raises(ValueError, match="num_iterations"):
        learners.newton_schulz(-1)
    with pytest.raises(ValueError, match="k must be"):
        learners.nearest_neighbours(0)
    with pytest.raises(ValueError, match="noise_std"):
        baselines.bayes_ridge_excess_risk(von_oswald_preset(), key=jax.random.key(0))


def test_every_matrix_product_asks_for_full_float32_precision():
    """As tests/test_models.py: GPUs default to TF32 products (see icl_toy.core.linalg)."""
    from icl_toy.analysis import alignment

    prompts = _prompts(d=4, n=6, num_tasks=3)
    family = {
        "ols": learners.ols,
        "ridge": learners.ridge(0.1),
        "gd": learners.gd([0.5, 0.5]),
        "line_search_gd": learners.line_search_gd(2),
        "cg": learners.conjugate_gradient(2),
        "gdpp": learners.gdpp(0.5, 0.1),
        "preconditioned_gd": learners.preconditioned_gd(jnp.eye(4)),
        "newton_schulz": learners.newton_schulz(2),
        "knn": learners.nearest_neighbours(2),
    }
    probes = jnp.ones((3, 5, 4))
    programs = [
        jax.make_jaxpr(
            lambda p, q, f=f: alignment._evaluation_arrays(f, p, q, jnp.ones((3, 4, 5)))
        )(prompts, probes)
        for f in family.values()
    ]

    found = [eqn for program in programs for eqn in matrix_products(program)]
    assert len(found) > 20
    assert not products_below_full_precision(found), products_below_full_precision(found)[0]
