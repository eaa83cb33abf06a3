"""Assertions shared by several test files."""

import math
from typing import Any


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


def assert_config_matches(saved: Any, current: Any, rtol: float = 1e-9) -> None:
    """Assert two JSON configs are equal: floats to `rtol` (relative), all else exactly.

    A committed config's derived floats (a covariance built by an eigendecomposition) may
    differ from a fresh install's in the last digit; any other difference is a changed config.
    The message names each differing field by its path, with both values.
    """
    differences = list(_config_differences(saved, current, rtol, "config"))
    assert not differences, "saved config differs from the current one:\n" + "\n".join(differences)
