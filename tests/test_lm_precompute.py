"""The language half of the precompute job on a small random weight-sparse GPT (and its dense twin), the real
tokenizer and the first 4,096 tokens of the held-out sample: a real precompute into a real atlas, checked against
the model's own activations and weights recomputed here, resumed after an interrupt, run again for nothing, and
served over HTTP."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import pytest
import torch
from sqlalchemy import select as query
from sqlalchemy.orm import aliased

from precompute import job
from precompute.lm import sparsity
from precompute.lm.corpus import load_heldout
from precompute.lm.model import GPTConfig, SparseGPT
from precompute.lm.tokenizer import load_tokenizer, token_texts
from precompute.plan import select
from precompute.registry import ModelSpec, get_model, language_layers
from precompute.stages.contexts import ContextsConfig, layer_seed
from render.contexts import POOL, RANDOM, TOP, WINDOW, token_keys, unit_offsets
from render.hooks import activations
from render.lm_weights import source
from store import Atlas
from store.keys import ContextKey, EdgeKind, ExampleKind, ModelKind, Stat
from store.schema import Edge, Example, Layer, Unit
from tests.conftest import atlascope, serving

TOKENS = 4096
CONTEXT = 128
N_LAYER, D_MODEL, D_MLP, N_HEAD, D_HEAD = 2, 32, 64, 2, 16


def build(sparse: bool) -> SparseGPT:
    """The same random model every time: weights 1/8 nonzero (or dense), norm gains away from 1 so that folding
    them in is tested."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SparseGPT(GPTConfig(d_model=D_MODEL, d_mlp=D_MLP, n_head=N_HEAD, d_head=D_HEAD, n_layer=N_LAYER))
        if sparse:
            sparsity.sparsify_(model.sparse_matrices(), 1 / 8)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if ".ln_" in name or "ln_f" in name:
                    param.uniform_(0.5, 2.0)
    return model.eval()


def load_sparse(spec: ModelSpec) -> SparseGPT:
    return build(sparse=True)


def load_dense(spec: ModelSpec) -> SparseGPT:
    return build(sparse=False)


def spec(variant: str) -> ModelSpec:
    return ModelSpec(slug=f"random-{variant}", title=f"Random {variant} GPT", kind=ModelKind.LANGUAGE,
                     description="a test model", source="tests/test_lm_precompute.py",
                     layers=language_layers(N_LAYER, D_MODEL, D_MLP, N_HEAD * D_HEAD),
                     loader=f"tests.test_lm_precompute:load_{variant}", dataset="precompute.lm.corpus:load_heldout",
                     tokenizer="precompute.lm.tokenizer:load_tokenizer")


def precompute(atlas: Path, variant: str = "sparse", **callbacks) -> int:
    model = spec(variant)
    request = job.Request(model, atlas, select(model, None, None), contexts=ContextsConfig(tokens=TOKENS), tasks=())
    return job.run(request, **callbacks)


def units() -> int:
    return sum(layer.units for layer in spec("sparse").layers)


@pytest.fixture(scope="module")
def sparse_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    atlas = tmp_path_factory.mktemp("lm-sparse")
    assert precompute(atlas) == units()
    return atlas


@pytest.fixture(scope="module")
def dense_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    atlas = tmp_path_factory.mktemp("lm-dense")
    precompute(atlas, "dense")
    return atlas


@pytest.fixture(scope="module")
def acts() -> dict[str, torch.Tensor]:
    """Every layer's activations on the sample, recomputed here, in the job's 128-token contexts: [tokens, units]."""
    model = build(sparse=True)
    hooks = model.hook_points()
    ids = torch.from_numpy(load_heldout().tokens[:TOKENS].astype("int64")).view(-1, CONTEXT)
    with torch.no_grad():
        found = activations(model, {layer.name: hooks[layer.module] for layer in spec("sparse").layers}, ids)
    return {name: a.reshape(TOKENS, -1) for name, a in found.items()}


def unit_stats(atlas: Path, layer: str) -> list[dict]:
    with Atlas.open_readonly(atlas).sessions() as session:
        return list(session.scalars(query(Unit.stats).join(Layer).where(Layer.name == layer).order_by(Unit.index)))


