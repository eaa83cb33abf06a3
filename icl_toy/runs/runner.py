"""Running an experiment module into a results directory.

Layout of a run in `out_dir`, for experiment NAME:
  NAME.config.json  the resolved config, icl-toy version, git commit, JAX version, device
  NAME.json/.npz    the results (the JSON is written last and marks them complete)
  NAME.png/.pdf     the figure, drawn from the saved results
  NAME.log          one line per event, appended
  checkpoints/NAME/ orbax checkpoints of the training state, for --resume
Every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import time
from pathlib import Path
from types import ModuleType

import jax

from icl_toy.runs.results import (
    Results,
    atomic_write_bytes,
    git_commit,
    load_results,
    save_results,
    to_jsonable,
)
from icl_toy.training.train import RunOptions

# Experiment modules under `experiments/`, in the order `icl-toy reproduce` runs them.
EXPERIMENTS = (
    "single_layer_gd",
    "multi_layer_gdpp",
    "momentum_attention",
    "icl_vs_finetuning",
    "forward_only",
    "preconditioned_gd",
    "covariate_shift",
    "learning_curves",
    "nonlinear_regression",
    "standard_tokens",
    "which_algorithm",
)


def get_experiment(name: str) -> ModuleType:
    """The experiment module called `name`; unknown names raise a ValueError listing the known."""
    if name not in EXPERIMENTS:
        raise ValueError(
            f"unknown experiment {name!r}; known experiments: {', '.join(EXPERIMENTS)}"
        )
    return importlib.import_module(f"icl_toy.experiments.{name}")


def version() -> str:
    try:
        return importlib.metadata.version("icl-toy")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _log(out_dir: Path, name: str, message: str) -> None:
    # Appends are not atomic, but a log line lost in a crash loses no result.
    with open(out_dir / f"{name}.log", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def run_metadata(name: str, config) -> dict:
    return {
        "experiment": name,
        "config": to_jsonable(config),
        "icl_toy_version": version(),
        "git_commit": git_commit(),
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0]),
    }


def is_complete(out_dir: str | Path, name: str, config) -> bool:
    """Whether `out_dir` holds finished results and figure of this exact config."""
    out_dir = Path(out_dir)
    summary = out_dir / f"{name}.json"
    if not (summary.exists() and (out_dir / f"{name}.png").exists()):
        return False
    return json.loads(summary.read_text()).get("config") == to_jsonable(config)


def run_experiment(
    name: str, config, out_dir: str | Path, *, resume: bool = False, quiet: bool = False
) -> Results:
    """Run experiment `name` with `config` into `out_dir`, save its results and draw its figure.

    With `resume`, training continues from the latest checkpoint in `out_dir`, which must
    come from the same config.
    """
    module = get_experiment(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / f"{name}.config.json"
    metadata = run_metadata(name, config)
    if resume and config_path.exists():
        saved = json.loads(config_path.read_text())["config"]
        if saved != metadata["config"]:
            raise ValueError(
                f"cannot resume: {config_path} holds a different config; rerun without "
                "--resume, or pass the same --quick/--set/--seeds as the interrupted run"
            )
    atomic_write_bytes(config_path, (json.dumps(metadata, indent=2) + "\n").encode())
    _log(out_dir, name, f"start (resume={resume}) commit={metadata['git_commit']}")
    options = RunOptions(
        checkpoint_dir=str((out_dir / "checkpoints" / name).absolute()),
        resume=resume,
        progress=not quiet,
    )
    start = time.time()
    try:
        results = module.run(config, options=options)
    except BaseException as error:
        _log(out_dir, name, f"failed: {type(error).__name__}: {error}")
        raise
    save_results(out_dir, name, results)
    module.plot(load_results(out_dir, name), out_dir)
    _log(out_dir, name, f"done in {time.time() - start:.1f} s")
    return results
