"""Assertions and stand-ins shared by several test files."""

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import matplotlib.pyplot as plt
import pytest

from icl_toy.runs.plotting import save_figures
from icl_toy.runs.results import to_jsonable


def one_panel_plot(module):
    """A stand-in for `module.plot` that writes NAME and NAME_supplement (.png, .pdf) as one
    empty panel each. For tests of how runs are started, resumed, skipped and saved: a
    study's figures take seconds to draw, and are tested on their own (its end-to-end test,
    `tests/test_figures.py`)."""

    def draw(results):
        names = (module.NAME, f"{module.NAME}_supplement")
        return {name: plt.figure(figsize=(2, 1.5)) for name in names}

    def plot(results, out_dir):
        return save_figures(draw, results, out_dir=out_dir)

    return plot


@contextlib.contextmanager
def one_panel_figures(module) -> Iterator[None]:
    """`module.plot` is `one_panel_plot(module)` inside."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "plot", one_panel_plot(module))
        yield


def _config_differences(saved: Any, current: Any, rtol: float, path: str):
    """Yield 'path: saved ..., current ...' for every field where the two JSON trees differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            if key not in current:
                yield f"{path}.{key}: saved {saved[key]!r}, missing from the current config"
            elif key not in saved:
                yield f"{path}.{key}: missing from the saved config, current {current[key]!r}"
            else:
                yield from _config_differences(saved[key], current[key], rtol, f"{path}.{key}")
    elif isinstance(saved, list) and isinstance(current, list):
        if len(saved) != len(current):
            yield f"{path}: saved has {len(saved)} entries, current has {len(current)}"
            return
        for i, (s, c) in enumerate(zip(saved, current, strict=True)):
            yield from _config_differences(s, c, rtol, f"{path}[{i}]")
    elif _is_real(saved) and _is_real(current) and float in (type(saved), type(current)):
        if not math.isclose(saved, current, rel_tol=rtol, abs_tol=0.0):
            yield f"{path}: saved {saved!r}, current {current!r}"
    elif type(saved) is not type(current) or saved != current:
        yield f"{path}: saved {saved!r}, current {current!r}"


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _class_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise AssertionError(f"{field.name} has no default: a saved config cannot lack it")


def _with_added_fields(saved: Any, config: Any) -> Any:
    """`saved` (JSON) with every field of the config object `config` that it lacks set to
    that field's class default (not `config`'s value): a field added to a config class
    after a run was saved reads as its default, which is the behaviour before it existed."""
    if dataclasses.is_dataclass(config) and isinstance(saved, dict):
        filled = dict(saved)
        for field in dataclasses.fields(config):
            if field.name in saved:
                value = getattr(config, field.name)
                filled[field.name] = _with_added_fields(saved[field.name], value)
            else:
                filled[field.name] = to_jsonable(_class_default(field))
        return filled
    if isinstance(saved, list) and isinstance(config, list | tuple) and len(saved) == len(config):
        return [_with_added_fields(s, c) for s, c in zip(saved, config, strict=True)]
    return saved


def assert_config_matches(saved: Any, current: Any, rtol: float = 1e-9) -> None:
    """Assert two configs are equal: floats to `rtol` (relative), all else exactly.

    `saved` is JSON; `current` is JSON or the config object itself. A committed config's
    derived floats (a covariance built by an eigendecomposition) may differ from a fresh
    install's in the last digit; any other difference is a changed config. Given the object,
    a field the saved config lacks counts as that field's class default (`_with_added_fields`):
    it matches only where today's config leaves the new field at its default. The message
    names each differing field by its path, with both values.
    """
    if dataclasses.is_dataclass(current):
        saved, current = _with_added_fields(saved, current), to_jsonable(current)
    differences = list(_config_differences(saved, current, rtol, "config"))
    assert not differences, "saved config differs from the current one:\n" + "\n".join(differences)
