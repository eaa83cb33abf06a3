import dataclasses
import json
from typing import Literal

import pytest
from icl_toy.experiments.single_layer_gd import get_config

from icl_toy.core.models import ModelConfig
from icl_toy.core.tasks import TaskConfig
from icl_toy.runs.config import (
    apply_overrides,
    config_paths,
    config_to_dict,
    parse_value,
    require_at_least,
    require_distinct_depths,
    require_positive,
)
from icl_toy.training.train import TrainConfig


@pytest.fixture
def cfg():
    return get_config(quick=True)


@dataclasses.dataclass(frozen=True)
class _Inner:
    name: str = "a"
    pair: tuple[int, float] = (1, 2.0)


@dataclasses.dataclass(frozen=True)
class _Outer:
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    scale: float | None = None
    hidden: int = dataclasses.field(default=0, init=False)


def test_paths_list_every_leaf_with_its_value(cfg):
    paths = config_paths(cfg)
    assert paths["train.learning_rate"] == cfg.train.learning_rate
    assert paths["task.input_low"] == -0.5
    assert paths["model.key_size"] is None
    assert paths["ood_scales"] == (0.5, 1.0, 1.5, 2.0)
    assert paths["eval_seed"] == cfg.eval_seed
    # Nested configs are recursed into, never listed as leaves themselves.
    assert not {"task", "model", "train"} & set(paths)
    n_leaves = sum(len(dataclasses.fields(c)) for c in (TaskConfig, ModelConfig, TrainConfig))
    assert len(paths) == n_leaves + len(dataclasses.fields(cfg)) - 3


def test_paths_skip_fields_that_replace_cannot_set():
    assert set(config_paths(_Outer())) == {"inner.name", "inner.pair", "scale"}


@pytest.mark.parametrize(
    ("text", "annotation", "expected"),
    [
        ("3", int, 3),
        ("-2", int, -2),
        ("1_000", int, 1000),
        (" 7 ", int, 7),
        ("3e-4", float, 3e-4),
        ("1", float, 1.0),
        ("true", bool, True),
        ("False", bool, False),
        ("YES", bool, True),
        ("no", bool, False),
        ("1", bool, True),
        ("0", bool, False),
        ("hello", str, "hello"),
        ("gaussian", Literal["uniform", "gaussian"], "gaussian"),
        ("none", int | None, None),
        ("None", int | None, None),
        ("null", float | None, None),
        ("4", int | None, 4),
        ("0.5,1.0,2", tuple[float, ...], (0.5, 1.0, 2.0)),
        ("0.5, 1", tuple[float, ...], (0.5, 1.0)),
        ("[0.5, 1]", tuple[float, ...], (0.5, 1.0)),
        ("3", tuple[int, ...], (3,)),
        ("", tuple[int, ...], ()),
        ("[[1,0],[0,1]]", tuple[tuple[float, ...], ...], ((1.0, 0.0), (0.0, 1.0))),
        ("[[2, 0.5]]", tuple[tuple[float, ...], ...] | None, ((2.0, 0.5),)),
        ("none", tuple[tuple[float, ...], ...] | None, None),
        ("4,2.5", tuple[int, float], (4, 2.5)),
    ],
)
def test_parse_value(text, annotation, expected):
    value = parse_value(text, annotation, "some.path")
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(expected, tuple):
        flat = [x for v in value for x in (v if isinstance(v, tuple) else (v,))]
        flat_expected = [x for v in expected for x in (v if isinstance(v, tuple) else (v,))]
        assert [type(x) for x in flat] == [type(x) for x in flat_expected]


@pytest.mark.parametrize(
    ("text", "annotation", "expected_type"),
    [
        ("1.5", int, "an int"),
        ("1e3", int, "an int"),
        ("", int, "an int"),
        ("fast", float, "a float"),
        ("maybe", bool, "a bool"),
        ("2", bool, "a bool"),
        ("x", int | None, "an int or none"),
        ("laplace", Literal["uniform", "gaussian"], "one of 'uniform', 'gaussian'"),
        ("[[1,", tuple[tuple[float, ...], ...], "tuple[tuple[float, ...], ...]"),
        ("1,0", tuple[tuple[float, ...], ...], "tuple[tuple[float, ...], ...]"),
        ("1,2,3", tuple[int, float], "tuple[int, float]"),
    ],
)
def test_parse_value_errors_name_path_type_and_text(text, annotation, expected_type):
    with pytest.raises(ValueError) as info:
        parse_value(text, annotation, "a.b")
    message = str(info.value)
    assert message.startswith("a.b expects ")
    assert expected_type in message
    assert repr(text) in message


