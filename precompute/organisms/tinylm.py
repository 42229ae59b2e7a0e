"""The embedded language organisms: a weight-sparse GPT and its dense twin, trained by atlascope on offline Python.

Their weights (``tinylm-{sparse,dense}.pt``, compact: see ``precompute.lm.compact``) and cards (``.json``) are
committed. The card's numbers are measured here, on the committed weights: held-out loss on the committed held-out
sample, accuracy on the tasks' evaluation pairs and the nonzero count of every matrix, so a test can recompute them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from precompute.lm import compact, corpus, sparsity
from precompute.lm import tokenizer as tokenizing
from precompute.lm.evaluate import heldout_loss, task_metrics
from precompute.lm.model import GPTConfig, SparseGPT
from precompute.lm.tasks import TASKS, split
from store.keys import CardKey

HERE = Path(__file__).parent
TASK_PAIRS = 400  # evaluation pairs per task on the card: a 95% interval of about +-5 points
EVAL_BATCH = 64


def weights_path(slug: str) -> Path:
    return HERE / f"{slug}.pt"


def card_path(slug: str) -> Path:
    return HERE / f"{slug}.json"


def load(slug: str) -> SparseGPT:
    """The organism in eval mode, from its compact weights as they are (``precompute.loaders.load_tinylm`` first
    checks them against the card, as the job does; training measures weights it has just written)."""
    config, state = compact.load(weights_path(slug))
    model = SparseGPT(GPTConfig.from_dict(config))
    model.load_state_dict(state)
    return model.eval()


def measure(model: SparseGPT) -> dict:
    """The card's measured sections: held-out loss, task metrics and weight sparsity."""
    heldout = corpus.load_heldout()
    tokenizer = tokenizing.load_tokenizer()
    matrices = sparsity.nonzero_report({name: p.detach() for name, p in model.sparse_matrices().items()})
    nonzero = sum(m["nonzero"] for m in matrices.values())
    total = sum(m["shape"][0] * m["shape"][1] for m in matrices.values())
    return {
        CardKey.HELDOUT: {"loss": round(heldout_loss(model, heldout.tokens, model.config.block_size, EVAL_BATCH), 4),
                          "tokens": len(heldout.tokens), "corpus_sha256": heldout.meta["corpus_hash"],
                          "files": len(heldout.documents),  # held-out files the sample draws from
                          "sample": "precompute/organisms/tinylm_heldout.npz"},
        CardKey.TASKS: {name: task_metrics(model, tokenizer, task, split(task, "eval", TASK_PAIRS))
                        for name, task in TASKS.items()},
        CardKey.SPARSITY: {"nonzero_fraction": round(nonzero / total, 5), "matrices": matrices,
                           "dense_by_design": "the bigram table, norms and biases"},
    }


def write_card(slug: str, training: dict) -> dict:
    """Measure the committed weights of ``slug`` and write its card beside them."""
    path = weights_path(slug)
    model = load(slug)
    measured = measure(model)
    target = training.get("target")
    measured[CardKey.SPARSITY].update({"weights": "sparse" if target else "dense", "target": target})
    card = {
        CardKey.ARCHITECTURE: model.config.to_dict(),
        **measured,
        CardKey.TRAINING: training,
        CardKey.TOKENIZER: {"name": "atlascope tinylm BPE", "vocab_size": model.config.vocab_size,
                            "file": tokenizing.DEFAULT_PATH.name, "sha256": tokenizing.tokenizer_hash()},
        CardKey.WEIGHTS: {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                          "bytes": path.stat().st_size},
    }
    card_path(slug).write_text(json.dumps(card, indent=2) + "\n")
    return card


if __name__ == "__main__":  # re-measure the committed weights, keeping the training record
    import sys

    for name in sys.argv[1:] or ["tinylm-sparse", "tinylm-dense"]:
        write_card(name, json.loads(card_path(name).read_text())[CardKey.TRAINING])
        print(f"wrote {card_path(name)}")
