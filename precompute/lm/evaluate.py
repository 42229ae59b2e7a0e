"""Scoring language models: the paper's task loss on binary next-token pairs, and held-out loss on token streams.

The task loss (shared/anchors.md) looks at the last position only and at two logits only: cross-entropy of the
log-softmax over the correct and the wrong candidate. It measures which of the two the model prefers, not how much
probability it spends elsewhere, which is what circuit pruning must preserve.

Prompts are batched with right padding: the model is causal, so tokens after a prompt's end cannot change its logits
there, and without position embeddings (or with them: a prompt's tokens keep their positions) reading each prompt's
own last position gives exactly what the prompt alone would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from precompute.lm.task_check import candidate_ids
from precompute.lm.tasks import Pair, Task
from precompute.lm.tokenizer import EOT


@dataclass(frozen=True)
class PairBatch:
    """Pairs as one right-padded batch: ``tokens`` [N, T], each row's ``last`` position [N], and the ``correct`` and
    ``wrong`` candidate ids [N]."""

    tokens: torch.Tensor
    last: torch.Tensor
    correct: torch.Tensor
    wrong: torch.Tensor

    def take(self, rows: torch.Tensor) -> PairBatch:
        """Those rows, trimmed to the longest of their prompts."""
        return PairBatch(self.tokens[rows, :int(self.last[rows].max()) + 1], self.last[rows], self.correct[rows],
                         self.wrong[rows])


def encode_pairs(tokenizer: Tokenizer, task: Task, pairs: list[Pair]) -> PairBatch:
    """Each prompt after ``<|endoftext|>`` (where documents start in the training stream, so the model reads it as the
    start of a file), right-padded with that token into one batch; the candidates as ``candidate_ids`` reads them in
    ``tokenizer``."""
    eot = tokenizer.token_to_id(EOT)
    rows = [[eot, *e.ids] for e in tokenizer.encode_batch([p.prompt for p in pairs], add_special_tokens=False)]
    tokens = torch.full((len(rows), max(map(len, rows), default=1)), eot, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row)
    ids = candidate_ids(task, tokenizer)
    return PairBatch(tokens, torch.tensor([len(row) - 1 for row in rows]),
                     torch.tensor([ids[p.correct] for p in pairs]), torch.tensor([ids[p.wrong] for p in pairs]))


def by_length(batch: PairBatch, size: int) -> list[tuple[torch.Tensor, PairBatch]]:
    """The batch cut into parts of at most ``size`` rows of similar length, each trimmed to its longest prompt so
    little compute goes to padding: (row indices into ``batch``, part)."""
    return [(rows, batch.take(rows)) for rows in torch.argsort(batch.last, stable=True).split(size)]


def candidate_logits(model: nn.Module, batch: PairBatch) -> torch.Tensor:
    """[N, 2]: the correct and the wrong candidate's logit at each prompt's last position (the model unembeds that
    position alone)."""
    device = next(model.parameters()).device
    at_last = model(batch.tokens.to(device), at=batch.last.to(device))  # [N, V]
    rows = torch.arange(len(batch.last), device=device)
    return torch.stack([at_last[rows, batch.correct.to(device)], at_last[rows, batch.wrong.to(device)]], dim=1)


def task_loss(two: torch.Tensor) -> torch.Tensor:
    """The paper's task loss from [N, 2] (correct, wrong) logits: mean of -log softmax(correct, wrong)[correct].
    Differentiable, for pruning."""
    return -F.log_softmax(two.float(), dim=1)[:, 0].mean()


def task_metrics(model: nn.Module, tokenizer: Tokenizer, task: Task, pairs: list[Pair],
                 batch_size: int = 256) -> dict[str, float | int]:
    """Accuracy (the correct candidate's logit strictly higher) and task loss of ``model`` on ``pairs``.

    Pairs go through the model sorted by token length, ``batch_size`` at a time, so each batch pads little; with the
    default, the few hundred pairs of a split take one forward pass."""
    candidate_ids(task, tokenizer)  # a candidate that is not one token fails here, before the pairs are looked at
    if not pairs:
        raise ValueError(f"task {task.name!r}: no pairs to evaluate")
    batch = encode_pairs(tokenizer, task, pairs)
    two = torch.empty(len(pairs), 2)
    with torch.inference_mode():
        for rows, part in by_length(batch, batch_size):
            two[rows] = candidate_logits(model, part).float().cpu()
    return {"accuracy": float((two[:, 0] > two[:, 1]).float().mean()), "loss": float(task_loss(two)),
            "pairs": len(pairs), "chance": 0.5}


def heldout_loss(model: nn.Module, tokens: np.ndarray, context: int, batch: int) -> float:
    """Mean next-token cross-entropy (nats per token) of ``model`` on a flat token stream.

    The stream is cut into non-overlapping windows of ``context`` input tokens, each predicting the token after each
    of its positions, so every token but the first is predicted once (a trailing piece shorter than a window is
    left out). ``<|endoftext|>`` marks documents inside the stream, as in training, so windows may span two."""
    windows = (len(tokens) - 1) // context
    if windows < 1:
        raise ValueError(f"{len(tokens)} tokens make no window of {context} inputs and their targets")
    stream = torch.from_numpy(np.asarray(tokens[:windows * context + 1], dtype=np.int64))
    device = next(model.parameters()).device
    total = 0.0
    with torch.inference_mode():
        for start in range(0, windows, batch):
            rows = torch.arange(start, min(start + batch, windows))[:, None] * context + torch.arange(context + 1)
            chunk = stream[rows].to(device)  # [b, context + 1]
            logits = model(chunk[:, :-1])
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), chunk[:, 1:].reshape(-1),
                                           reduction="sum"))
    return total / (windows * context)
