"""The `atlascope` command on a base install: listing models and serving need no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = [sys.executable, str(Path(__file__).with_name("no_torch.py")), "-m", "precompute.cli"]


def test_models_without_torch():
    done = subprocess.run([*NO_TORCH, "models", "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    models = {m["slug"]: m for m in json.loads(done.stdout)}
    assert list(models) == ["tinyvision", "tinylm-sparse", "tinylm-dense", "openai-csp", "alexnet",
                            "alexnet_caffe_places365", "inceptionv1", "inceptionv1_caffe_places365", "vgg19_caffe",
                            "inceptionv3_slim", "inceptionv4_slim", "resnetv2_50_slim"]  # Microscope's eight: no torch
    assert models["inceptionv1"]["units"] == 5804
    assert models["tinyvision"]["units"] == 320
    # a language organism's layers come from its committed card, read without torch: per block the residual stream,
    # attention's read, q/k/v and write channels, the residual stream between attention and MLP, the MLP's read
    # channels, neurons and write channels; then the final residual
    lm = models["tinylm-sparse"]
    assert [layer["name"] for layer in lm["layers"]][:10] == [
        "0.resid_pre", "0.attn.act_in", "0.attn.q", "0.attn.k", "0.attn.v", "0.attn.out", "0.resid_mid",
        "0.mlp.act_in", "0.mlp.post_act", "0.mlp.out"]
    assert lm["layers"][-1]["kind"] == "resid_post" and lm["units"] == 6912
    assert models["openai-csp"]["layers"] == []  # its layers come from the checkpoint given with --weights


def test_serve_without_torch_reports_a_missing_atlas(tmp_path: Path):
    done = subprocess.run([*NO_TORCH, "serve", "--atlas", str(tmp_path / "nowhere")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "no atlas at" in done.stderr and "atlascope precompute" in " ".join(done.stderr.split())


def test_serve_calls_an_index_that_is_not_a_database_damaged_and_answers_503(tmp_path: Path):
    """As precompute does (one word for one thing), and it serves what is readable: here nothing, each page a 503
    saying so, rather than a process that exits (and is restarted, and exits)."""
    import httpx

    from tests.conftest import free_port

    (tmp_path / "atlas.db").write_bytes(b"not sqlite at all" * 100)
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*NO_TORCH, "serve", "--atlas", str(tmp_path), "--port", str(port), "--workers", "1"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            assert proc.poll() is None, log.read_text()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/-/health", timeout=10)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert health.status_code == 503 and health.json()["status"] == "damaged", health.text
        page = httpx.get(f"http://127.0.0.1:{port}/.json", timeout=10)
        assert page.status_code == 503 and "is damaged" in page.json()["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    output = log.read_text()
    assert "is damaged (file is not a database)" in output and "not an atlas index" not in output


def test_precompute_without_torch_says_what_to_install(tmp_path: Path):
    done = subprocess.run([*NO_TORCH, "precompute", "tinyvision", "--atlas", str(tmp_path / "a")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "atlascope[precompute]" in done.stderr


def test_tasks_lists_builtin_and_user_tasks_without_torch(tmp_path: Path):
    from precompute.lm.tasks import TASKS

    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"prompt": "x = [1", "correct": "]", "wrong": "]]"}\n'
                    '{"prompt": "x = [[1", "correct": "]]", "wrong": "]"}\n')
    done = subprocess.run([*NO_TORCH, "tasks", "--json", "--jsonl", str(mine)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    listed = {task["name"]: task for task in json.loads(done.stdout)}
    assert list(listed) == [*TASKS, "mine"]  # the built-in ones in their order, then yours
    assert {"single_double_quote", "bracket_counting", "set_or_string"} <= set(TASKS)
    assert listed["mine"]["candidates"] == ["]", "]]"]
    for task in listed.values():  # every example answers one of its task's two candidates
        example = task["example"]
        assert sorted([example["correct"], example["wrong"]]) == sorted(task["candidates"])


@pytest.mark.parametrize("name", ["ONE_OR_MORE", "one_or_more"])
def test_tasks_lists_a_python_task_of_yours(name: str):
    done = subprocess.run([*NO_TORCH, "tasks", "--json", "--python", f"tests.user_task:{name}"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)  # found from the directory it runs in
    assert done.returncode == 0, done.stderr
    listed = {task["name"]: task for task in json.loads(done.stdout)}
    assert list(listed)[-1] == "one_or_more" and listed["one_or_more"]["candidates"] == ["]", ","]


@pytest.mark.parametrize("target, message", [
    ("tests.user_task", "name a task as package.module:NAME"),
    ("tests.nowhere:TASK", "cannot import 'tests.nowhere'"),
    ("tests.user_task:MISSING", "has no 'MISSING'"),
    ("tests.user_task:NOT_A_TASK", "is a int, not a precompute.lm.tasks.Task"),
])
def test_tasks_refuses_a_bad_python_task(target: str, message: str):
    done = subprocess.run([*NO_TORCH, "tasks", "--python", target], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_tasks_refuses_a_bad_task_file(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x = [1", "correct": "]"}\n')
    done = subprocess.run([*NO_TORCH, "tasks", "--jsonl", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: task file {bad}") and "Traceback" not in done.stderr


def table_rows(printed: str) -> list[list[str]]:
    """The cells of each body row of a table as `atlascope` prints it (rich's box: rows between │ bars)."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in printed.splitlines() if line.startswith("│")]


@pytest.mark.parametrize("command", ["layers", "precompute"])
def test_help_keeps_text_in_square_brackets(command: str):
    """Help is printed as written: read as rich markup, "its [input] size" lost "[input]" as a tag."""
    done = subprocess.run([*NO_TORCH, command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "[input]" in done.stdout


@pytest.mark.parametrize("command, key", [("tasks", "name"), ("models", "slug")])
def test_tables_piped_keep_every_name_whole(command: str, key: str):
    """Piped (stdout is not a terminal), a listing is as wide as its rows: one line a row, and no name is cut to fit
    80 columns ("single_double_qu…")."""
    listed = subprocess.run([*NO_TORCH, command, "--json"], capture_output=True, text=True, timeout=60)
    table = subprocess.run([*NO_TORCH, command], capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert [row[0] for row in table_rows(table.stdout)] == [row[key] for row in json.loads(listed.stdout)]
    assert "…" not in table.stdout


def test_layers_table_piped_keeps_its_bracketed_header_and_modules():
    """The layers table's header says what its shape column holds, "[c, h, w]" included, and every module is whole."""
    layers = [sys.executable, "-m", "precompute.cli", "layers", "--model", "tests.user_model:small_cnn"]
    listed = subprocess.run([*layers, "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    table = subprocess.run(layers, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert table.returncode == 0, table.stderr
    assert "output [c, h, w]" in table.stdout
    assert [row[0] for row in table_rows(table.stdout)] == [row["module"] for row in json.loads(listed.stdout)]