def examples(atlas: Path, layer: str, index: int, kind: ExampleKind) -> list[Example]:
    with Atlas.open_readonly(atlas).sessions() as session:
        return list(session.scalars(query(Example).join(Unit).join(Layer).where(
            Layer.name == layer, Unit.index == index, Example.kind == kind).order_by(Example.rank)))


def weight_edges(atlas: Path, src: str, dst: str) -> dict[tuple[int, int], float]:
    """{(dst unit, src unit): weight} of the weight edges from layer ``src`` to layer ``dst``."""
    source, reader = aliased(Unit), aliased(Unit)
    source_layer, reader_layer = aliased(Layer), aliased(Layer)
    with Atlas.open_readonly(atlas).sessions() as session:
        rows = session.execute(
            query(reader.index, source.index, Edge.weight).select_from(Edge)
            .join(source, source.id == Edge.src_unit_id).join(source_layer, source_layer.id == source.layer_id)
            .join(reader, reader.id == Edge.dst_unit_id).join(reader_layer, reader_layer.id == reader.layer_id)
            .where(Edge.kind == EdgeKind.WEIGHT, source_layer.name == src, reader_layer.name == dst)).all()
    return {(d, s): w for d, s, w in rows}


def close(shown: float, value: float) -> bool:
    """Activations in windows are shown to 4 significant digits."""
    return abs(shown - value) <= 5e-4 * abs(value) + 1e-12


def test_top_context_is_the_models_maximum(sparse_atlas: Path, acts: dict[str, torch.Tensor]):
    layer = "1.mlp.post_act"
    a = acts[layer]
    unit = int(a.max(dim=0).values.argmax())  # the neuron with the layer's highest activation
    peak = int(a[:, unit].argmax())
    first = examples(sparse_atlas, layer, unit, ExampleKind.TOP)[0]
    window = first.source
    start, position = window[ContextKey.OFFSET], window[ContextKey.POSITION]
    assert first.rank == 0 and start + position == peak and close(first.activation, float(a[peak, unit]))
    assert len(window[ContextKey.TOKENS]) == len(window[ContextKey.VALUES]) == WINDOW
    assert all(close(shown, float(value)) for shown, value in zip(window[ContextKey.VALUES],
                                                                    a[start:start + WINDOW, unit]))
    held = load_heldout()
    assert "".join(window[ContextKey.TOKENS]) == load_tokenizer().decode(held.tokens[start:start + WINDOW].tolist())
    assert window[ContextKey.DOCUMENT] == held.document_at(start) == held.document_at(start + WINDOW - 1)


def test_statistics_match_the_activations(sparse_atlas: Path, acts: dict[str, torch.Tensor]):
    for layer in ("0.attn.q", "0.mlp.post_act", "1.resid_mid", "1.resid_post"):
        a = acts[layer]
        for index, stats in enumerate(unit_stats(sparse_atlas, layer)):
            column = a[:, index]
            nonzero = column[column != 0]
            assert stats[Stat.N] == TOKENS and stats[Stat.DENSITY] == len(nonzero) / TOKENS
            assert stats[Stat.MAX] == pytest.approx(float(column.max())) and \
                stats[Stat.MIN] == pytest.approx(float(column.min()))
            assert stats[Stat.MEAN] == pytest.approx(float(column.double().mean()), rel=1e-4, abs=1e-7)
            histogram = stats[Stat.HISTOGRAM]
            assert sum(histogram["counts"]) == len(nonzero) and histogram["clipped"] == 0
            edges = torch.tensor(histogram["edges"], dtype=torch.float64)
            expected = torch.histogram(nonzero.double(), bins=edges).hist.long().tolist()
            assert histogram["counts"] == expected  # exact, including values on an edge


