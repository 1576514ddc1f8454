"""Devices on several hosts: hosts in the spec, the network between them in the cost model, no
offload across hosts, and the engine exports (vLLM on a Ray cluster, SGLang with --nnodes).

Oracles: the link and latency the hardware spec gives against the presets' figures; relabelling
interchangeable GPUs against the link matrix itself; the host boundary against every memory-feasible
cut of the chain; the exported partition against the engines' own ``get_pp_indices`` rule (restated
in ``tests/test_export.py``) and their rank order (``sort_by_driver_then_worker_ip`` in
``vllm/v1/executor/ray_executor.py``, ``pp_size_per_node`` in SGLang's ``engine.py``).
"""

from __future__ import annotations

import json

import pytest

import layerplan
from layerplan.planner.hardware import build_hardware
from layerplan.planner.hardware.costing import cost_model
from layerplan.planner.hardware.network import INTER_HOST_LINKS, parse_hosts
from layerplan.planner.hardware.presets import ACCELERATORS, HOST_LINKS
from layerplan.solver import InvalidSpecError
from layerplan.solver._symmetry import interchangeable_groups
from layerplan.solver.cost import timing
from tests.cli_helpers import one_line, run
from tests.test_export import _engine_layer_range

GPUS = {i: "80GiB" for i in range(16)}
TYPES = {",".join(map(str, range(16))): "h100-sxm"}
HOSTS = {"0-7": "node-a", "8-15": "node-b"}


def test_hosts_take_ranges_and_lists_and_refuse_a_device_on_two_hosts() -> None:
    assert parse_hosts(["0-2=a", "3,4=b", "cpu=a"]) == {0: "a", 1: "a", 2: "a", 3: "b", 4: "b", "cpu": "a"}
    with pytest.raises(InvalidSpecError, match="on two hosts"):
        parse_hosts({"0-3": "a", "3": "b"})
    with pytest.raises(InvalidSpecError, match="not a host name"):
        parse_hosts({"0": "node a"})
    with pytest.raises(InvalidSpecError, match="runs backwards"):
        parse_hosts({"7-0": "a"})


def test_gpus_on_two_hosts_talk_over_the_network_and_keep_nvlink_within_a_host() -> None:
    keys = [*range(16), "cpu"]
    hw = build_hardware(keys, device_types={i: "h100-sxm" for i in range(16)}, hosts=HOSTS, inter_host="ib-hdr")
    h100 = ACCELERATORS["h100-sxm"]
    assert hw.link(0, 7) == hw.link(8, 15) == h100.nvlink_bytes_per_s
    ib = INTER_HOST_LINKS["ib-hdr"]
    assert hw.link(3, 12) == min(ib.bytes_per_s, HOST_LINKS[h100.host_link].bytes_per_s)
    assert hw.latency(3, 12) == ib.latency_s > hw.latency(0, 1)
    assert hw.host("cpu") == "node-a" and hw.multi_host
    # a declared link still wins for its pair
    fast = build_hardware(keys, hosts=HOSTS, links={(7, 8): "200GB/s"})
    a100_pcie = HOST_LINKS[ACCELERATORS["a100-80gb"].host_link].bytes_per_s  # the default type: PCIe 4 < NDR
    assert fast.link(7, 8) == 200e9 and fast.link(6, 8) == min(INTER_HOST_LINKS["ib-ndr"].bytes_per_s, a100_pcie)
    assert any("no inter_host given" in note for note in fast.notes)


def test_offload_on_another_host_and_a_gpu_without_a_host_are_refused() -> None:
    keys = [0, 1, "cpu"]
    with pytest.raises(InvalidSpecError, match="cpu is on host 'b'.*execution device"):
        build_hardware(keys, hosts={0: "a", 1: "b", "cpu": "b"})
    with pytest.raises(InvalidSpecError, match="no host for GPU 1"):
        build_hardware(keys, hosts={0: "a"})
    with pytest.raises(InvalidSpecError, match="neither a network"):
        build_hardware(keys, hosts={0: "a", 1: "b"}, inter_host="fibre")


