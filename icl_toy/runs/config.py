"""Dotted-path overrides of nested frozen dataclass configs, for a CLI flag `--set key=value`.

    apply_overrides(cfg, ["train.learning_rate=3e-4", "model.key_size=none"])

Every leaf field of a config has a dotted path ("train.learning_rate", "ood_scales"); the text
after "=" is converted to the field's annotated type (int, float, bool, str, Literal, `X | None`,
tuples), and the new config is built with `dataclasses.replace` at every level, so each
dataclass's own `__post_init__` validation runs on the result.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal

from icl_toy.runs.results import to_jsonable

_NONE_TEXTS = frozenset({"none", "None", "null"})
_TRUE_TEXTS = frozenset({"true", "1", "yes"})
_FALSE_TEXTS = frozenset({"false", "0", "no"})


def _is_config(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _leaves(cfg: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted path -> (current value, type annotation) of every leaf field of `cfg`."""
    if not _is_config(cfg):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    hints = typing.get_type_hints(type(cfg))
    out = {}
    for field in dataclasses.fields(cfg):
        if not field.init:  # dataclasses.replace cannot set these
            continue
        path = prefix + field.name
        value = getattr(cfg, field.name)
        if _is_config(value):
            out.update(_leaves(value, path + "."))
        else:
            out[path] = (value, hints[field.name])
    return out


def config_paths(cfg: Any) -> dict[str, object]:
    """Every leaf field of `cfg` by dotted path (e.g. "train.learning_rate") -> its value."""
    return {path: value for path, (value, _) in _leaves(cfg).items()}


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """`cfg` as a nested plain dict of JSON types (tuples become lists)."""
    if not _is_config(cfg):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return to_jsonable(cfg)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _type_name(annotation: Any) -> str:
    """A short readable spelling of a type annotation, e.g. "tuple[float, ...] | None"."""
    if annotation is type(None):
        return "None"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _is_union(annotation):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{_type_name(args[0])}, ...]"
        return f"tuple[{', '.join(_type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", repr(annotation))


def _describe(annotation: Any) -> str:
    """The expected type as it reads in an error message: "a float", "one of 'a', 'b'"."""
    if annotation is bool:
        return "a bool (true/false, yes/no, 1/0)"
    if annotation is int:
        return "an int"
    if annotation is float:
        return "a float"
    if annotation is str:
        return "a str"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_union(annotation):
        options = [_describe(a) for a in args if a is not type(None)]
        if type(None) in args:
            options.append("none")
        return " or ".join(options)
    if origin is tuple:
        nested = any(typing.get_origin(a) is tuple for a in args)
        form = "JSON, e.g. [[1, 0], [0, 1]]" if nested else "comma-separated, e.g. 0.5,1,2"
        return f"a {_type_name(annotation)} ({form})"
    return f"a {_type_name(annotation)}"