def test_contexts_are_where_the_unit_fires(sparse_atlas: Path, acts: dict[str, torch.Tensor]):
    layer = "0.mlp.post_act"
    a = acts[layer]
    keys = token_keys(TOKENS, ContextsConfig().seed)
    pool = keys < POOL
    offsets = unit_offsets(D_MLP, layer_seed(ContextsConfig().seed, layer))
    for index, stats in enumerate(unit_stats(sparse_atlas, layer)):
        top = examples(sparse_atlas, layer, index, ExampleKind.TOP)
        peaks = [ex.source[ContextKey.OFFSET] + ex.source[ContextKey.POSITION] for ex in top]
        assert [ex.rank for ex in top] == list(range(len(top))) and 0 < len(top) <= TOP
        assert [ex.activation for ex in top] == sorted((ex.activation for ex in top), reverse=True)
        assert len({peak // WINDOW for peak in peaks}) == len(peaks)  # one maximum per span at most
        span_maxima = a[:, index].view(-1, WINDOW).max(dim=1).values
        assert close(top[-1].activation, float(span_maxima.topk(len(top)).values[-1]))
        tokens = Counter(ex.source[ContextKey.TOKENS][ex.source[ContextKey.POSITION]] for ex in top)
        assert stats[Stat.TOP_TOKENS] == [text for text, _ in tokens.most_common(5)]

        random = examples(sparse_atlas, layer, index, ExampleKind.RANDOM)
        drawn = [ex.source[ContextKey.OFFSET] + ex.source[ContextKey.POSITION] for ex in random]
        candidates = torch.nonzero(pool & (a[:, index] != 0)).flatten()  # the pool's tokens where it fires
        rank = torch.remainder(keys[candidates] / POOL - offsets[index], 1.0)  # its own order of them
        assert drawn == sorted(candidates[rank.argsort()[:RANDOM]].tolist())
        for ex, position in zip(random, drawn):
            assert a[position, index] != 0 and close(ex.activation, float(a[position, index]))


def expected_weights(model: SparseGPT, src: str, dst: str) -> torch.Tensor:
    """[dst, src] from the parameters, by hand: reads through a norm carry its gain."""
    block = model.transformer.h[int(dst.partition(".")[0])]
    d_attn = N_HEAD * D_HEAD
    if dst.endswith("attn.k"):
        return block.attn.c_attn.weight[d_attn:2 * d_attn] * block.ln_1.weight
    if dst.endswith("resid_mid"):
        return block.attn.c_proj.weight
    if dst.endswith("mlp.post_act"):
        return block.mlp.c_fc.weight * block.ln_2.weight
    return model.transformer.h[int(src.partition(".")[0])].mlp.c_proj.weight


READS = [("0.resid_pre", "0.attn.k"), ("1.attn.v", "1.resid_mid"), ("0.resid_mid", "0.mlp.post_act"),
         ("0.mlp.post_act", "1.resid_pre"), ("1.mlp.post_act", "1.resid_post")]


@pytest.mark.parametrize("src, dst", READS)
def test_every_nonzero_weight_is_an_edge(sparse_atlas: Path, src: str, dst: str):
    weights = expected_weights(build(sparse=True), src, dst).detach()
    found = weight_edges(sparse_atlas, src, dst)
    assert set(found) == {tuple(pair) for pair in torch.nonzero(weights).tolist()}
    assert all(w == pytest.approx(float(weights[pair]), rel=1e-6) for pair, w in found.items())


@pytest.mark.parametrize("src, dst", READS)
def test_a_dense_model_lists_the_strongest_weights(dense_atlas: Path, src: str, dst: str):
    weights = expected_weights(build(sparse=False), src, dst).detach()
    magnitude = weights.abs()
    strongest = {(d, int(s)) for d, row in enumerate(magnitude.topk(16, dim=1).indices) for s in row}
    strongest |= {(int(d), s) for s, column in enumerate(magnitude.topk(16, dim=0).indices.T) for d in column}
    found = weight_edges(dense_atlas, src, dst)
    assert set(found) == strongest
    assert all(w == pytest.approx(float(weights[pair]), rel=1e-6) for pair, w in found.items())


def test_no_weight_edges_into_the_embeddings_or_between_q_and_k(sparse_atlas: Path):
    assert not weight_edges(sparse_atlas, "0.attn.q", "0.attn.k")
    with sqlite3.connect(sparse_atlas / "atlas.db") as db:
        into = dict(db.execute("SELECT l.name, count(*) FROM edges e JOIN units u ON u.id = e.dst_unit_id "
                               "JOIN layers l ON l.id = u.layer_id GROUP BY l.name").fetchall())
    readers = {layer.name for layer in spec("sparse").layers if source(layer.name, build(sparse=True).config.n_layer)}
    assert "0.resid_pre" not in into and set(into) == readers


@pytest.mark.parametrize("layer, index", [("1.mlp.post_act", 5), ("0.resid_mid", 7)])
def test_logit_effects_are_the_unembedding_of_the_output_direction(sparse_atlas: Path, layer: str, index: int):
    model = build(sparse=True)
    unembed = model.lm_head.weight * model.transformer.ln_f.weight  # [vocab, d_model]
    if layer.endswith("mlp.post_act"):
        direction = model.transformer.h[int(layer[0])].mlp.c_proj.weight[:, index]
    else:
        direction = torch.eye(D_MODEL)[index]
    logits = (unembed @ direction).detach()
    effects = unit_stats(sparse_atlas, layer)[index][Stat.LOGIT_EFFECTS]
    tokenizer = load_tokenizer()
    for side, largest in (("promoted", True), ("suppressed", False)):
        values, ids = logits.topk(10, largest=largest)
        assert [e["id"] for e in effects[side]] == ids.tolist()
        assert [e["value"] for e in effects[side]] == pytest.approx(values.tolist(), rel=1e-5)
        assert [e["token"] for e in effects[side]] == [token_texts(tokenizer, [i])[0] for i in ids.tolist()]


def test_q_k_v_units_have_no_logit_effects(sparse_atlas: Path):
    assert all(Stat.LOGIT_EFFECTS not in stats for stats in unit_stats(sparse_atlas, "1.attn.v"))
    assert all(Stat.DENSITY in stats for stats in unit_stats(sparse_atlas, "1.attn.v"))


def snapshot(atlas: Path) -> dict[str, set]:
    """Everything the language stages write, by unit name rather than row id."""
    with sqlite3.connect(atlas / "atlas.db") as db:
        name = "(SELECT l.name || '/' || u.[index] FROM units u JOIN layers l ON l.id = u.layer_id WHERE u.id = {})"
        return {
            "stats": set(db.execute(f"SELECT {name.format('units.id')}, stats FROM units")),
            "examples": set(db.execute(f"SELECT {name.format('unit_id')}, kind, rank, activation, source "
                                       "FROM examples")),
            "edges": set(db.execute(f"SELECT {name.format('src_unit_id')}, {name.format('dst_unit_id')}, kind, "
                                    "weight FROM edges")),
        }


def test_a_rerun_does_nothing(sparse_atlas: Path):
    before = snapshot(sparse_atlas)
    plans: list[tuple[int, int]] = []
    assert precompute(sparse_atlas, on_plan=lambda total, todo: plans.append((total, todo))) == 0
    assert plans == [(units(), 0)] and snapshot(sparse_atlas) == before


def test_an_interrupted_run_resumes_to_the_same_atlas(sparse_atlas: Path, tmp_path: Path):
    saved: list[str] = []

    def interrupt_after_two(label: str, count: int) -> None:
        saved.append(label)
        if len(saved) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        precompute(tmp_path, on_saved=interrupt_after_two)
    with sqlite3.connect(tmp_path / "atlas.db") as db:
        progress = db.execute("SELECT progress FROM runs").fetchone()[0]
        measured = db.execute("SELECT count(*) FROM units WHERE json_extract(stats, '$.density') IS NOT NULL")
        assert '"stage": "contexts"' in progress and measured.fetchone()[0] == 32 + 32  # resid_pre, attn.act_in
    plans: list[tuple[int, int]] = []
    precompute(tmp_path, on_plan=lambda total, todo: plans.append((total, todo)))
    assert plans == [(units(), units() - 64)] and snapshot(tmp_path) == snapshot(sparse_atlas)


def test_the_unit_page_carries_what_the_job_stored(sparse_atlas: Path):
    with serving(sparse_atlas, "--workers", "1") as url:
        page = httpx.get(f"{url}/models/random-sparse/0.mlp.post_act/3.json", timeout=30).json()
    stored = unit_stats(sparse_atlas, "0.mlp.post_act")[3]
    assert page["rendered"] and page["activation"]["density"] == stored[Stat.DENSITY]
    assert page["activation"]["histogram"]["counts"] == stored[Stat.HISTOGRAM]["counts"]
    top = examples(sparse_atlas, "0.mlp.post_act", 3, ExampleKind.TOP)
    assert [c["values"] for c in page["contexts"]["top"]] == [ex.source[ContextKey.VALUES] for ex in top]
    assert len(page["contexts"]["random"]) == RANDOM
    reads = [pair for pair in weight_edges(sparse_atlas, "0.resid_mid", "0.mlp.post_act") if pair[0] == 3]
    writes = [pair for pair in weight_edges(sparse_atlas, "0.mlp.post_act", "1.resid_pre") if pair[1] == 3]
    assert page["edges"]["in"]["total"] == len(reads) > 0 and page["edges"]["out"]["total"] == len(writes) > 0
    assert {edge["unit"]["index"] for edge in page["edges"]["in"]["shown"]} == {src for _, src in reads}
    assert page["logit_effects"]["promoted"] == stored[Stat.LOGIT_EFFECTS]["promoted"]



ORGANISM = get_model("tinylm-sparse")
needs_organism = pytest.mark.skipif(not ORGANISM.layers, reason="the organism's weights and card are not committed")


@pytest.mark.parametrize("args, message", [
    pytest.param(["tinylm-sparse", "--units", "0-3"], "--units is for feature visualisations", marks=needs_organism),
    pytest.param(["tinylm-sparse", "--objectives", "neuron"], "--objectives is for feature visualisations",
                 marks=needs_organism),
    pytest.param(["tinylm-sparse", "--tokens", "100"], "--tokens 100: choose from 128", marks=needs_organism),
    pytest.param(["tinylm-sparse", "--tokens", "300000"], "to 262,144 (the whole held-out sample)",
                 marks=needs_organism),
    pytest.param(["tinylm-sparse", "--layers", "0.mlp"], "has no layer '0.mlp'", marks=needs_organism),
    pytest.param(["tinylm-sparse", "--tasks", "quotes"], "unknown task(s) ['quotes']", marks=needs_organism),
    pytest.param(["tinylm-sparse", "--task-file", "/nonexistent.jsonl"], "task file /nonexistent.jsonl",
                 marks=needs_organism),
    pytest.param(["tinylm-sparse", "--tasks", "tests.nowhere:TASK"], "cannot import 'tests.nowhere'",
                 marks=needs_organism),
    (["tinyvision", "--tasks", "single_double_quote"], "--tasks, --task-file, --target-loss, --prune-steps and "
                                                       "--k-coef are for language models' circuits"),
    (["tinyvision", "--k-coef", "0.001"], "are for language models' circuits"),
    (["tinyvision", "--tokens", "4096"], "--tokens is for language models"),
])
def test_bad_language_input_fails_clearly_and_writes_nothing(tmp_path: Path, args: list[str], message: str):
    done = atlascope("precompute", *args, "--atlas", str(tmp_path / "atlas"))
    assert done.returncode == 2 and message in " ".join(done.stderr.split())
    assert not (tmp_path / "atlas").exists()


@needs_organism
def test_the_organism_precomputes_from_the_command_line(tmp_path: Path):
    done = atlascope("precompute", "tinylm-sparse", "--atlas", str(tmp_path), "--layers", "1.mlp.post_act",
                     "--tokens", "1024", "--steps", "8")
    assert done.returncode == 0, done.stderr
    assert "note: --steps" in done.stderr and "1024 units planned, 0 already in" in done.stderr
    assert "1024 units measured into" in done.stderr
    assert len(unit_stats(tmp_path, "1.mlp.post_act")) == 1024
