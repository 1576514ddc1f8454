"""A user's device_map read onto the layer graph: coverage, keys inside nodes, errors, JSON files.

Pure cases use a hand-built LayerGraph; the accelerate cases trace the tiny Llama of conftest and
check against an oracle written independently of planner.mapping: the device accelerate's dispatch
gives each parameter and buffer of a node (the longest key equal to its name or a dotted prefix of it).
"""

from __future__ import annotations

import copy
import json
import logging
from types import MappingProxyType

import pytest
import torch
from accelerate import infer_auto_device_map
from accelerate.utils import check_device_map, compute_module_sizes
from layerplan import planner
from layerplan.planner.api import evaluate_map
from layerplan.planner.baselines.accelerate import accelerate_device_map
from layerplan.planner.baselines.compare import compare_strategy
from layerplan.planner.graph import GraphNode, LayerGraph
from layerplan.planner.output.mapping import is_full, load_device_map, node_devices, uncovered
from layerplan.planner.spec import PlanSpec
from layerplan.solver import InvalidSpecError
from transformers import GPT2Config, GPT2LMHeadModel

# -- a hand-built graph -----------------------------------------------------------------------------
TOY_NODES = ("model.embed", "model.layers.1", "model.layers.10", "model.norm", "head")


@pytest.fixture(scope="module")
def toy() -> LayerGraph:
    """"model.layers.1" and "model.layers.10": a key must be a *dotted* prefix to cover a node."""
    nodes = tuple(
        GraphNode(name=name, kind="block" if ".layers." in name else "leaf",
                  module_class="Block" if ".layers." in name else "Linear", weight_bytes=100, buffer_bytes=0)
        for name in TOY_NODES
    )
    return LayerGraph(model="toy", model_class="Toy", dtype="bfloat16",
                      workload={"batch_size": 1, "prompt_len": 4}, nodes=nodes, edges=())


@pytest.mark.parametrize("device", [0, "cpu", "disk", 3])
def test_empty_key_covers_everything(toy, device):
    assert node_devices(toy, {"": device}) == dict.fromkeys(TOY_NODES, device)
    assert is_full(toy, {"": device})
    assert uncovered(toy, {"": device}) == ()


@pytest.mark.parametrize(("value", "device"), [("0", 0), ("cuda:1", 1), ("CPU", "cpu"), (" disk ", "disk")])
def test_devices_are_normalised(toy, value, device):
    assert node_devices(toy, {"": value}) == dict.fromkeys(TOY_NODES, device)


def test_longest_dotted_prefix_wins(toy):
    device_map = {"": "cpu", "model": 0, "model.layers.1": 1, "head": "disk"}
    assert node_devices(toy, device_map) == {
        "model.embed": 0, "model.layers.1": 1, "model.layers.10": 0, "model.norm": 0, "head": "disk"}


def test_partial_map_covers_only_what_it_names(toy):
    assert node_devices(toy, {"model.layers.1": 2}) == {"model.layers.1": 2}  # not model.layers.10
    assert uncovered(toy, {"model.layers.1": 2}) == ("model.embed", "model.layers.10", "model.norm", "head")
    assert not is_full(toy, {"model.layers.1": 2})
    assert node_devices(toy, {"model.layers": 0}) == {"model.layers.1": 0, "model.layers.10": 0}
    assert node_devices(toy, {}) == {}


def test_keys_inside_a_node_that_agree_give_its_device(toy):
    assert node_devices(toy, {"model.layers.10.attn": 1, "model.layers.10.mlp.up": 1}) == {"model.layers.10": 1}
    assert node_devices(toy, {"": 0, "model.layers.10.mlp": 0})["model.layers.10"] == 0
    assert node_devices(toy, {"head.weight": "cpu"}) == {"head": "cpu"}