class _Mismatch(ValueError):
    """The text at `path` does not fit the expected type."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


def _error(path: str, annotation: Any, text: str) -> _Mismatch:
    return _Mismatch(path, f"{path} expects {_describe(annotation)}, got {text!r}")


def parse_value(text: str, annotation: Any, path: str) -> Any:
    """Convert the command-line `text` for the field at `path` to its type `annotation`."""
    text = text.strip()
    if _is_union(annotation):
        args = typing.get_args(annotation)
        if type(None) in args and text in _NONE_TEXTS:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return parse_value(text, option, path)
            except _Mismatch as e:
                if len(options) == 1 and e.path != path:
                    raise  # a bad tuple element: its own message is the more precise one
        raise _error(path, annotation, text)
    if annotation is bool:
        if text.lower() in _TRUE_TEXTS:
            return True
        if text.lower() in _FALSE_TEXTS:
            return False
        raise _error(path, annotation, text)
    if annotation is int:
        try:
            return int(text)  # integer literals only: "1_000" is fine, "1.5" and "1e3" are not
        except ValueError:
            raise _error(path, annotation, text) from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise _error(path, annotation, text) from None
    if annotation is str:
        return text
    origin = typing.get_origin(annotation)
    if origin is Literal:
        for allowed in typing.get_args(annotation):
            if str(allowed) == text:
                return allowed
        raise _error(path, annotation, text)
    if origin is tuple:
        return _parse_tuple(text, annotation, path)
    raise _Mismatch(
        path, f"{path} has type {_type_name(annotation)}, which cannot be set from text"
    )


def _parse_tuple(text: str, annotation: Any, path: str) -> tuple:
    """A tuple from "a,b,c" (scalar elements) or JSON "[[1, 0], [0, 1]]" (any elements)."""
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            raise _error(path, annotation, text) from None
        return _tuple_from_json(items, annotation, path, text)
    args = typing.get_args(annotation)
    if any(typing.get_origin(a) is tuple for a in args):
        # "1,0" for a tuple of tuples is ambiguous; ask for the bracketed form.
        raise _error(path, annotation, text)
    items = [] if text == "" else [item.strip() for item in text.split(",")]
    return _convert_items(items, annotation, path, text)


def _tuple_from_json(items: Any, annotation: Any, path: str, text: str) -> tuple:
    if not isinstance(items, list):
        raise _error(path, annotation, text)
    # Scalars go back to text so that they follow the same rules as on the command line.
    texts = [item if isinstance(item, str | list) else json.dumps(item) for item in items]
    return _convert_items(texts, annotation, path, text)


def _convert_items(items: list, annotation: Any, path: str, text: str) -> tuple:
    args = typing.get_args(annotation)
    if len(args) == 2 and args[1] is Ellipsis:
        element_types = [args[0]] * len(items)
    elif len(args) == len(items):
        element_types = list(args)
    else:
        raise _Mismatch(
            path,
            f"{path} expects {_describe(annotation)} with {len(args)} elements, "
            f"got {len(items)} in {text!r}",
        )
    out = []
    for i, (item, element_type) in enumerate(zip(items, element_types, strict=True)):
        item_path = f"{path}[{i}]"
        nested = typing.get_origin(element_type) is tuple
        if nested and not isinstance(item, list):
            raise _Mismatch(
                item_path,
                f"{item_path} expects a [...] list for a {_type_name(element_type)}, got {item!r}",
            )
        if isinstance(item, list) and not nested:
            raise _error(item_path, element_type, json.dumps(item))
        if nested:
            out.append(_tuple_from_json(item, element_type, item_path, json.dumps(item)))
        else:
            out.append(parse_value(item, element_type, item_path))
    return tuple(out)


def _split_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(
            f"override {item!r} must have the form key=value, e.g. train.learning_rate=3e-4"
        )
    return key, value.strip()


def _replace(cfg: Any, updates: dict[str, Any]) -> Any:
    """A copy of `cfg` with dotted-path `updates`, via `dataclasses.replace` at every level."""
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in updates.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for name, sub_updates in nested.items():
        direct[name] = _replace(getattr(cfg, name), sub_updates)
    return dataclasses.replace(cfg, **direct)


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """A new config with each "dotted.path=value" of `overrides` applied; later ones win."""
    leaves = _leaves(cfg)
    updates: dict[str, Any] = {}
    for item in overrides:
        key, text = _split_override(item)
        if key not in leaves:
            under = sorted(path for path in leaves if path.startswith(key + "."))
            if under:
                raise ValueError(
                    f"{key} is a nested config, not a value; set one of its fields instead: "
                    + ", ".join(under)
                )
            raise ValueError(
                f"unknown config key {key!r}; valid keys: " + ", ".join(sorted(leaves))
            )
        updates[key] = parse_value(text, leaves[key][1], key)
    # All at once, so that a pair like input_low/input_high is validated only in its final state.
    return _replace(cfg, updates)


# --- Checks that study configs share (from their __post_init__) ----------------------------


def require_distinct_depths(name: str, depths: tuple[int, ...]) -> None:
    """Raise unless the field `name`, `depths`, is non-empty distinct integers >= 1."""
    if not depths or min(depths) < 1 or len(set(depths)) != len(depths):
        raise ValueError(f"{name} must be distinct integers >= 1, got {depths}")


def require_at_least(cfg: Any, names: tuple[str, ...], minimum: float) -> None:
    """Raise unless every field `names` of `cfg` is >= `minimum`."""
    if min(getattr(cfg, name) for name in names) < minimum:
        raise ValueError(f"{', '.join(names)} must be >= {minimum}: {cfg}")


def require_positive(cfg: Any, names: tuple[str, ...]) -> None:
    """Raise unless every field `names` of `cfg` is > 0."""
    if min(getattr(cfg, name) for name in names) <= 0:
        raise ValueError(f"{', '.join(names)} must be > 0: {cfg}")