@pytest.fixture(scope="module")
def plan_405b():
    """llama-3.1-405b on 2 hosts x 8 H100 SXM over InfiniBand NDR, free device order."""
    return layerplan.plan("llama-3.1-405b", max_memory=GPUS, types=TYPES, hosts=HOSTS, inter_host="ib-ndr",
                          time_limit_s=10)


def _hosts_in_order(plan) -> list[str]:
    return [plan.hosts[d] for d in (plan.problem.devices[a].name for a in plan.solution.assignment)
            for d in [int(d)]]


def test_the_host_boundary_is_crossed_once_at_the_cheapest_feasible_cut(plan_405b) -> None:
    plan, graph = plan_405b, plan_405b.problem
    order = _hosts_in_order(plan)
    crossings = [i for i in range(1, len(order)) if order[i] != order[i - 1]]
    host_cap = 8 * 80 * 2**30
    footprint = [n.size_bytes + n.kv_bytes for n in graph.nodes]
    assert sum(footprint) > host_cap  # one host cannot hold it: at least one crossing is needed
    assert len(crossings) == 1  # free device order, yet the plan never goes back and forth
    chain = {e.consumers[0]: e.size_bytes for e in graph.edges if e.consumers == (e.producer + 1,)}
    feasible = [i for i in range(1, len(order))
                if sum(footprint[:i]) <= host_cap and sum(footprint[i:]) <= host_cap]
    assert chain[crossings[0]] == min(chain.get(i, 0) for i in feasible)


def test_the_network_costs_time_in_the_estimate(plan_405b) -> None:
    """The same placement on one 16-GPU NVLink host would be faster by at least the boundary's
    tensor at the network's speed."""
    plan = plan_405b
    one_host = layerplan.plan("llama-3.1-405b", max_memory=GPUS, types=TYPES, interconnect="nvlink",
                              device_map=plan.device_map)
    two = plan.timing
    assert two.transfer_ns > one_host.timing.transfer_ns
    hidden = max(e.size_bytes for e in plan.graph.edges)
    assert two.total_ns - one_host.timing.total_ns >= hidden / INTER_HOST_LINKS["ib-ndr"].bytes_per_s * 1e9 * 0.99


def test_interchangeable_gpus_are_those_of_one_host(plan_405b) -> None:
    problem = plan_405b.problem
    hardware = build_hardware(list(range(16)), device_types={i: "h100-sxm" for i in range(16)}, hosts=HOSTS)
    cost = cost_model(plan_405b.graph, problem, hardware)
    assert timing(problem, cost, plan_405b.solution.assignment) == plan_405b.timing
    groups = interchangeable_groups(problem, cost)
    hosts = [plan_405b.hosts[int(d.name)] for d in problem.devices]
    assert sorted(map(len, groups)) == [8, 8] and all(len({hosts[d] for d in g}) == 1 for g in groups)
    for group in groups:  # swapping two members keeps every link; swapping across hosts does not
        a, b = group[:2]
        perm = list(range(len(problem.devices)))
        perm[a], perm[b] = b, a
        links = cost.link_bytes_per_s
        assert all(links[perm[i]][perm[j]] == links[i][j] for i in perm for j in perm)
    perm = list(range(len(problem.devices)))
    perm[0], perm[8] = 8, 0
    assert any(cost.link_bytes_per_s[perm[i]][perm[j]] != cost.link_bytes_per_s[i][j] for i in perm for j in perm)


