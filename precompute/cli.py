"""The `atlascope` command. Torch is imported only by the commands that render, so `models` and `serve` work on a
base install."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from precompute.lm.openai_checkpoint import CheckpointError
from precompute import search_index
from precompute.plan import PlanError, parse_units, select
from precompute.registry import DEFAULT_MODEL, OPENAI_CSP, REGISTRY, WeightsError, get_model
from precompute import export_command
from store.keys import CardKey, ModelKind

# Help is printed as written (rich_markup_mode=None): rich markup would take "[input]" in a help text for a tag
app = typer.Typer(help="Build and serve an atlas of what the units of neural networks compute.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  rich_markup_mode=None)
err = Console(stderr=True, soft_wrap=True)  # messages stay greppable, unwrapped
PIPED_WIDTH = 10_000  # a table printed to a pipe or a file: as wide as its widest row, which is far less
FEATVIS = {"steps": 512, "batch_size": 32}  # `precompute`'s feature visualisation defaults


def names_table(name: str, *headers: str, title: str | None = None) -> Table:
    """A listing whose first column is names (slugs, modules, tasks), which are never wrapped or cut: the other
    columns wrap first."""
    return Table(Column(name, no_wrap=True), *headers, title=title)


def print_table(table: Table) -> None:
    """Print a listing whole, its text as written (without rich markup, which would take "[c, h, w]" for a tag). In a
    terminal the table fits its width; piped it is as wide as its rows, so no name is cut and each row is one line
    (rich would otherwise fit it to 80 columns, cutting names short with "…")."""
    console = Console(markup=False)
    if not sys.stdout.isatty():
        console.width = PIPED_WIDTH
    console.print(table)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


@contextmanager
def _atlas_failures(atlas: Path) -> Iterator[None]:
    """What the atlas's environment did (damage, permissions, a full disk) or why it was refused, as one `error:`
    line and exit code 2 instead of a traceback."""
    from sqlalchemy.exc import DBAPIError

    from store import AtlasError
    from store.errors import classify

    try:
        yield
    except (AtlasError, OSError, DBAPIError) as exc:
        failure = classify(exc, atlas)
        raise fail(failure.message if failure else str(exc)) from None


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the registered models: slug, kind, layers, units and where the weights come from."""
    summaries = [spec.summary() for spec in REGISTRY.values()]
    if as_json:
        typer.echo(json.dumps(summaries, indent=2))
        return
    table = names_table("slug", "kind", "layers", "units", "weights")
    for s in summaries:
        table.add_row(s["slug"], s["kind"], ", ".join(l["name"] for l in s["layers"]), str(s["units"]), s["source"])
    print_table(table)


