"""A task read in one model's tokenizer, and a task checked before a run writes anything, so that a task the circuits
stage cannot prune fails with one line at the start instead of a traceback minutes into the run.

A task is text; its candidates must each be one token of the tokenizer of the model it is scored on or pruned for
(the task loss compares two logits), possibly in one of the task's other ``forms``; and its pruning and evaluation
splits must have as many distinct prompts as a run draws from them. Both are checked by doing what the stage does
first: reading the candidates' tokens and drawing the splits. No torch.
"""

from __future__ import annotations

from tokenizers import Tokenizer

from precompute.lm.tasks import Task, contrastive_split, split
from precompute.lm.tokenizer import token_texts


def candidate_ids(task: Task, tokenizer: Tokenizer) -> dict[str, int]:
    """Each of ``task``'s candidate texts -> the token the task loss reads for it in ``tokenizer``: the first of the
    task's ``forms`` whose two texts are single tokens there, else the candidates themselves. ValueError naming the
    task, each candidate that is not one token and how the tokenizer splits it, when neither is."""
    for form in (*task.forms, task.candidates):
        ids = [tokenizer.encode(text, add_special_tokens=False).ids for text in form]
        if all(len(token) == 1 for token in ids):
            return {candidate: token[0] for candidate, token in zip(task.candidates, ids)}
    split_up = []
    for text in task.candidates:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        if len(ids) != 1:
            pieces = " + ".join(map(repr, token_texts(tokenizer, ids)))
            split_up.append(f"candidate {text!r} is {len(ids)} tokens ({pieces})")
    forms = f" (nor is each of its forms {', '.join(' / '.join(map(repr, form)) for form in task.forms)} one token)" \
        if task.forms else ""
    raise ValueError(f"task {task.name!r}: {'; '.join(split_up)} in this model's tokenizer, not one{forms}; the task "
                     f"loss compares two single tokens: choose candidate texts that are single tokens (`atlascope "
                     f"tasks` lists the built-in tasks' candidates)")


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
