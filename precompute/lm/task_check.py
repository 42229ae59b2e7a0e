"""A task checked before a run writes anything, so that a task the circuits stage cannot prune fails with one line
at the start instead of a traceback minutes into the run.

A circuit's task must have candidates that are single tokens of the tokenizer the circuit is found with (the task
loss compares two logits), and as many distinct prompts in its pruning and evaluation splits as a run draws from
them. Both are checked by doing what the stage does first: encoding the candidates and drawing the splits. No torch.
"""

from __future__ import annotations

from tokenizers import Tokenizer

from precompute.lm.tasks import Task, contrastive_split, split


def check_candidates(task: Task, tokenizer: Tokenizer) -> None:
    """ValueError naming each candidate of ``task`` that is not one token of ``tokenizer``."""
    problems = []
    for text in task.candidates:
        encoding = tokenizer.encode(text, add_special_tokens=False)
        if len(encoding.ids) != 1:
            problems.append(f"candidate {text!r} is {len(encoding.ids)} tokens {encoding.tokens}, not one")
    if problems:
        raise ValueError(f"task {task.name!r}: {'; '.join(problems)} of the tokenizer its circuit is found with; "
                         f"choose candidate texts that are single tokens (`atlascope tasks` lists the built-in "
                         f"tasks' candidates)")


def check_splits(task: Task, prune_pairs: int, eval_pairs: int, seed: int) -> None:
    """ValueError unless ``task`` yields the ``prune_pairs`` contrastive pruning pairs and ``eval_pairs`` held-out
    pairs a circuit run with ``seed`` draws (``precompute.lm.circuits.CircuitConfig``, ``find_circuit``)."""
    try:
        contrastive_split(task, "prune", prune_pairs, seed)
        split(task, "eval", eval_pairs, seed)
    except ValueError as exc:
        raise ValueError(f"{exc}: a circuit run draws {prune_pairs} pruning pairs and {eval_pairs} held-out pairs, "
                         f"each split from its own prompts (about half of a file's lines each); give the task more "
                         f"distinct prompts") from None
