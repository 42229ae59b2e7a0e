"""Task circuits of the embedded sparse organism, found by a real precompute from the command line into a real atlas,
then checked against the model itself: the stored loss is the loss of the stored nodes, the stored edges are exactly
the nonzero weights between them, the held-out numbers are the model's, a rerun does nothing, and the pages answer
over HTTP with nodes that link to unit pages."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
import torch

from precompute.lm import evaluate
from precompute.lm.circuits import node_points, pretraining_windows
from precompute.lm.corpus import load_heldout
from precompute.lm.tasks import TASKS, split
from precompute.lm.tokenizer import load_tokenizer
from precompute.organisms import tinylm
from render.pruning import gated, mean_activations
from store.keys import SIZE_TARGETS, CircuitKey, EdgeKind
from tests.conftest import atlascope, serving

TASK = "single_double_quote"
STEPS = 200
PAIRS = {"prune": 256, "eval": 400}  # precompute.lm.circuits.CircuitConfig's


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    atlas = tmp_path_factory.mktemp("circuits")
    done = atlascope("precompute", "tinylm-sparse", "--atlas", str(atlas), "--layers", "0.attn.act_in",
                     "--tokens", "1024", "--tasks", TASK, "--prune-steps", str(STEPS))
    assert done.returncode == 0, done.stderr
    return atlas


def rows(atlas: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(atlas / "atlas.db") as db:
        return db.execute(sql, args).fetchall()


def circuit(atlas: Path) -> tuple[int, float, float, int, int, dict]:
    import json

    (found,) = rows(atlas, "SELECT id, target_loss, loss, n_nodes, n_edges, params FROM circuits WHERE slug = ?", TASK)
    return (*found[:5], json.loads(found[5]))


def kept(atlas: Path, circuit_id: int) -> dict[str, list[int]]:
    nodes: dict[str, list[int]] = {}
    for layer, index in rows(atlas, "SELECT l.name, u.\"index\" FROM circuit_nodes n JOIN units u ON u.id = n.unit_id "
                                    "JOIN layers l ON l.id = u.layer_id WHERE n.circuit_id = ? ORDER BY u.\"index\"",
                             circuit_id):
        nodes.setdefault(layer, []).append(index)
    return nodes


@pytest.fixture(scope="module")
def model():
    return tinylm.load("tinylm-sparse").eval().requires_grad_(False)


def losses(model, atlas: Path, which: str, gates: dict | None, replace: str = "mean") -> torch.Tensor:
    """[N, 2] candidate logits of the task's ``which`` split, computed here, with ``gates`` applied if given."""
    task = TASKS[TASK]
    batch = evaluate.encode_pairs(load_tokenizer(), task, split(task, which, PAIRS[which], 0))
    points = node_points(model)
    windows = pretraining_windows(load_heldout().tokens, model.config.block_size, 64)
    means = mean_activations(model, points, windows)
    if replace == "zero":
        means = {name: torch.zeros_like(mean) for name, mean in means.items()}
    with torch.no_grad():
        if gates is None:
            return evaluate.candidate_logits(model, batch)
        with gated(points, gates, means):
            return evaluate.candidate_logits(model, batch)


def gates_of(model, nodes: dict[str, list[int]], invert: bool = False) -> dict[str, torch.Tensor]:
    gates = {}
    for name, width in _widths(model).items():
        gate = torch.zeros(width)
        gate[nodes.get(name, [])] = 1.0
        gates[name] = 1 - gate if invert else gate
    return gates


def _widths(model) -> dict[str, int]:
    c = model.config
    widths = {"attn.act_in": c.d_model, "attn.q": c.d_attn, "attn.k": c.d_attn, "attn.v": c.d_attn,
              "attn.out": c.d_model, "mlp.act_in": c.d_model, "mlp.post_act": c.d_mlp, "mlp.out": c.d_model}
    return {f"{block}.{kind}": width for block in range(c.n_layer) for kind, width in widths.items()}


def test_the_circuit_meets_the_target_and_its_stored_loss_is_the_loss_of_its_nodes(atlas: Path, model):
    circuit_id, target, loss, n_nodes, _, params = circuit(atlas)
    assert params[CircuitKey.TARGET] == {"target": target, "met": True} and target == 0.15
    assert loss <= target
    nodes = kept(atlas, circuit_id)
    assert sum(map(len, nodes.values())) == n_nodes < params[CircuitKey.CONFIG]["nodes_total"] // 4
    recomputed = float(evaluate.task_loss(losses(model, atlas, "prune", gates_of(model, nodes))))
    assert recomputed == pytest.approx(loss, abs=1e-4)
    curve = dict(params[CircuitKey.CURVE])
    assert curve[n_nodes] == pytest.approx(loss) and all(curve[k] > target for k in curve if k < n_nodes)
    sizes = {size["target"]: size for size in params[CircuitKey.SIZES]}
    assert set(sizes) == {t for t in SIZE_TARGETS if min(curve.values()) <= t}
    assert all(size["k"] == min(k for k in curve if curve[k] <= t) for t, size in sizes.items())
    assert sizes[target]["k"] == n_nodes and sizes[target]["edges"] == circuit(atlas)[4]


