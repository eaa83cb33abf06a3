"""Attention layers and transformers on regression tokens (Flax linen, column-form weights).

Conventions (docs/theory.md §0, §1):
- A prompt is T = N + 1 tokens of width E = d + d_y; the query is the last token.
- Keys and values come from the N context tokens only; every token, query included, is
  updated. Letting the query into the keys is exact only for one GD layer (docs/theory.md §1).
- Weights are stored in column form, q = W_Q e: `w_q`, `w_k`, `w_v` have shape (H, k, E)
  and the projection `w_p` has shape (H, E, k), for H heads of key size k. (Flax `Dense`
  kernels are the transpose; these are not Dense kernels.)
- Only the products W_KQ = W_Kᵀ W_Q and W_PV = P W_V matter to a linear attention layer.
- The prediction is ŷ = −(y-slot of the query token) after the last layer.

One module per idea: `lsa` (the LSA math and `LSATransformer`), `causal`, `momentum` (token
and depth momentum), `softmax` (composable blocks and the softmax transformer), `features`
(MLP features, then LSA or GD), `standard_tokens` (separate x and y tokens), and `registry`
(`ModelConfig`, `make_model`, `check_params`, `learned_scalars`). Every name is importable
from here.
"""

from icl_toy.core.models.causal import (
    CausalLSATransformer,
    causal_key_mask,
    causal_lsa_update,
    position_readout,
)
from icl_toy.core.models.features import (
    FeatureGD,
    FeatureLSA,
    MLPFeatures,
    feature_tokens,
    kernel_smoothing,
)
from icl_toy.core.models.lsa import (
    PARAM_NAMES,
    LayerRule,
    LSATransformer,
    attention_param_shapes,
    attention_products,
    iterate_layer,
    lsa_layer,
    lsa_query_output,
    lsa_stack,
    lsa_update,
    readout,
    residual_layers,
)
from icl_toy.core.models.momentum import DepthMomentumLSA, TokenMomentumLSA, momentum_decay
from icl_toy.core.models.registry import (
    MODEL_KINDS,
    MOMENTUM_SCALARS,
    ModelConfig,
    ModelKind,
    check_params,
    learned_scalars,
    make_model,
    momentum_lsa_config,
    momentum_scalar,
)
from icl_toy.core.models.softmax import (
    EmbeddedTransformer,
    LinearSelfAttention,
    MLPBlock,
    PreNorm,
    SoftmaxSelfAttention,
    Transformer,
    softmax_transformer,
)
from icl_toy.core.models.standard_tokens import (
    SoftmaxAttentionParams,
    StandardTokenTransformer,
    alternating_tokens,
    batch_attention,
    copy_score,
    softmax_attention_weights,
    softmax_layer,
)

__all__ = [
    "MODEL_KINDS",
    "MOMENTUM_SCALARS",
    "PARAM_NAMES",
    "CausalLSATransformer",
    "DepthMomentumLSA",
    "EmbeddedTransformer",
    "FeatureGD",
    "FeatureLSA",
    "LSATransformer",
    "LayerRule",
    "LinearSelfAttention",
    "MLPBlock",
    "MLPFeatures",
    "ModelConfig",
    "ModelKind",
    "PreNorm",
    "SoftmaxAttentionParams",
    "SoftmaxSelfAttention",
    "StandardTokenTransformer",
    "TokenMomentumLSA",
    "Transformer",
    "alternating_tokens",
    "attention_param_shapes",
    "attention_products",
    "batch_attention",
    "causal_key_mask",
    "causal_lsa_update",
    "check_params",
    "copy_score",
    "feature_tokens",
    "iterate_layer",
    "kernel_smoothing",
    "learned_scalars",
    "lsa_layer",
    "lsa_query_output",
    "lsa_stack",
    "lsa_update",
    "make_model",
    "momentum_decay",
    "momentum_lsa_config",
    "momentum_scalar",
    "position_readout",
    "readout",
    "residual_layers",
    "softmax_attention_weights",
    "softmax_layer",
    "softmax_transformer",
]
