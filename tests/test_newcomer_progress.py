"""What a newcomer sees of a running job (issue 20 items A2, A3 and A8; issue 17 item 5): a run whose output goes to a
log prints a plain line per stage and layer and keeps talking through a long silence; the run's progress counts a
stage's own items, so the index shows how far a stage that counts nothing (pruning's minutes) is, rather than a full
bar; and precomputing one layer saves the weights by which it is read as well as those by which it reads.

The job is a real one: one layer of the small random weight-sparse GPT of ``tests.test_lm_precompute``, into a real
atlas, through the CLI's own runner with its messages going to a file.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import time
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import select as query
from starlette.testclient import TestClient

from precompute import cli, job
from precompute.plan import select
from precompute.reporting import PlainReport
from precompute.stages import Job
from precompute.stages.contexts import ContextsConfig
from precompute.stages.kernels import KernelsStage
from precompute.registry import get_model
from server.app import create_app
from store import Atlas
from store.lock import writer_lock
from store.schema import Model, Run
from tests.lm_fixture import CARD, add_model
from tests.test_lm_precompute import TOKENS, spec

LAYER = "0.mlp.post_act"  # reads 0.resid_mid, read by 1.resid_pre


@pytest.fixture(scope="module")
def one_layer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An atlas with one layer of the random GPT precomputed, and what the runner printed to its log."""
    atlas = tmp_path_factory.mktemp("one-layer")
    model = spec("sparse")
    log = io.StringIO()
    request = job.Request(model, atlas, select(model, [LAYER], None), contexts=ContextsConfig(tokens=TOKENS),
                          tasks=())
    original = cli.err
    cli.err = Console(file=log, soft_wrap=True)  # a file, not a terminal: as under `make demo > log 2>&1`
    try:
        cli._run_precompute(request)
    finally:
        cli.err = original
    return atlas, log.getvalue()


def test_a_run_into_a_log_prints_a_plain_line_per_stage_and_layer(one_layer: tuple[Path, str]):
    _, log = one_layer
    lines = log.splitlines()
    assert "\x1b[" not in log  # no terminal control codes in a log
    for stage, items in (("contexts", 1), ("weights", 1)):
        assert any(re.match(rf"random-sparse: {stage} 0/{items} · .* · started$", line) for line in lines), log
        assert any(re.match(rf"random-sparse: {stage} {items}/{items} · .* · finished$", line) for line in lines), log
    saved = next(line for line in lines if line.startswith("random-sparse: contexts 1/1"))
    assert "64/64 units" in saved and f"now {LAYER}" in saved  # the layer's units, counted as units
    assert lines[-1].startswith("random-sparse: 64 units measured into")


def test_the_runs_progress_counts_the_items_of_its_stage(one_layer: tuple[Path, str]):
    atlas, _ = one_layer
    with sqlite3.connect(atlas / "atlas.db") as db:
        progress = json.loads(db.execute("SELECT progress FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])
    assert progress["stage"] == "done" and progress["stage_done"] == progress["stage_items"] > 0
    assert progress["counted"] is False  # its last stage, the search index, counts no units


def test_plain_output_keeps_talking_through_a_long_silence():
    """A stage that says nothing for a while (a long pass, a slow pruning step) still gets a line every interval."""
    log = io.StringIO()
    with PlainReport(Console(file=log), "m", "units", "measure", "cpu", "atlas", lambda: None, every=0.05) as report:
        report.on_plan(10, 10)
        report.on_stage("circuits", 1, False)
        report.on_report("circuit quote: sweep of 8, training, step 11/300, loss 0.31, kept 412 nodes")
        for _ in range(400):  # until the ticker has spoken (it does within a fraction of a second)
            if "step 11/300" in log.getvalue():
                break
            time.sleep(0.05)
    assert "m: circuits 0/1 · 0/10 units · " in log.getvalue()
    assert "now circuit quote: sweep of 8, training, step 11/300, loss 0.31, kept 412 nodes" in log.getvalue()


def test_a_layer_precomputed_alone_lists_who_reads_it(one_layer: tuple[Path, str]):
    """Both directions of the chosen layer's weights are saved, though neither neighbour layer was chosen."""
    atlas, _ = one_layer
    with sqlite3.connect(atlas / "atlas.db") as db:
        pairs = dict(db.execute(
            "SELECT sl.name || ' -> ' || dl.name, count(*) FROM edges e JOIN units s ON s.id = e.src_unit_id "
            "JOIN layers sl ON sl.id = s.layer_id JOIN units d ON d.id = e.dst_unit_id "
            "JOIN layers dl ON dl.id = d.layer_id GROUP BY sl.name, dl.name").fetchall())
    assert set(pairs) == {f"0.resid_mid -> {LAYER}", f"{LAYER} -> 1.resid_pre"} and all(pairs.values())


def test_a_vision_layer_precomputed_alone_plans_both_of_its_weight_pairs(tmp_path: Path):
    tiny = get_model("tinyvision")
    job.register(tiny, tmp_path)
    with Atlas.open_for_writing(tmp_path) as atlas, atlas.sessions.begin() as session:
        model_id = session.scalar(query(Model.id).where(Model.slug == tiny.slug))
        stage = KernelsStage(Job(tiny, atlas, model_id, None, False), [tiny.layer("conv2")])
        labels = [item.label for item in stage.plan(session).items]
    assert labels == ["weights conv1 → conv2", "weights conv2 → conv3"]


def test_the_index_shows_how_far_pruning_is_not_a_full_bar(tmp_path: Path):
    current = "circuit single_double_quote: sweep of 8, training, step 120/300, loss 0.21-0.40, kept 37-412 nodes"
    with Atlas.open_for_writing(tmp_path) as atlas, atlas.batch() as session:
        model, _ = add_model(session, "busy", "Busy LM", "Being filled.", CARD)
        session.add(Run(model_id=model.id, config={"tasks": ["single_double_quote"]},
                        progress={"stage": "circuits", "planned": 184, "kept": 0, "todo": 184, "done": 184,
                                  "current": current, "stage_items": 1, "stage_done": 0, "counted": False}))
    with writer_lock(tmp_path):
        client = TestClient(create_app(tmp_path))
        index = client.get("/").text
        twin = client.get("/.json").json()["models"][0]["job"]
    assert (twin["stage"], twin["stage_items"], twin["stage_done"], twin["counted"]) == ("circuits", 1, 0, False)
    status = index[index.index('<p class="job job-running">'):]
    status = status[:status.index("</p>")]
    assert "184 of 184 units" in status and "circuits: 0 of 1 tasks" in status and f"now {current}" in status
    assert re.findall(r'style="width: ([\d.]+)%"', status) == ["0.0"]  # the stage's bar, not a full one of units
    assert "images" not in index and " rendered" not in index  # a language model's work is counted in units
