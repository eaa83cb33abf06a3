"""icl_toy.analysis.learning_curves: closed forms, paired prefixes, length scaling, OOD shifts."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from icl_toy.analysis import learning_curves as lc
from icl_toy.analysis.learning_curves import Shift
from icl_toy.core import learners, predictors
from icl_toy.core.constructions import gdpp_weights
from icl_toy.core.models import ModelConfig, make_model
from icl_toy.core.tasks import TaskConfig, input_covariance, sample_batch
from icl_toy.training import tuning


def _standard_errors(curve, num_tasks):
    """Standard error over tasks from the 95% interval over tasks (half-width / t)."""
    tasks = curve["tasks"]
    assert (tasks["method"], tasks["n"]) == ("t", num_tasks)
    half = (np.asarray(tasks["high"]) - np.asarray(tasks["low"])) / 2
    return half / scipy.stats.t.ppf(0.975, num_tasks - 1)


def test_noiseless_ols_and_zero_follow_their_closed_forms():
    # docs/theory.md §8: noiseless min-norm OLS on N(0, I) inputs has excess τ²(d − n) for n < d
    # and 0 for n >= d; the zero predictor has τ² tr Σ at every n (half of each here).
    task = TaskConfig(d=5, n_context=5, inputs="gaussian", w_scale=1.5)
    lengths, num_tasks = (1, 3, 5, 8), 4000
    result = lc.learning_curve(
        {"zero": learners.zero_predictor, "ols": learners.ols},
        task,
        lengths,
        key=jax.random.key(0),
        num_tasks=num_tasks,
    )
    closed = lc.closed_form_curves(task, lengths)
    np.testing.assert_allclose(closed["ols"], 0.5 * 2.25 * np.array([4, 2, 0, 0]))
    np.testing.assert_allclose(closed["zero"], 0.5 * 2.25 * 5)
    for name in ("zero", "ols"):
        curve = result["curves"][name]
        mean, se = np.asarray(curve["mean"]), _standard_errors(curve, num_tasks)
        underdetermined = closed[name] > 0
        # Within 3 standard errors wherever the risk is positive, and exactly 0 elsewhere.
        assert np.all(np.abs(mean - closed[name])[underdetermined] < 3 * se[underdetermined])
        assert np.all(mean[~underdetermined] < 1e-8)
        assert curve["over"] == "tasks"
        assert len(curve["per_seed"]) == 1
    # Every n sees the same tasks, so the zero predictor's curve is exactly flat.
    assert len(set(result["curves"]["zero"]["mean"])) == 1


def test_one_gd_step_and_noisy_ols_match_closed_forms():
    # GD with one step η (1/n inside) on N(0, I) inputs with noise: docs/theory.md §5 at length n;
    # OLS for n > d + 3 (finite variance there): σ²d/(n − d − 1).
    task = TaskConfig(d=4, n_context=6, inputs="gaussian", noise_std=0.5)
    eta, lengths, num_tasks = 0.5, (1, 4, 9, 16), 6000
    result = lc.learning_curve(
        {"gd": learners.gd(eta), "ols": learners.ols},
        task,
        lengths,
        key=jax.random.key(1),
        num_tasks=num_tasks,
    )
    closed = lc.closed_form_curves(task, lengths, gd_eta=eta)
    for name, form, rows in (("gd", "gd", slice(None)), ("ols", "ols", slice(2, None))):
        curve = result["curves"][name]
        mean, se = np.asarray(curve["mean"])[rows], _standard_errors(curve, num_tasks)[rows]
        assert np.all(np.abs(mean - closed[form][rows]) < 3 * se), (name, mean, closed[form])
    np.testing.assert_allclose(closed["ols"][2:], 0.5 * 0.25 * 4 / (np.array([9, 16]) - 5))
    # n = d = 4 has an infinite OLS risk with noise.
    assert closed["ols"][1] == np.inf


def test_prompts_are_nested_prefixes_of_one_draw():
    task = TaskConfig(d=3, n_context=4, inputs="gaussian", noise_std=0.1)
    key = jax.random.key(2)

    def first_label(prompt):
        return prompt.y[0]

    result = lc.learning_curve(
        {"first": first_label, "last": lambda p: p.y[-1]}, task, (1, 3, 7), key=key, num_tasks=50
    )
    # ŷ = y_1 does not depend on n when the prompts are prefixes of one draw.
    assert len(set(result["curves"]["first"]["mean"])) == 1
    assert result["curves"]["last"]["mean"][0] == result["curves"]["first"]["mean"][0]
    # The longest prompts are exactly `sample_batch` at that length from the same key.
    full = sample_batch(key, dataclasses.replace(task, n_context=7), 50)
    direct = 0.5 * np.mean(np.sum((np.asarray(full.y[:, -1]) - np.asarray(full.y_q)) ** 2, -1))
    assert result["curves"]["last"]["mean"][-1] == pytest.approx(direct, rel=1e-6)
    short = lc.prefix(full, 3)
    np.testing.assert_array_equal(short.x, full.x[:, :3])
    np.testing.assert_array_equal(short.x_q, full.x_q)
    with pytest.raises(ValueError, match="prefix length"):
        lc.prefix(full, 8)


def test_length_normalised_construction_is_gd_and_gdpp_at_every_length(x64):
    # K = 2 GD++ layers built for N = 5. Normalised to n: explicit GD++ with η (1/n inside)
    # and γ = γ̂/n, γ̂ = Nγ (`tuning.normalized_gamma`). Raw: steps η·n/N, γ unchanged.
    task = TaskConfig(d=3, n_context=5, inputs="gaussian", noise_std=0.2)
    n_train, etas, gamma_hats = 5, np.array([0.6, 0.4]), np.array([0.3, 0.1])
    model = make_model(task, ModelConfig(num_layers=2))
    params = gdpp_weights(model, etas, gamma_hats / n_train, n_train)
    params_s = jax.tree.map(lambda v: jnp.stack([v, v]), params)  # two identical "seeds"
    raw = predictors.seeded_model_predictor(model, params_s)
    normalised = lc.length_normalised(raw, n_train)
    prompts = sample_batch(jax.random.key(3), dataclasses.replace(task, n_context=9), 20)
    learner = functools.partial(
        tuning.normalized_gamma(tuning.gdpp_learner), {"eta": etas, "gamma": gamma_hats}
    )

    def differences(p):
        n = p.x.shape[1]
        got_norm = jax.vmap(normalised.apply, in_axes=(None, 0))(params, p)
        got_raw = jax.vmap(raw.apply, in_axes=(None, 0))(params, p)
        want_norm = jax.vmap(learners.gdpp(etas, gamma_hats / n))(p)
        want_raw = jax.vmap(learners.gdpp(etas * n / n_train, gamma_hats / n_train))(p)
        return jnp.stack(
            [
                jnp.max(jnp.abs(got_norm - want_norm)),
                jnp.max(jnp.abs(got_raw - want_raw)),
                jnp.max(jnp.abs(jax.vmap(learner)(p) - want_norm)),
                jnp.max(jnp.abs(want_norm - want_raw)),
            ]
        )

    lengths = (2, 5, 9)  # one compiled program for all three (the shapes differ per n)
    errors = jax.jit(lambda p: jnp.stack([differences(lc.prefix(p, n)) for n in lengths]))
    for n, (norm_err, raw_err, learner_err, norm_vs_raw) in zip(
        lengths, np.asarray(errors(prompts)), strict=True
    ):
        assert max(norm_err, raw_err, learner_err) < 1e-12, n
        # The two conventions agree only at the training length.
        assert (norm_vs_raw < 1e-12) == (n == n_train), n


def test_seeded_intervals_are_over_seeds_and_undefined_lengths_are_nan():
    task = TaskConfig(d=3, n_context=4, inputs="gaussian")
    scales = jnp.array([0.5, 1.0, 1.5])

    def scaled_ols(scale, prompt):
        return scale * learners.ols(prompt)

    result = lc.learning_curve(
        {
            "seeded": predictors.SeededPredictor(scaled_ols, scales),
            "knn": learners.nearest_neighbours(2),
        },
        task,
        (1, 2, 4),
        key=jax.random.key(4),
        num_tasks=200,
    )
    seeded, knn = result["curves"]["seeded"], result["curves"]["knn"]
    assert seeded["over"] == "seeds" and len(seeded["per_seed"]) == 3
    assert (seeded["method"], seeded["n"], knn["n"], knn["tasks"]["n"]) == ("t", 3, 200, 200)
    np.testing.assert_allclose(seeded["mean"], np.mean(seeded["per_seed"], axis=0))
    # At n = 4 >= d OLS is exact: seed s has error (scale_s − 1)² · ½(wᵀx_q)².
    assert seeded["per_seed"][1][-1] < 1e-8
    assert seeded["per_seed"][0][-1] == pytest.approx(seeded["per_seed"][2][-1], rel=1e-4)
    assert np.isnan(knn["mean"][0]) and list(knn["undefined"]) == [1]
    assert np.all(np.isfinite(knn["mean"][1:]))


def test_shifts_change_the_law_as_described():
    uniform = TaskConfig()
    gaussian = TaskConfig(d=4, n_context=4, inputs="gaussian", noise_std=0.5)
    scaled = lc.apply_shift(uniform, Shift("input_scale", 2.0))
    assert (scaled.input_low, scaled.input_high) == (-1.0, 1.0)
    np.testing.assert_allclose(
        input_covariance(lc.apply_shift(gaussian, Shift("input_scale", 3.0))), 9 * np.eye(4)
    )
    assert lc.apply_shift(gaussian, Shift("weight_scale", 2.0)).w_scale == 2.0
    assert lc.apply_shift(gaussian, Shift("label_noise", 0.0)).noise_std == 0.0
    assert lc.apply_shift(gaussian, None) is gaussian
    skewed = lc.apply_shift(uniform, Shift("skewed_covariance", 100.0))
    cov = input_covariance(skewed)
    eigenvalues = np.linalg.eigvalsh(cov)
    assert skewed.inputs == "gaussian"
    assert eigenvalues[-1] / eigenvalues[0] == pytest.approx(100.0)
    np.testing.assert_allclose(np.diff(np.log(eigenvalues)), np.log(100.0) / 9)
    assert np.trace(cov) == pytest.approx(np.trace(input_covariance(uniform)))
    assert np.abs(cov - np.diag(np.diag(cov))).max() > 0.01  # rotated, not axis-aligned
    # The sampled inputs have that covariance.
    x = np.asarray(sample_batch(jax.random.key(5), skewed, 20000).x).reshape(-1, 10)
    np.testing.assert_allclose(x.T @ x / len(x), cov, atol=0.01)


@pytest.mark.parametrize(
    ("kind", "value", "match"),
    [
        ("rotation", 1.0, "unknown shift kind"),
        ("input_scale", 0.0, "> 0"),
        ("weight_scale", -1.0, "> 0"),
        ("skewed_covariance", 0.5, "condition >= 1"),
        ("label_noise", -0.1, ">= 0"),
        ("input_scale", float("nan"), "finite"),
        ("input_scale", True, "number"),
    ],
)
def test_bad_shifts_raise(kind, value, match):
    with pytest.raises(ValueError, match=match):
        Shift(kind, value)


def test_bad_arguments_raise_before_compute():
    task = TaskConfig(d=3, n_context=3, inputs="gaussian")
    preds = {"ols": learners.ols}
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="distinct integers"):
        lc.learning_curve(preds, task, (0, 1), key=key, num_tasks=10)
    with pytest.raises(ValueError, match="num_tasks"):
        lc.learning_curve(preds, task, (1, 2), key=key, num_tasks=1)
    with pytest.raises(ValueError, match="same"):
        lc.learning_curves(preds, {"a": task, "b": TaskConfig(d=4)}, (1, 2), key=key, num_tasks=10)
    with pytest.raises(ValueError, match="w_p"):
        lc.length_normalised(predictors.SeededPredictor(lambda p, x: x.y_q, jnp.zeros(2)), 3)