_MATRIX = tuple[tuple[float, ...], ...] | None


@pytest.mark.parametrize(
    ("text", "annotation", "where", "expected_type"),
    [
        ("0.5,x", tuple[float, ...], "p[1]", "a float"),
        ("[[1, 0], [0, true]]", _MATRIX, "p[1][1]", "a float"),
        ('[[1, 0], [0, "a"]]', _MATRIX, "p[1][1]", "a float"),
        ("[[1, 0], 2]", _MATRIX, "p[1]", "list"),
        ("[[1.5], [2]]", tuple[tuple[int, ...], ...], "p[0][0]", "an int"),
        ("[[1], 2]", tuple[float, ...], "p[0]", "a float"),
    ],
)
def test_tuple_element_errors_name_the_element(text, annotation, where, expected_type):
    with pytest.raises(ValueError) as info:
        parse_value(text, annotation, "p")
    assert str(info.value).startswith(where + " expects ")
    assert expected_type in str(info.value)


def test_json_bools_are_not_floats():
    with pytest.raises(ValueError, match="expects a float"):
        parse_value("[true, 1]", tuple[float, ...], "p")


def test_apply_overrides_sets_leaves_at_every_depth(cfg):
    new = apply_overrides(
        cfg,
        [
            "train.learning_rate=3e-4",
            "train.steps = 1_200",
            "model.key_size=none",
            "model.shared_weights=yes",
            "task.noise_std=0.1",
            "ood_scales=0.5,1,3",
            "eval_seed=7",
        ],
    )
    assert new.train.learning_rate == 3e-4 and isinstance(new.train.learning_rate, float)
    assert new.train.steps == 1200 and isinstance(new.train.steps, int)
    assert new.model.key_size is None
    assert new.model.shared_weights is True
    assert new.task.noise_std == 0.1
    assert new.ood_scales == (0.5, 1.0, 3.0)
    assert new.eval_seed == 7
    # Everything not overridden is unchanged, and the types are still the config's own.
    assert type(new) is type(cfg) and type(new.train) is TrainConfig
    assert new.train.batch_size == cfg.train.batch_size
    assert new.task.input_low == cfg.task.input_low


def test_key_size_none_after_an_int(cfg):
    with_int = apply_overrides(cfg, ["model.key_size=4"])
    assert with_int.model.key_size == 4
    assert apply_overrides(with_int, ["model.key_size=none"]).model.key_size is None


def test_overriding_does_not_mutate_the_original(cfg):
    before = config_to_dict(cfg)
    new = apply_overrides(cfg, ["train.learning_rate=0.5", "task.d=3", "ood_scales=1"])
    assert config_to_dict(cfg) == before
    assert cfg.train.learning_rate != 0.5 and new.train.learning_rate == 0.5
    assert new.train is not cfg.train and new.task is not cfg.task
    # Untouched nested configs are the same values.
    assert new.model == cfg.model


def test_no_overrides_gives_an_equal_config(cfg):
    assert apply_overrides(cfg, []) == cfg


def test_later_overrides_of_the_same_key_win(cfg):
    new = apply_overrides(cfg, ["train.seed=1", "train.seed=2"])
    assert new.train.seed == 2


def test_overrides_are_validated_together(cfg):
    # Moving the interval past its old upper end is only valid once both ends are set.
    new = apply_overrides(cfg, ["task.input_low=1", "task.input_high=2"])
    assert (new.task.input_low, new.task.input_high) == (1.0, 2.0)


def test_nested_tuple_override_reaches_the_task(cfg):
    new = apply_overrides(
        cfg, ["task.d=2", "task.inputs=gaussian", "task.input_cov=[[2, 0.5], [0.5, 1]]"]
    )
    assert new.task.input_cov == ((2.0, 0.5), (0.5, 1.0))
    assert all(isinstance(x, float) for row in new.task.input_cov for x in row)
    hash(new)  # still hashable: a static argument of jitted functions


def test_unknown_key_lists_every_valid_key_sorted(cfg):
    with pytest.raises(ValueError, match=r"trian\.learning_rate") as info:
        apply_overrides(cfg, ["trian.learning_rate=1e-3"])
    message = str(info.value)
    listed = message.split("valid keys: ", 1)[1].split(", ")
    assert listed == sorted(config_paths(cfg))
    assert "train.learning_rate" in listed and "ood_scales" in listed