@app.command("layers")
def list_layers(
    model: str = typer.Option(..., "--model", help="package.module:factory, torchvision:NAME or timm:NAME."),
    card: Optional[Path] = typer.Option(None, "--card", help="A TOML model card (its [input] size is used)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List a model's candidate layers (convolutions and blocks with image-shaped outputs: their output shapes and
    unit counts), marking those `precompute --model` takes when the card names none. Untrained: no weights needed."""
    _require_torch()
    from precompute.user_model import UserModelError, architecture, candidates, default_layers, default_preprocess
    from precompute.user_model import preprocess_from, read_card

    try:
        net = architecture(model)
        preprocess = preprocess_from(read_card(card) if card else {}, default_preprocess(model, net))
        found = candidates(net, preprocess.size)
    except UserModelError as exc:
        raise fail(str(exc)) from None
    chosen = {c.module for c in default_layers(found)}
    rows = [{"module": c.module, "type": c.type, "kind": c.kind, "shape": list(c.shape), "units": c.units,
             "default": c.module in chosen} for c in found]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = names_table("module", "type", "kind", "output [c, h, w]", "units", "default",
                        title=f"{model} at {preprocess.size} px: {len(rows)} candidate layers")
    for row in rows:
        table.add_row(row["module"], row["type"], row["kind"], "x".join(map(str, row["shape"])), str(row["units"]),
                      "*" if row["default"] else "")
    print_table(table)


@app.command()
def tasks(
    jsonl: list[Path] = typer.Option([], "--jsonl", help="A file of {prompt, correct, wrong} lines: a task of yours, "
                                                          "checked and listed with the built-in ones (repeatable)."),
    python: list[str] = typer.Option([], "--python", help="A task of yours in Python, package.module:NAME (a Task or "
                                                           "a function returning one), checked and listed (repeatable)."),
    model: Optional[str] = typer.Option(None, "--model", help="A language model whose circuits your tasks are for "
                                                               "(tinylm-sparse, tinylm-dense, openai-csp): check "
                                                               "them against its tokenizer, and that they have the "
                                                               "pairs a circuit run draws."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="--model openai-csp: the released model's "
                                                                    "directory, whose tokenizer is checked against."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the binary next-token tasks language models are scored and pruned on, with an example prompt each."""
    from precompute.lm.tasks import TASKS

    found = dict(TASKS)
    mine = _user_tasks(jsonl, python)
    if model is not None:
        try:
            spec = get_model(model, weights)
        except (KeyError, CheckpointError) as exc:
            raise fail(exc.args[0]) from None
        _check_tasks(mine, spec)
    for task in mine:
        found[task.name] = task
    listed = [{"name": task.name, "candidates": list(task.candidates), "description": task.description,
               "example": {"prompt": pair.prompt, "correct": pair.correct, "wrong": pair.wrong}}
              for task in found.values() for pair in task.pairs(0, 1)]
    if as_json:
        typer.echo(json.dumps(listed, indent=2))
        return
    table = names_table("task", "candidates", "description", "example prompt (its end)")
    for t in listed:
        table.add_row(t["name"], " vs ".join(repr(c) for c in t["candidates"]), t["description"],
                      repr(t["example"]["prompt"][-48:]))
    print_table(table)


def _user_tasks(files: list[Path], targets: list[str]) -> list:
    """Tasks from JSONL files and from Python (``package.module:NAME``); a bad one fails with exit code 2."""
    from precompute.lm.tasks import Task, load_task

    found = []
    for path in files:
        try:
            found.append(Task.from_jsonl(path))
        except (OSError, ValueError) as err:
            raise fail(f"task file {path}: {err}") from None
    for target in targets:
        try:
            found.append(load_task(target))
        except ValueError as err:
            raise fail(f"task {err}") from None
    return found


def _tokenizer(spec):
    """The language model's own tokenizer; exit code 2 when the model reads no text or its files cannot be read."""
    if spec.tokenizer is None:
        raise fail(f"--model {spec.slug}: tasks are for language models; {spec.slug} reads no text")
    try:
        return spec.load_tokenizer()
    except CheckpointError as exc:
        raise fail(str(exc)) from None


def _check_tasks(tasks: list, spec, config=None) -> None:
    """Exit code 2 unless each task can be pruned for the model ``spec`` with ``config`` (a CircuitConfig; None: the
    defaults, where torch is installed to read them, else only the candidates are checked): its candidates single
    tokens of the model's own tokenizer (``precompute.lm.task_check.candidate_ids``), its splits as large as the run
    draws."""
    from precompute.lm.task_check import candidate_ids, check_splits

    if config is None:
        try:
            from precompute.lm.circuits import CircuitConfig
        except ImportError:  # a base install: the candidates are what can be checked
            pass
        else:
            config = CircuitConfig()
    tokenizer = _tokenizer(spec)
    for task in tasks:
        try:
            candidate_ids(task, tokenizer)
            if config is not None:
                check_splits(task, config.prune_pairs, config.eval_pairs, config.prune.seed)
        except ValueError as exc:
            raise fail(f"{exc} (model {spec.slug})") from None


def _readable_tasks(spec) -> tuple | None:
    """The registered tasks whose candidates the model's tokenizer reads as single tokens, when no task was named:
    None (every one) when all are, else those, with a note naming the others and why."""
    from precompute.lm.task_check import candidate_ids
    from precompute.lm.tasks import TASKS

    tokenizer = _tokenizer(spec)
    readable = []
    for task in TASKS.values():
        try:
            candidate_ids(task, tokenizer)
            readable.append(task)
        except ValueError as exc:
            err.print(f"note: no circuit for {task.name}: {exc}", markup=False)
    return None if len(readable) == len(TASKS) else tuple(readable)


def _chosen_tasks(names: str | None, files: list[Path]) -> tuple | None:
    """The tasks ``--tasks`` names (None: every registered one; 'none': no circuits; ``package.module:NAME``: one of
    yours in Python) plus those of ``--task-file``."""
    from precompute.lm.tasks import TASKS

    if names is None and not files:
        return None
    chosen = [] if names in (None, "none") else names.split(",")
    python = [name for name in chosen if ":" in name]
    if unknown := [name for name in chosen if name not in TASKS and name not in python]:
        raise fail(f"unknown task(s) {unknown}; `atlascope tasks` lists them: {', '.join(TASKS)}; a task of yours "
                   f"in Python is named package.module:NAME")
    return tuple([TASKS[name] for name in chosen if name in TASKS] + _user_tasks(files, python))


@app.command()
def verify(
    atlas: Path = typer.Option(..., "--atlas", help="Atlas directory to check (read-only)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    """Check an atlas without writing to it: its index, every blob against its sha256, and nothing left over. Exit
    code 1 lists the problems; works while a precompute writes."""
    from store.verify import verify_atlas

    with _atlas_failures(atlas):
        report = verify_atlas(atlas)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        typer.echo("\n".join(report.lines()))
    raise typer.Exit(1 if report.problems else 0)


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise fail("precomputing needs torch: pip install 'atlascope[precompute]'") from None


def _device(name: str) -> str:
    """The device ``--device`` names, checked: cpu, cuda or cuda:N that torch sees, or auto; exit code 2 otherwise."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise fail(f"--device {name!r}: choose cpu, cuda, cuda:N or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise fail(f"device {name!r} asked for, but torch sees no CUDA device; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise fail(f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s): "
                       f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return name


@app.command()
def precompute(
    slug: Optional[str] = typer.Argument(None, help="Model to precompute (see `atlascope models`); or --model."),
    atlas: Path = typer.Option(..., "--atlas", help="Atlas directory (created if missing)."),
    model: Optional[str] = typer.Option(None, "--model", help="Vision: a model of yours instead of SLUG: "
                                                              "package.module:factory, torchvision:NAME or timm:NAME."),
    card: Optional[Path] = typer.Option(None, "--card", help="--model: a TOML model card (title, description, "
                                                             "[input], layers)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="An organism's weights file (or its folder); "
                                                                    "--model: your checkpoint; openai-csp: the "
                                                                    "released model's directory, or the download "
                                                                    "of openai/circuit-sparsity holding it."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Organisms and --model: seeded random "
                                                                        "weights, labelled untrained everywhere."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layer names (default: all)."),
    units: Optional[str] = typer.Option(None, help="Vision: units of each layer, e.g. 0-15,20 (default: all)."),
    tokens: Optional[int] = typer.Option(None, help="Language: held-out tokens to read, from the start (default: "
                                                    "the whole sample), in whole 128-token contexts; circuits' "
                                                    "ablation means are taken over them too."),
    steps: int = typer.Option(FEATVIS["steps"], min=1, help="Vision: optimisation steps per image."),
    size: Optional[int] = typer.Option(None, min=8, help="Vision: image side in pixels (default: the model's input "
                                                          "size)."),
    lr: Optional[float] = typer.Option(None, min=0.0, help="Vision: Adam learning rate (default: lucid's 0.05 from "
                                                           "128 px up, 0.1 below)."),
    objectives: Optional[str] = typer.Option(None, help="Vision: comma-separated: channel (default), neuron."),
    precision: str = typer.Option("float32", help="Vision: the network's precision while feature visualisations "
                                                  "optimise: float32, or bfloat16 (about 1.4x faster at 224 px on "
                                                  "CPUs with AMX or AVX-512 BF16, and on GPUs; the last quarter of "
                                                  "the steps stays float32: bench/render_precision.py)."),
    batch_size: int = typer.Option(FEATVIS["batch_size"], min=1, help="Vision: units rendered together."),
    seed: int = typer.Option(0, help="Seeds feature visualisations, random weights, the draw of random contexts, "
                                     "and pruning."),
    tasks: Optional[str] = typer.Option(None, help="Language: comma-separated tasks to find circuits for (default: "
                                                   "every one `atlascope tasks` lists, or none with --layers; 'none' "
                                                   "for no circuits; package.module:NAME for one of yours)."),
    task_file: list[Path] = typer.Option([], "--task-file", help="Language: a JSONL task of yours (see `atlascope "
                                                                  "tasks --jsonl`), pruned too (repeatable)."),
    target_loss: Optional[float] = typer.Option(None, min=0.0, help="Language: the task loss a circuit must reach "
                                                                    "on its pruning pairs (default: the paper's 0.15)."),
    prune_steps: Optional[int] = typer.Option(None, min=1, help="Language: mask-training steps per circuit "
                                                                "(default: render.pruning.PruneConfig's)."),
    k_coef: Optional[float] = typer.Option(None, min=0.0, help="Language: pruning's penalty per kept node (default: "
                                                               "render.pruning.PruneConfig's)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Vision: a folder of JPEG/PNG images to rank "
                                                                   "units' dataset examples on, flat or one subfolder "
                                                                   "per class (default: the model's built-in set)."),
    caricature: list[Path] = typer.Option([], "--caricature", help="Vision: an image to caricature at every chosen "
                                                                   "layer, shown on the layer page (repeatable)."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    force: bool = typer.Option(False, "--force", help="Redo what the atlas already has of the selection and replace "
                                                      "it."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Fail if another precompute writes to the atlas, instead "
                                                          "of waiting for it."),
    blobs: Optional[str] = typer.Option(None, "--blobs", help="Keep the atlas's images in an object store, e.g. "
                                                              "s3://bucket/prefix (needs atlascope[s3]; endpoint and "
                                                              "credentials from AWS_ENDPOINT_URL and the usual AWS "
                                                              "variables). Given when the atlas is made, recorded in "
                                                              "its index; later runs, serve and verify find it there. "
                                                              "Default: the atlas directory's blobs/."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Vision: print the plan (units, batches, time at a rate "
                                                          "measured on this machine) and stop; writes nothing."),
) -> None:
    """Precompute a model's atlas: dataset examples, weights, layer views and feature visualisations (vision), or token
    contexts, statistics, weights and task circuits (language). Resumable: rerun the same command after an
    interrupt."""
    spec = _chosen_model(slug, model, card, weights, random_weights, seed)
    try:
        if not spec.layers:
            raise fail(f"{spec.slug} has no layers to precompute: its weights and card are not there yet "
                       f"({spec.source})")
        selection = select(spec, layers.split(",") if layers else None, parse_units(units) if units else None)
    except PlanError as exc:
        raise fail(exc.args[0]) from None
    language = spec.kind == ModelKind.LANGUAGE
    if language and (units or objectives):
        raise fail(f"{'--units' if units else '--objectives'} is for feature visualisations; a language model's "
                   f"layers are measured whole: choose them with --layers")
    if not language and tokens is not None:
        raise fail("--tokens is for language models; a vision model's sample is its held-out images")
    if language and (dataset or caricature):
        raise fail("--dataset and --caricature are for vision models; a language model reads its held-out text")
    if not language and dataset is None and spec.examples is None and not dry_run:
        raise fail(f"{spec.slug} has no built-in dataset (ImageNet and Places365 cannot be fetched here): pass "
                   f"--dataset DIR, a folder of JPEG/PNG images (flat, or one subfolder per class), to rank its "
                   f"units' dataset examples and measure their statistics")
    images = _dataset(dataset, spec.preprocess) if dataset else None
    inputs = _caricature_inputs(caricature, spec.preprocess)
    if not language and (tasks or task_file or (target_loss, prune_steps, k_coef) != (None, None, None)):
        raise fail("--tasks, --task-file, --target-loss, --prune-steps and --k-coef are for language models' circuits")
    if language and dry_run:
        raise fail("--dry-run plans feature visualisations; a language model's run is one pass over its sample")
    chosen_tasks = _chosen_tasks(tasks, task_file) if language else None
    if language and layers and chosen_tasks is None:
        chosen_tasks = ()  # a circuit spans every layer: a run of some layers finds circuits only when --tasks asks
    if language and (steps, size, lr, batch_size, precision) != (FEATVIS["steps"], None, None, FEATVIS["batch_size"],
                                                                "float32"):
        err.print("note: --steps, --size, --lr, --batch-size and --precision set feature visualisations; a language "
                  "model has none")
    _require_torch()
    from precompute import job

    if language:
        from precompute.stages.contexts import CONTEXT, ContextsConfig

        try:
            available = len(spec.dataset_sample().tokens) if tokens is not None else 0
        except WeightsError as exc:  # a released model's tokenizer files that cannot be read
            raise fail(str(exc)) from None
        if tokens is not None and not CONTEXT <= tokens <= available:
            raise fail(f"--tokens {tokens}: choose from {CONTEXT} (one context) to {available:,} (the whole "
                       f"held-out sample)")
        from precompute.lm.circuits import CircuitConfig
        from render.pruning import PruneConfig

        given = {"steps": prune_steps, "k_coef": k_coef, "target_loss": target_loss}
        prune = PruneConfig(seed=seed, **{key: value for key, value in given.items() if value is not None})
        # the ablation means are over the held-out text the run reads: all of it, or the first --tokens (in windows of
        # the model's context)
        block_size = spec.card()[CardKey.ARCHITECTURE]["block_size"]
        circuits = CircuitConfig(prune=prune, mean_windows=None if tokens is None else max(1, tokens // block_size))
        if chosen_tasks is None:
            chosen_tasks = _readable_tasks(spec)
        if chosen_tasks:  # each task can be pruned, or the run stops here, before writing anything
            _check_tasks(list(chosen_tasks), spec, circuits)
        request = job.Request(spec, atlas, selection, contexts=ContextsConfig(tokens=tokens, seed=seed),
                              circuits=circuits, tasks=chosen_tasks, device=_device(device),
                              force=force, wait=not no_wait, blobs=blobs)
    else:
        from render.fast_forward import PRECISIONS, bfloat16_refusal
        from render.featvis import OBJECTIVES, RenderConfig, default_lr

        chosen = (objectives or "channel").split(",")
        if unknown := set(chosen) - set(OBJECTIVES):
            raise fail(f"unknown objective(s) {sorted(unknown)}; choose from {', '.join(OBJECTIVES)}")
        if precision not in PRECISIONS:
            raise fail(f"--precision {precision}: choose from {', '.join(PRECISIONS)}")
        if precision == "bfloat16" and (refusal := bfloat16_refusal(_device(device))):
            raise fail(refusal)
        side = size or spec.preprocess.size
        config = RenderConfig(steps=steps, size=side, seed=seed, lr=lr if lr is not None else default_lr(side),
                              precision=precision)
        if dry_run:
            from precompute.estimate import print_plan

            print_plan(spec, selection, chosen, config, batch_size, _device(device), err)
            return
        from precompute.datasets.images import to_tensor
        from precompute.stages.layer_views import Input
        from render.layer_views import ViewConfig

        request = job.Request(spec, atlas, selection, chosen, config, batch_size, dataset=images,
                              caricatures=tuple(Input(name, to_tensor(image[None])[0]) for name, image in inputs),
                              views=ViewConfig(steps=steps, size=spec.preprocess.size, seed=seed),
                              device=_device(device), force=force, wait=not no_wait, blobs=blobs)
    _run_precompute(request)


def _chosen_model(slug: str | None, target: str | None, card: Path | None, weights: Path | None,
                  random_weights: bool, seed: int):
    """The spec to precompute: a registered model (an organism with its weights found and checked, or seeded
    random ones), or a user's ``--model`` with its layers discovered; exit code 2 with the reason otherwise."""
    
    if (slug is None) == (target is None):
        raise fail("name one model: a registered SLUG (`atlascope models`) or --model package.module:factory | "
                   "torchvision:NAME | timm:NAME")
    if card is not None and target is None:
        raise fail("--card describes a model of yours given with --model")
    try:
        if target is not None:
            _require_torch()
            from precompute.user_model import UserModelError, user_spec

            try:
                return user_spec(target, weights, card, random_weights, seed)
            except UserModelError as exc:
                raise fail(str(exc)) from None
        spec = get_model(slug, weights)
        if slug == OPENAI_CSP.slug:  # a released checkpoint: its card (sparsity, sha256s) is measured from its files
            _require_torch()
            from precompute.lm.openai_checkpoint import card

            return replace(spec, card_data=card(spec.weights))
        if spec.weights_source is not None:
            _require_torch()
            from precompute.weights import resolved

            return resolved(spec, weights, random_weights, seed)
        if random_weights:
            raise fail(f"--random-weights is for the registered organisms with published weights and for --model; "
                       f"{slug} comes with its own")
        return spec
    except (KeyError, CheckpointError) as exc:
        raise fail(exc.args[0]) from None
    except WeightsError as exc:
        raise fail(str(exc)) from None


def _dataset(path: Path, preprocess):
    """The folder's images, checked (exit code 2 on a missing path, a file, a folder without images); unreadable
    files are skipped and counted."""
    from precompute.datasets.images import DatasetError, scan_folder

    try:
        found = scan_folder(path, preprocess)
    except DatasetError as exc:
        raise fail(str(exc)) from None
    skipped = f"; {len(found.skipped)} unreadable file(s) skipped: {', '.join(found.skipped[:5])}" \
        f"{' …' if len(found.skipped) > 5 else ''}" if found.skipped else ""
    err.print(f"dataset {found.name}: {len(found):,} images ({found.layout}){skipped}")
    return found


def _caricature_inputs(paths: list[Path], preprocess) -> list[tuple[str, object]]:
    """Each ``--caricature`` image as the model's input ([size, size, 3] uint8), named by its file's stem; exit code
    2 for one that cannot be read or two with the same stem."""
    if not paths:
        return []
    from precompute.datasets.images import UNREADABLE, load

    inputs = []
    for path in paths:
        try:
            inputs.append((path.stem, load(path, preprocess)))
        except UNREADABLE as exc:
            raise fail(f"--caricature {path}: not a readable image ({exc})") from None
    if len(names := [name for name, _ in inputs]) != len(set(names)):
        raise fail(f"--caricature inputs need different file names (stems): {', '.join(names)}")
    return inputs


def _run_precompute(request, on_ready: Callable[[], None] = lambda: None) -> None:
    """Run the job (a ``precompute.job.Request``), reporting its progress (``precompute.reporting``: live bars on a
    terminal, plain lines in a log). ``on_ready()`` is called once the atlas holds the model's layers and units (so
    every page of it resolves), before the slow part starts."""
    from precompute import job
    from precompute.reporting import reporter

    spec, atlas = request.spec, request.atlas
    language = spec.kind == ModelKind.LANGUAGE
    counted, verb, done = ("units", "measure", "measured") if language else ("images", "render", "rendered")
    try:  # failures are reported after the progress bar has stopped, so the error is the last line
        with _atlas_failures(atlas), reporter(err, spec.slug, counted, verb, request.device, atlas,
                                              on_ready) as report:
            made = job.run(request, **report.callbacks())
    except KeyboardInterrupt:
        raise fail("interrupted; finished work is saved. Run the same command again to resume.", 130) from None
    except WeightsError as exc:
        raise fail(str(exc)) from None
    err.print(f"{spec.slug}: {made} {counted} {done} into {atlas}; browse with `atlascope serve --atlas {atlas}`")


def _default_workers() -> int:
    """One server process per CPU this process may run on (the page cache is per process), at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


@app.command()
def serve(
    atlas: Path = typer.Option(Path("atlas"), "--atlas", help="Atlas directory to serve (read-only)."),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000, min=0, max=65535),
    workers: int = typer.Option(_default_workers(), min=1, help="Server processes (default: one per CPU, max 8)."),
) -> None:
    """Serve an atlas over HTTP (no torch needed). Reads while a precompute writes; never writes."""
    import uvicorn

    from server.app import create_app
    from server.http import CappedHeadProtocol
    from store import AtlasError

    try:
        web = create_app(atlas)  # fails here, once, on a missing or foreign atlas, before any worker starts
    except AtlasError as exc:
        raise fail(str(exc)) from None
    check = web.state.check
    if check.problem:
        err.print(f"[bold yellow]warning:[/] {escape(check.problem)}; serving what is readable, /-/health answers 503")
    elif check.pending:  # busy or interrupted: workers start all the same, and answer 503 until it is readable
        err.print(f"[bold yellow]warning:[/] {escape(check.pending.message)}; serving all the same: pages answer 503 "
                  f"until the index can be read")
    err.print(f"serving {atlas} at http://{host}:{port}/ ({workers} worker{'s' if workers > 1 else ''})")
    options = {"host": host, "port": port, "log_level": "warning", "access_log": False, "http": CappedHeadProtocol}
    if workers == 1:
        uvicorn.run(web, **options)
    else:  # each worker builds its own app through the factory, from the same settings
        os.environ["ATLASCOPE_ATLAS"] = str(atlas.resolve())
        # uvicorn kills a worker that has not answered its health check in 5 s, and a worker still importing on
        # busy cores has not: it would restart workers forever, never serving. Give them a minute.
        uvicorn.run("server.app:create_app", factory=True, workers=workers, timeout_worker_healthcheck=60, **options)


# `atlascope index --atlas DIR`: the search index for an atlas made before search existed (torch-free; every
# precompute also indexes what it wrote, as its last stage)
app.command("index")(search_index.main)
# `atlascope export static|parquet DIR`: the atlas as a static site or as Parquet tables (torch-free: the command in
# precompute/export_command.py, what it writes in server/export/)
app.command("export")(export_command.main)

# The demo's models in the order they are filled: the language organisms first (a few minutes each, with their quote
# circuits), then TinyVision's feature visualisations, which take the longest.
DEMO_MODELS = ("tinylm-sparse", "tinylm-dense", DEFAULT_MODEL)
# The circuits the demo finds: the quote task, the paper's first circuit (87% and 80% for the two organisms). The
# others (74-94%) take about 4 minutes each per model to sweep on two cores; `atlascope precompute tinylm-sparse
# --atlas atlas` adds them.
DEMO_TASKS = ("single_double_quote",)


@app.command()
def demo(
    atlas: Path = typer.Option(Path("atlas"), "--atlas", help="Where to build the demo atlas."),
    steps: int = typer.Option(128, min=1, help="Optimisation steps per image."),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000, min=0, max=65535),
    device: str = typer.Option("auto"),
    workers: int = typer.Option(_default_workers(), min=1, help="Server processes."),
) -> None:
    """Serve the embedded organisms' atlas at once and fill it while serving (resuming if it exists): both language
    organisms' contexts, statistics, weights and task circuits, then TinyVision's dataset examples, weights, layer
    views (DeepDream, a caricature of a photo) and feature visualisations; keep serving when it is complete, until
    Ctrl-C."""
    _require_torch()
    from precompute import job
    from precompute.datasets.images import to_tensor
    from precompute.lm.circuits import recorded
    from precompute.lm.tasks import TASKS
    from precompute.loaders import demo_caricature_input
    from precompute.stages.layer_views import Input
    from render.featvis import RenderConfig

    specs = [get_model(slug) for slug in DEMO_MODELS]
    for spec in specs:
        if not spec.layers:
            err.print(f"note: {spec.slug} has no committed weights and card yet ({spec.source}); the demo skips it")
    specs = [spec for spec in specs if spec.layers]
    device = _device(device)
    demo_tasks = tuple(TASKS[name] for name in DEMO_TASKS)
    caricature = Input("chelsea", to_tensor(demo_caricature_input()[None])[0])
    requests = [job.Request(spec, atlas, select(spec, None, None), tasks=demo_tasks, circuits=recorded(spec.slug),
                            device=device)  # the sweep's recorded setting per task: each circuit prunes once
                if spec.kind == ModelKind.LANGUAGE
                else job.Request(spec, atlas, select(spec, None, None), ["channel", "neuron"],
                                 RenderConfig(steps=steps), 32, caricatures=(caricature,), device=device)
                for spec in specs]
    server: subprocess.Popen | None = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server child too, as for Ctrl-C

    def start_server() -> None:
        nonlocal server
        server = subprocess.Popen([sys.executable, "-m", "precompute.cli", "serve", "--atlas", str(atlas),
                                   "--host", host, "--port", str(port), "--workers", str(workers)])
        err.print(f"browse http://{host}:{port}/ now: pages fill in layer by layer as the job renders them")

    try:
        with _atlas_failures(atlas):  # every model's pages resolve from the start, filled or not
            for spec in specs:
                job.register(spec, atlas)
        start_server()
        for request in requests:
            _run_precompute(request)
            if server.poll() is not None:
                raise fail(f"the server stopped (exit code {server.returncode}); see its message above")
        err.print(f"the demo atlas is complete; serving http://{host}:{port}/ until Ctrl-C")
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    app()
