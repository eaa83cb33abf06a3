"""A depth sweep: one softmax transformer per depth, each trained on the same task.

Akyürek et al. (arXiv 2211.15661, THEORY §3) find that the algorithm a trained transformer
is closest to depends on its depth; `train_depths` trains the models of such a comparison.
"""

from __future__ import annotations

import dataclasses

from icl_toy.core.models import EmbeddedTransformer, softmax_transformer
from icl_toy.core.tasks import TaskConfig
from icl_toy.training.train import RunOptions, TrainConfig, TrainResult, train


@dataclasses.dataclass(frozen=True)
class SoftmaxModelConfig:
    """Sizes of `models.softmax_transformer` (the depth is swept separately)."""

    embed_dim: int = 32  # W, width of the residual stream
    num_heads: int = 2
    mlp_hidden: int = 64

    def __post_init__(self):
        for name, value in dataclasses.asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SoftmaxModelConfig.{name} must be an integer >= 1, got {value}")


def train_depths(
    task: TaskConfig,
    depths: tuple[int, ...],
    sizes: SoftmaxModelConfig,
    train_cfg: TrainConfig,
    options: RunOptions | None = None,
) -> dict[int, tuple[EmbeddedTransformer, TrainResult]]:
    """Train S seeds of `softmax_transformer` at each depth on `task`: {depth: (model, result)}.

    Each depth is one `icl_toy.training.train.train` call with the same seeds (checkpoints
    under `depth{D}` of `options.checkpoint_dir`); `result.params` has a leading seed axis S.
    """
    options = options or RunOptions()
    trained = {}
    for depth in depths:
        model = softmax_transformer(
            task.d_y,
            depth,
            sizes.num_heads,
            sizes.mlp_hidden,
            embed_dim=sizes.embed_dim,
        )
        trained[depth] = (
            model,
            train(model, task, train_cfg, options=options.stage(f"depth{depth}")),
        )
    return trained
