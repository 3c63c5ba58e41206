"""``configurable`` on functions (``@configurable(from_config=...)``) as on constructors."""

from __future__ import annotations

import pytest

from uper_parsing.config import CfgNode, configurable, get_cfg


def _scaled_from_config(cfg: CfgNode, factor: int = 2) -> dict:
    return {"value": cfg.SOLVER.IMS_PER_BATCH, "factor": factor}


@configurable(from_config=_scaled_from_config)
def scaled(value: int, *, factor: int = 1, offset: int = 0) -> int:
    """value * factor + offset."""
    return value * factor + offset


def test_function_called_with_a_config():
    cfg = get_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 5
    assert scaled(cfg) == 10  # from_config's default factor 2
    assert scaled(cfg, 3) == 15  # positional arguments after cfg go to from_config
    assert scaled(cfg=cfg, factor=4) == 20
    assert scaled(cfg, offset=1) == 11  # not a from_config argument: straight to the function


def test_function_called_without_a_config():
    assert scaled(5) == 5
    assert scaled(value=5, factor=3, offset=1) == 16


def test_function_keeps_its_name_doc_and_from_config():
    assert scaled.__name__ == "scaled" and scaled.__doc__ == "value * factor + offset."
    assert scaled.from_config is _scaled_from_config


def test_from_config_must_take_cfg_first():
    def wrong(config):
        return {}

    @configurable(from_config=wrong)
    def func(x=0):
        return x

    with pytest.raises(TypeError, match="wrong must take 'cfg' as its first argument"):
        func(get_cfg())


def test_misuse_is_refused():
    with pytest.raises(TypeError, match="decorates __init__ only"):

        @configurable
        def not_init(x):
            return x

    with pytest.raises(TypeError, match="needs a function taking cfg first"):
        configurable(from_config="not a function")