def test_path_through_a_leaf_is_unknown(cfg):
    with pytest.raises(ValueError, match=r"unknown config key 'eval_seed\.x'"):
        apply_overrides(cfg, ["eval_seed.x=1"])


def test_setting_a_nested_config_names_its_leaves(cfg):
    with pytest.raises(ValueError, match="train is a nested config") as info:
        apply_overrides(cfg, ["train=3"])
    for name in ("train.learning_rate", "train.steps", "train.seed"):
        assert name in str(info.value)
    assert "task.d" not in str(info.value)


def test_wrong_type_names_field_and_expected_type(cfg):
    with pytest.raises(ValueError, match=r"^train\.learning_rate expects a float, got 'fast'$"):
        apply_overrides(cfg, ["train.learning_rate=fast"])
    with pytest.raises(ValueError, match=r"^train\.steps expects an int, got '1\.5'$"):
        apply_overrides(cfg, ["train.steps=1.5"])
    with pytest.raises(ValueError, match=r"^model\.shared_weights expects a bool"):
        apply_overrides(cfg, ["model.shared_weights=maybe"])


def test_literal_error_lists_the_allowed_values(cfg):
    with pytest.raises(ValueError, match=r"^task\.inputs expects one of") as info:
        apply_overrides(cfg, ["task.inputs=laplace"])
    assert "'uniform'" in str(info.value) and "'gaussian'" in str(info.value)
    assert "'laplace'" in str(info.value)


def test_post_init_validation_propagates(cfg):
    with pytest.raises(ValueError, match="learning_rate"):
        apply_overrides(cfg, ["train.learning_rate=-1"])
    with pytest.raises(ValueError, match="input_cov"):
        apply_overrides(cfg, ["task.inputs=gaussian", "task.input_cov=[[1, 0], [0, 1]]"])
    # The top-level Config validates its own cross-field rule too.
    with pytest.raises(ValueError, match="num_layers=2"):
        apply_overrides(cfg, ["model.num_layers=2"])


@pytest.mark.parametrize("item", ["train.learning_rate", "", "=3", "  = 3"])
def test_missing_key_or_equals_sign_explains_the_form(cfg, item):
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(cfg, [item])


def test_value_may_contain_equals_signs():
    new = apply_overrides(_Outer(), ["inner.name=a=b"])
    assert new.inner.name == "a=b"


def test_fixed_length_tuple_and_optional_float_on_plain_annotations():
    new = apply_overrides(_Outer(), ["inner.pair=3, 0.25", "scale=2"])
    assert new.inner.pair == (3, 0.25) and new.scale == 2.0
    assert apply_overrides(new, ["scale=null"]).scale is None
    with pytest.raises(ValueError, match="2 elements"):
        apply_overrides(_Outer(), ["inner.pair=1,2,3"])


def test_config_to_dict_is_plain_json(cfg):
    new = apply_overrides(
        cfg, ["task.d=2", "task.inputs=gaussian", "task.input_cov=[[1, 0], [0, 1]]"]
    )
    d = config_to_dict(new)
    assert d["train"]["learning_rate"] == cfg.train.learning_rate
    assert d["ood_scales"] == [0.5, 1.0, 1.5, 2.0]
    assert d["task"]["input_cov"] == [[1.0, 0.0], [0.0, 1.0]]
    assert d["model"]["key_size"] is None
    assert json.loads(json.dumps(d)) == d


def test_non_dataclass_is_rejected():
    with pytest.raises(TypeError):
        config_paths({"a": 1})
    with pytest.raises(TypeError):
        config_to_dict(3)


@dataclasses.dataclass(frozen=True)
class _Sizes:
    depths: tuple[int, ...] = (1, 2)
    eval_tasks: int = 2
    learning_rate: float = 0.1


def test_shared_config_checks_name_the_fields_they_reject():
    ok = _Sizes()
    require_distinct_depths("depths", ok.depths)
    require_at_least(ok, ("eval_tasks",), 2)
    require_positive(ok, ("learning_rate",))
    for depths in ((), (0, 1), (2, 2)):
        with pytest.raises(ValueError, match="depths must be distinct integers >= 1"):
            require_distinct_depths("depths", depths)
    with pytest.raises(ValueError, match="eval_tasks must be >= 3"):
        require_at_least(ok, ("eval_tasks",), 3)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        require_positive(_Sizes(learning_rate=0.0), ("learning_rate",))