def test_vllm_export_is_a_ray_cluster_with_the_partition_on_the_head(plan_405b) -> None:
    plan = plan_405b
    out = plan.export("vllm")
    pp = int(out.args[out.args.index("--pipeline-parallel-size") + 1])
    layers = [n.name for n in plan.graph.nodes if n.kind == "block"]
    assert sum(int(c) for c in out.env["VLLM_PP_LAYER_PARTITION"].split(",")) == len(layers) == 126
    head, *workers = out.hosts
    assert head["host"] == plan.hosts[int(out.stages[0]["device"])]
    assert "ray start --head --port=6379" in head["commands"] and "--distributed-executor-backend ray" in head[
        "commands"][-1]
    assert all(w["commands"] == [f"ray start --address={head['host']}:6379"] for w in workers)
    # ranks as vLLM orders them: the head's GPUs, then each worker host's, ascending local ids
    ranks = [(h["host"], g) for h in out.hosts for g in h["gpus"]]
    assert len(ranks) == pp and all(h["gpus"] == sorted(h["gpus"]) for h in out.hosts)
    local = {}
    for d, host in plan.hosts.items():
        if d != "cpu":
            local[d] = (host, sum(1 for e, h in plan.hosts.items() if e != "cpu" and h == host and e < d))
    for rank, (host, gpu) in enumerate(ranks):
        start, end = _engine_layer_range(out.env["VLLM_PP_LAYER_PARTITION"], len(layers), rank, pp)
        held = {local[int(plan.device_map[name])] for name in layers[start:end]}
        assert held == {(host, gpu)}
    assert "CUDA_VISIBLE_DEVICES" not in out.env and json.loads(json.dumps(out.to_dict()))["hosts"]


def test_sglang_export_runs_one_server_per_host_with_its_node_rank(plan_405b) -> None:
    out = plan_405b.export("sglang")
    assert [h["commands"][0].split("--node-rank ")[1].split()[0] for h in out.hosts] == ["0", "1"]
    assert all("--nnodes 2" in h["commands"][0] for h in out.hosts)
    counts = [len(h["stages"]) for h in out.hosts]
    assert (counts[0] != counts[1]) == any("pp_size / nnodes" in n for n in out.notes)


def test_a_multi_host_plan_is_not_handed_to_from_pretrained(plan_405b) -> None:
    with pytest.raises(InvalidSpecError, match="spans hosts node-a, node-b.*export"):
        plan_405b.from_pretrained_kwargs()
    devices = plan_405b.to_dict()["devices"]
    assert {d["host"] for d in devices} == {"node-a", "node-b"}


def test_stages_that_leave_a_host_and_come_back_are_refused() -> None:
    hosts = {0: "a", 1: "b", 2: "a"}
    graph, _ = layerplan.trace("llama-3-8b")
    names = [n.name for n in graph.nodes]
    cut = names.index("model.layers.10"), names.index("model.layers.20")
    device_map = {name: 0 if i < cut[0] else 1 if i < cut[1] else 2 for i, name in enumerate(names)}
    plan = layerplan.plan(graph, max_memory={0: "40GiB", 1: "40GiB", 2: "40GiB"}, hosts=hosts,
                          device_map=device_map)
    with pytest.raises(InvalidSpecError, match="comes back after another host"):
        plan.export("vllm")


def test_cli_refuses_offload_on_another_host_in_one_line(tmp_path, capsys) -> None:
    code, _, err = run(["plan", "llama-3-8b", "--max-memory", "0=40GiB", "1=40GiB", "cpu=64GiB", "--hosts", "0=a",
                        "1=b", "cpu=b"], capsys)
    assert code == 2 and "cpu is on host 'b'" in one_line(err)
    code, _, err = run(["plan", "llama-3-8b", "--max-memory", "0=40GiB", "1=40GiB", "--hosts", "0=a", "1=b",
                        "--inter-host", "fibre"], capsys)
    assert code == 2 and "inter_host='fibre'" in one_line(err)
    spec = tmp_path / "spec.toml"
    spec.write_text('[model]\nsource = "llama-3-8b"\n[devices]\nmax_memory = { 0 = "40GiB", 1 = "40GiB" }\n'
                    'hosts = { "0" = "a", "1" = "b" }\ninter_host = "roce-100g"\n')
    parsed = layerplan.PlanSpec.from_toml(spec)
    assert parsed.devices.hosts == {0: "a", 1: "b"} and parsed.devices.inter_host == "roce-100g"
    assert layerplan.PlanSpec.from_dict(parsed.to_dict()).devices == parsed.devices
