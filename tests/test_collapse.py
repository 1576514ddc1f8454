"""The linear-time device_map collapse against accelerate's own ``clean_device_map`` (the oracle)."""

from __future__ import annotations

from accelerate.utils.modeling import clean_device_map
from hypothesis import given, settings
from hypothesis import strategies as st
from layerplan.planner.output.collapse import collapse, first_positions

_parts = st.sampled_from(["model", "layers", "0", "1", "10", "mlp", "attn", "lm_head", "norm", "1.0"])


@st.composite
def module_names(draw: st.DrawFn) -> list[str]:
    """Distinct dotted names, nested as a model's are (some prefixes of others), sometimes ``""``."""
    names = draw(st.lists(st.lists(_parts, min_size=1, max_size=4).map(".".join), min_size=1, max_size=12,
                          unique=True))
    if draw(st.booleans()):
        names.insert(draw(st.integers(0, len(names))), "")
    return names


@st.composite
def device_maps(draw: st.DrawFn) -> dict[str, int | str]:
    names = draw(module_names())
    devices = st.sampled_from([0, 1, "cpu", "disk"])
    return {name: draw(devices) for name in names}


@settings(max_examples=400, deadline=None)
@given(device_maps())
def test_collapse_equals_accelerates_clean_device_map(device_map) -> None:
    given_map = dict(device_map)
    assert collapse(device_map) == clean_device_map(dict(device_map))
    assert device_map == given_map  # not changed


def test_collapse_merges_a_uniform_subtree_and_keeps_mixed_ones() -> None:
    device_map = {"model.embed": 0, "model.layers.0": 0, "model.layers.1": 1, "model.layers.2": 1, "lm_head": 1}
    assert collapse(device_map) == {"model.embed": 0, "model.layers.0": 0, "model.layers.1": 1,
                                    "model.layers.2": 1, "lm_head": 1}
    assert collapse({"model.layers.0": "cpu", "model.layers.1": "cpu", "lm_head": 0}) == {"model": "cpu", "lm_head": 0}
    assert collapse({"a": 0, "b": 0}) == {"": 0}


@settings(max_examples=200, deadline=None)
@given(module_names())
def test_first_positions_are_the_first_name_at_or_under_each_key(names) -> None:
    first = first_positions(names)
    for key, position in first.items():
        under = [i for i, name in enumerate(names) if key == "" or name == key or name.startswith(key + ".")]
        assert position == min(under)