def test_the_stored_edges_are_the_nonzero_weights_between_kept_nodes(atlas: Path, model):
    circuit_id, _, _, _, n_edges, _ = circuit(atlas)
    nodes = kept(atlas, circuit_id)
    expected = {}
    for block_index, block in enumerate(model.transformer.h):
        d = model.config.d_attn
        matrices = {("attn.act_in", f"attn.{kind}"): block.attn.c_attn.weight[i * d:(i + 1) * d]
                    for i, kind in enumerate("qkv")}
        matrices |= {("attn.v", "attn.out"): block.attn.c_proj.weight, ("mlp.act_in", "mlp.post_act"):
                     block.mlp.c_fc.weight, ("mlp.post_act", "mlp.out"): block.mlp.c_proj.weight}
        for (src, dst), matrix in matrices.items():
            src, dst = f"{block_index}.{src}", f"{block_index}.{dst}"
            for d_index in nodes.get(dst, []):
                for s_index in nodes.get(src, []):
                    if weight := float(matrix[d_index, s_index]):
                        expected[(src, s_index, dst, d_index)] = weight
    stored = {(sl, si, dl, di): w for sl, si, dl, di, w in rows(
        atlas, "SELECT sl.name, su.\"index\", dl.name, du.\"index\", e.weight FROM edges e "
               "JOIN units su ON su.id = e.src_unit_id JOIN layers sl ON sl.id = su.layer_id "
               "JOIN units du ON du.id = e.dst_unit_id JOIN layers dl ON dl.id = du.layer_id "
               "WHERE e.circuit_id = ? AND e.kind = ?", circuit_id, EdgeKind.CIRCUIT)}
    assert n_edges == len(stored) == len(expected) > 0
    assert stored.keys() == expected.keys()
    assert all(stored[key] == pytest.approx(expected[key], rel=1e-6) for key in stored)


def test_held_out_faithfulness_is_the_models_own(atlas: Path, model):
    circuit_id, target, _, _, _, params = circuit(atlas)
    faith = params[CircuitKey.FAITHFULNESS]
    nodes = kept(atlas, circuit_id)
    full = losses(model, atlas, "eval", None)
    assert faith["pairs"] == PAIRS["eval"]
    assert faith["full"]["loss"] == pytest.approx(float(evaluate.task_loss(full)), abs=1e-4)
    for key, gates, replace in (("circuit_mean", gates_of(model, nodes), "mean"),
                                ("circuit_zero", gates_of(model, nodes), "zero"),
                                ("ablated_mean", gates_of(model, nodes, invert=True), "mean")):
        two = losses(model, atlas, "eval", gates, replace)
        agreement = float(((two[:, 0] > two[:, 1]) == (full[:, 0] > full[:, 1])).float().mean())
        assert faith[key]["loss"] == pytest.approx(float(evaluate.task_loss(two)), abs=1e-4), key
        assert faith[key]["agreement"] == pytest.approx(agreement), key
    # What holds of this circuit: without it the model loses the task it solves with it.
    assert faith["ablated_mean"]["accuracy"] < faith["circuit_mean"]["accuracy"]
    examples = params[CircuitKey.EXAMPLES]
    assert examples and all(e["tokens"][0] == "<|endoftext|>" and e["full"]["choice"] in (e["correct"], e["wrong"])
                            for e in examples)


def test_a_rerun_finds_nothing_to_do_and_leaves_the_circuit_as_it_was(atlas: Path):
    before = rows(atlas, "SELECT * FROM circuits"), rows(atlas, "SELECT count(*) FROM edges WHERE circuit_id IS NOT NULL")
    done = atlascope("precompute", "tinylm-sparse", "--atlas", str(atlas), "--layers", "0.attn.act_in",
                     "--tokens", "1024", "--tasks", TASK, "--prune-steps", str(STEPS))
    assert done.returncode == 0, done.stderr
    assert (rows(atlas, "SELECT * FROM circuits"),
            rows(atlas, "SELECT count(*) FROM edges WHERE circuit_id IS NOT NULL")) == before


def test_the_served_circuit_links_every_node_to_a_unit_page_that_lists_it(atlas: Path):
    circuit_id, *_ = circuit(atlas)
    stored = {(layer, index) for layer, indices in kept(atlas, circuit_id).items() for index in indices}
    with serving(atlas, "--workers", "1") as url, httpx.Client(base_url=url, timeout=30) as client:
        page = client.get(f"/models/tinylm-sparse/circuits/{TASK}.json").json()
        assert {(node["layer"], node["index"]) for node in page["nodes"]} == stored
        assert page["met"] and page["n_edges"] == len(page["edges"])
        for node in page["nodes"][::25]:
            unit = client.get(node["json_url"])
            assert unit.status_code == 200
            assert [c["slug"] for c in unit.json()["circuits"]] == [TASK]
        graph = client.get(page["download"]["url"]).json()
        ids = {node["node_id"] for node in graph["nodes"]}
        assert len(ids) == len(graph["nodes"]) and all({link["source"], link["target"]} <= ids
                                                       for link in graph["links"])
