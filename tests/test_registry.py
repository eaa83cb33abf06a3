"""The model registry: every kind builds from a `ModelConfig`, trains, and is reached by `--set`."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_toy.core.models import (
    MODEL_KINDS,
    ModelConfig,
    TokenMomentumLSA,
    check_params,
    learned_scalars,
    make_model,
    momentum_lsa_config,
    momentum_scalar,
)
from icl_toy.core.predictors import model_predictor
from icl_toy.core.tasks import TaskConfig, prompt_tokens, sample_batch
from icl_toy.runs.config import apply_overrides
from icl_toy.training.train import TrainConfig, batch_predict, make_trainer, seed_keys, train

TASK = TaskConfig(d=2, n_context=4)
# Small sizes for every kind; each kind reads only its own fields (`MODEL_KINDS[kind].fields`).
SMALL = {
    "lsa": ModelConfig(num_layers=2),
    "causal_lsa": ModelConfig(kind="causal_lsa", num_layers=2),
    "token_momentum": ModelConfig(kind="token_momentum", num_layers=2),
    "depth_momentum": ModelConfig(kind="depth_momentum", num_layers=2, beta_init=0.5),
    "softmax_transformer": ModelConfig(
        kind="softmax_transformer", num_layers=1, num_heads=2, embed_dim=8, mlp_hidden=8
    ),
    "feature_lsa": ModelConfig(kind="feature_lsa", feature_dim=4, feature_hidden=8),
    "feature_gd": ModelConfig(kind="feature_gd", feature_dim=4, feature_hidden=8),
    "standard_tokens": ModelConfig(kind="standard_tokens"),
}
SCALARS = {"token_momentum": {"mu"}, "depth_momentum": {"beta"}, "feature_gd": {"eta"}}


@pytest.mark.long
def test_every_registered_kind_builds_trains_and_predicts():
    assert set(SMALL) == set(MODEL_KINDS), "give every registered kind a small config here"
    cfg = TrainConfig(steps=1, batch_size=8, eval_every=1, num_seeds=1, learning_rate=1e-2)
    prompts = sample_batch(jax.random.key(1), TASK, 4)
    tokens_TxE = prompt_tokens(jax.tree.map(lambda a: a[0], prompts))
    for kind, model_cfg in SMALL.items():
        model = make_model(TASK, model_cfg)
        result = train(model, TASK, cfg)
        assert np.all(np.isfinite(result.train_loss)), kind
        params = jax.tree.map(lambda a: a[0], result.params)
        check_params(model, params, tokens_TxE)
        # The run's own initial params (the program `train` just compiled, so no recompile).
        init_state, _ = make_trainer(model, TASK, cfg).init(seed_keys(cfg), jnp.ones(1))
        init = jax.tree.map(lambda a: a[0], init_state.params)
        moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), init, params)
        assert any(jax.tree.leaves(moved)), f"{kind}: one training step changed no parameter"
        predictions = jax.jit(functools.partial(batch_predict, model))(params, prompts)
        assert predictions.shape == (4, TASK.d_y), kind
        # The alignment API reads any kind through the same tokens.
        one = jax.jit(model_predictor(model, params))(jax.tree.map(lambda a: a[1], prompts))
        np.testing.assert_allclose(one, predictions[1], rtol=1e-5, atol=1e-6, err_msg=kind)
        assert set(learned_scalars(model, params)) == SCALARS.get(kind, set()), kind


def test_lsa_kinds_update_only_the_query_in_the_last_layer_exactly():
    """ŷ from the query-only last layer equals the readout of the full trajectory."""
    tokens_BxTxE = jax.vmap(prompt_tokens)(sample_batch(jax.random.key(2), TASK, 8))
    for kind in ("lsa", "causal_lsa", "token_momentum", "depth_momentum"):
        cfg = dataclasses.replace(SMALL[kind], num_layers=3, init_scale=3.0)
        if kind == "token_momentum":
            cfg = dataclasses.replace(cfg, mu_init=0.5)
        model = make_model(TASK, cfg)
        params = model.init(jax.random.key(0), tokens_BxTxE[0])

        @jax.jit
        def both(tokens, model=model, params=params):
            full = model.apply(params, tokens, method=model.trajectory)
            return model.apply(params, tokens), full

        y_hat, full_LxTxE = jax.vmap(both)(tokens_BxTxE)
        np.testing.assert_allclose(y_hat, -full_LxTxE[:, -1, -1, -1:], rtol=1e-6, err_msg=kind)
        # The context tokens moved in the hidden layers, so the check has something to miss.
        assert float(jnp.max(jnp.abs(full_LxTxE[:, 2, :-1] - tokens_BxTxE[:, :-1]))) > 1e-2


@dataclasses.dataclass(frozen=True)
class _Study:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)


def test_set_model_kind_reaches_the_model():
    cfg = apply_overrides(_Study(), ["model.kind=token_momentum", "model.mu_init=0.3"])
    model = make_model(TASK, cfg.model)
    assert isinstance(model, TokenMomentumLSA)
    params = model.init(jax.random.key(0), jnp.zeros((TASK.n_context + 1, TASK.token_dim)))
    assert float(learned_scalars(model, params)["mu"]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match=r"kind must be one of lsa, causal_lsa, .*got 'lsb'"):
        apply_overrides(_Study(), ["model.kind=lsb"])


def test_bad_model_configs_raise_one_line_errors():
    with pytest.raises(ValueError, match=r"^ModelConfig.kind must be one of lsa, causal_lsa") as e:
        ModelConfig(kind="mamba")
    assert "\n" not in str(e.value) and all(kind in str(e.value) for kind in MODEL_KINDS)
    with pytest.raises(ValueError, match=r"^ModelConfig.init of kind 'causal_lsa' must be one"):
        ModelConfig(kind="causal_lsa", init="gd_sparsity")
    # A field the kind does not read is an error, not silently ignored.
    with pytest.raises(ValueError, match=r"ModelConfig.shared_weights is not read by kind 'soft"):
        ModelConfig(kind="softmax_transformer", shared_weights=True)
    with pytest.raises(ValueError, match=r"ModelConfig.mu_init is not read by kind 'lsa'"):
        ModelConfig(mu_init=0.2)
    with pytest.raises(ValueError, match=r"mu must be None or in \[0, 1\)"):
        ModelConfig(kind="token_momentum", mu=1.0)


def test_momentum_lsa_config_fixes_or_learns_the_kinds_momentum():
    fields = dict(num_layers=2, init_scale=0.01)
    assert momentum_lsa_config("lsa", 0.3, **fields) == ModelConfig(**fields)
    learned = momentum_lsa_config("token_momentum", 0.3, **fields)
    assert learned == ModelConfig(kind="token_momentum", mu_init=0.3, **fields)
    fixed = momentum_lsa_config("depth_momentum", 0.0, 0.6, **fields)
    assert fixed == ModelConfig(kind="depth_momentum", beta=0.6, **fields)
    tokens_TxE = jnp.zeros((TASK.n_context + 1, TASK.token_dim))
    for cfg, expected in ((learned, 0.3), (fixed, 0.6), (ModelConfig(**fields), 0.0)):
        model = make_model(TASK, cfg)
        params = model.init(jax.random.key(0), tokens_TxE)
        assert float(momentum_scalar(model, params)) == pytest.approx(expected)