@pytest.mark.parametrize(
    "device_map",
    [
        {"model.layers.10.attn": 0, "model.layers.10.mlp": 1},
        {"": 0, "model.layers.10.mlp": 1},  # the node's other modules follow "" to GPU 0
        {"model.layers.10": "cpu", "model.layers.10.mlp.up": "cpu", "model.layers.10.mlp.down": 1},
    ],
)
def test_keys_that_split_a_node_are_an_error(toy, device_map):
    with pytest.raises(InvalidSpecError, match=r"splits node 'model.layers.10'.*keeps it whole as a no-split "
                                               r"block \(Block\).*one device") as info:
        node_devices(toy, device_map)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("model.layer.1", "'model.layers.1'"), ("haed", "'head'"), ("model.embeds", "'model.embed'"),
     ("model.layers.2", "'model.layers.1'"), ("decoder", "nodes are e.g. 'model.embed'")],
)
def test_unknown_key_is_an_error_with_suggestions(toy, key, suggestion):
    with pytest.raises(InvalidSpecError, match=rf"key '{key}' matches no module of toy") as info:
        node_devices(toy, {"": 0, key: 1})
    assert suggestion in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["gpu", -1, 1.0, True, None, [0]])
def test_value_that_is_not_a_device_is_an_error(toy, value):
    with pytest.raises(InvalidSpecError, match=r"device_map, key 'head'") as info:
        node_devices(toy, {"head": value})
    assert "\n" not in str(info.value)


def test_input_map_is_not_modified(toy):
    device_map = {"": "cuda:0", "model.layers.10.mlp": "0", "head": "cpu"}
    before = copy.deepcopy(device_map)
    node_devices(toy, device_map)
    uncovered(toy, device_map)
    assert device_map == before
    assert list(device_map) == list(before)
    assert node_devices(toy, MappingProxyType(device_map)) == node_devices(toy, before)  # any Mapping


# -- the traced tiny Llama and accelerate's own maps ------------------------------------------------
@pytest.fixture(scope="module")
def traced(tiny_llama_dir):
    return planner.trace(tiny_llama_dir, dtype="bfloat16", seq_len=16)


def _dispatch_device(tensor: str, device_map: dict) -> int | str:
    """Oracle: accelerate dispatch's device for one tensor (the longest covering key)."""
    keys = [k for k in device_map if k == "" or tensor == k or tensor.startswith(k + ".")]
    return device_map[max(keys, key=len)]


def _tensor_devices(graph: LayerGraph, meta, device_map: dict) -> dict[str, set]:
    """Node -> the devices dispatch gives its parameters and buffers (a tied one under each name)."""
    found: dict[str, set] = {node.name: set() for node in graph.nodes}
    for name, _ in [*meta.named_parameters(remove_duplicate=False), *meta.named_buffers(remove_duplicate=False)]:
        found[graph.node_of(name)].add(_dispatch_device(name, device_map))
    return found


def _accelerate_map(meta, *, no_split: list[str]) -> dict:
    sizes = compute_module_sizes(meta)
    layer, embed = sizes["model.layers.0"], sizes["model.embed_tokens"]
    # GPU 0 keeps room for the largest layer: embed + 1.5 layers left, so a split map cuts layer 1
    caps = {0: embed + layer + embed + layer // 2, 1: 2 * layer, "cpu": 10 * sizes[""]}
    log = logging.getLogger("accelerate.utils.modeling")
    level = log.level
    log.setLevel(logging.ERROR)  # "Device 0 is not available": the GPUs are declared, not present
    try:
        return dict(infer_auto_device_map(meta, max_memory=caps, no_split_module_classes=no_split))
    finally:
        log.setLevel(level)


def test_accelerates_map_gives_each_node_its_tensors_device(traced):
    graph, meta = traced
    device_map = _accelerate_map(meta, no_split=["LlamaDecoderLayer"])
    check_device_map(meta, device_map)
    expected = _tensor_devices(graph, meta, device_map)
    assert all(len(devices) == 1 for devices in expected.values())
    assert len({d for devices in expected.values() for d in devices}) == 3  # 0, 1 and cpu: not trivial
    assert node_devices(graph, device_map) == {node: devices.pop() for node, devices in expected.items()}
    assert is_full(graph, device_map)


def test_accelerates_map_that_splits_a_layer_is_refused(traced):
    graph, meta = traced
    device_map = _accelerate_map(meta, no_split=[])  # accelerate may now cut a decoder layer
    expected = _tensor_devices(graph, meta, device_map)
    split = [node for node, devices in expected.items() if len(devices) > 1]
    assert split  # the caps were chosen to cut one
    with pytest.raises(InvalidSpecError, match=rf"splits node '{split[0]}'.*LlamaDecoderLayer"):
        node_devices(graph, device_map)
    # Keeping each split node on its first device makes it placeable; the other keys inside nodes
    # (e.g. 'model.layers.1.self_attn') are then read as the node.
    merged = {k: v for k, v in device_map.items() if graph.node_of(k) not in split}
    merged |= {node: _dispatch_device(next(n for n, _ in meta.named_parameters() if graph.node_of(n) == node),
                                      device_map) for node in split}
    expected = _tensor_devices(graph, meta, merged)
    assert node_devices(graph, merged) == {node: devices.pop() for node, devices in expected.items()}


def test_partial_map_on_the_traced_graph(traced):
    graph, _ = traced
    assert node_devices(graph, {"lm_head": 1}) == {"lm_head": 1}
    assert uncovered(graph, {"lm_head": 1}) == tuple(n.name for n in graph.nodes if n.name != "lm_head")
    assert node_devices(graph, {"model.layers.2.mlp": 0, "model.layers.2.self_attn": 0}) == {"model.layers.2": 0}
    with pytest.raises(InvalidSpecError, match=r"'model.layers.3'.*no-split block \(LlamaDecoderLayer\)"):
        node_devices(graph, {"model.layers.3.mlp": 0, "model.layers.3.self_attn": 1})
    with pytest.raises(InvalidSpecError, match=r"'model.layer.3'.*did you mean 'model.layers.3'"):
        node_devices(graph, {"model.layer.3": 0})


# -- modules without weights: GPT-2's transformer.drop -----------------------------------------------
@pytest.fixture(scope="module")
def tiny_gpt2():
    """A 4-layer GPT-2 built on meta from its config. ``transformer.drop`` (the Dropout after the
    embeddings) holds no tensor, so it is no node; accelerate's maps name it all the same."""
    config = GPT2Config(vocab_size=256, n_embd=64, n_layer=4, n_head=4, n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    model.tie_weights()
    return planner.trace(model.eval(), dtype="bfloat16", seq_len=16)


def _gpt2_caps(graph: LayerGraph) -> dict[int | str, int]:
    """Three GPUs of half the weights each: accelerate spreads the model over them."""
    half = graph.total_bytes // 2
    return {0: half, 1: half, 2: half, "cpu": 10 * graph.total_bytes}


def test_modules_without_weights_are_listed(tiny_gpt2):
    graph, meta = tiny_gpt2
    # Oracle: accelerate's compute_module_sizes has no entry (0 bytes) for a module without tensors.
    sizes = compute_module_sizes(meta)
    outside = [name for name, _ in meta.named_modules() if name and graph.node_of(name) is None]
    assert list(graph.empty_modules) == [name for name in outside if sizes.get(name, 0) == 0]
    assert "transformer.drop" in graph.empty_modules
    assert LayerGraph.from_json(graph.to_json()) == graph


@pytest.mark.parametrize("strategy", ["sequential", "auto"])
def test_accelerates_gpt2_map_is_accepted_by_evaluate_and_compare(tiny_gpt2, strategy):
    graph, meta = tiny_gpt2
    caps = _gpt2_caps(graph)
    device_map = accelerate_device_map(meta, max_memory=caps, strategy=strategy, dtype="bfloat16")
    assert "transformer.drop" in device_map and len(set(device_map.values())) == 3
    check_device_map(meta, device_map)  # accelerate accepts its own map
    expected = _tensor_devices(graph, meta, device_map)
    assert node_devices(graph, device_map) == {node: devices.pop() for node, devices in expected.items()}
    plan = evaluate_map(graph, device_map, max_memory=caps, reserve=0)
    assert plan.device_map == device_map
    spec = PlanSpec.from_kwargs(graph, max_memory=caps, reserve=0)
    ours, theirs = compare_strategy(graph, meta, spec, strategy=strategy)
    assert theirs.error is None and theirs.plan is not None and theirs.plan.device_map == device_map
    assert ours.error is None
    # a graph read back from JSON accepts the map too
    assert node_devices(LayerGraph.from_json(graph.to_json()), device_map) == node_devices(graph, device_map)


def test_a_format_3_graph_does_not_know_them_and_says_so(tiny_gpt2):
    graph, meta = tiny_gpt2
    data = json.loads(graph.to_json())
    del data["empty_modules"]
    data["format_version"] = 3
    old = LayerGraph.from_dict(data)
    assert old.empty_modules == () and any("trace the model again to accept such maps" in n for n in old.notes)
    with pytest.raises(InvalidSpecError, match=r"key 'transformer.drop' matches no module"):
        node_devices(old, {"": 0, "transformer.drop": 0})


@pytest.mark.parametrize("key", ["transformer.dropout", "transformer.drop.p", "drop"])
def test_a_key_naming_no_module_is_still_an_error(tiny_gpt2, key):
    graph, meta = tiny_gpt2
    assert key not in dict(meta.named_modules())
    device_map = {**accelerate_device_map(meta, max_memory=_gpt2_caps(graph), strategy="sequential",
                                          dtype="bfloat16"), key: 0}
    with pytest.raises(InvalidSpecError, match=rf"key '{key}' matches no module"):
        node_devices(graph, device_map)
    with pytest.raises(InvalidSpecError, match=rf"key '{key}' matches no module"):
        evaluate_map(graph, device_map, max_memory=_gpt2_caps(graph), reserve=0)


# -- JSON files -------------------------------------------------------------------------------------
def test_load_device_map_normalises_and_keeps_order(tmp_path):
    path = tmp_path / "map.json"
    path.write_text('{"model.embed_tokens": "0", "model.layers": "cuda:1", "lm_head": "cpu", "model.norm": 2}')
    assert list(load_device_map(path).items()) == [
        ("model.embed_tokens", 0), ("model.layers", 1), ("lm_head", "cpu"), ("model.norm", 2)]
    assert load_device_map(str(path)) == load_device_map(path)


def test_accelerate_map_round_trips_through_json(traced, tmp_path):
    graph, meta = traced
    device_map = _accelerate_map(meta, no_split=["LlamaDecoderLayer"])
    path = tmp_path / "accelerate.json"
    path.write_text(json.dumps(device_map))
    assert load_device_map(path) == device_map
    assert node_devices(graph, load_device_map(path)) == node_devices(graph, device_map)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{\n  "lm_head": 0,\n}', r"not valid JSON: .* at line 3 column 1"),
        ('{"lm_head": 0', r"not valid JSON: .* at line 1 column 14"),
        ("", r"not valid JSON: .* at line 1 column 1"),
        ('["lm_head", 0]', r"holds a JSON array, not an object"),
        ('"lm_head"', r"holds a JSON string, not an object"),
        ("null", r"holds a JSON null, not an object"),
        ('{"lm_head": "gpu"}', r"key 'lm_head': unknown device 'gpu'"),
        ('{"lm_head": 1.5}', r"key 'lm_head': unknown device 1.5"),
        ('{"lm_head": true}', r"key 'lm_head': device True is not a device"),
        ('{"lm_head": -1}', r"key 'lm_head': device -1 is negative"),
        ('{"lm_head": {"x": 0}}', r"key 'lm_head': unknown device"),
        ('{"lm_head": 0, "lm_head": 1}', r"gives key 'lm_head' twice"),
    ],
)
def test_bad_device_map_files_are_one_line_errors(tmp_path, text, match):
    path = tmp_path / "map.json"
    path.write_text(text)
    with pytest.raises(InvalidSpecError, match=match) as info:
        load_device_map(path)
    assert "\n" not in str(info.value)
    assert "map.json" in str(info.value)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [("missing.json", None, "does not exist"), ("folder", None, "cannot be read"),
     ("latin1.json", '{"t\u00eate": 0}'.encode("latin-1"), "is not UTF-8 text")],
)
def test_unreadable_device_map_file_is_an_error(tmp_path, name, content, match):
    if name == "folder":
        (tmp_path / name).mkdir()
    elif content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(InvalidSpecError, match=rf"device_map file '.*{name}' {match}") as info:
        load_device_map(tmp_path / name)
    assert "\n" not in str(info.value)
