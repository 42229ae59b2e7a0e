"""Token texts for a language model's pages, from the tokenizer its token sample was made with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from precompute.lm import tokenizer as tokenizing
from precompute.registry import ModelSpec

TokenTexts = Callable[[Sequence[int]], list[str]]  # token ids -> each one's stored text (``store.tokens``)


def token_texts_for(spec: ModelSpec) -> TokenTexts:
    """The model's own tokenizer's texts (``ModelSpec.load_tokenizer``: the organisms' BPE, a released OpenAI model's
    ``tinypython_2k``). Each token's text is its own bytes (``precompute.lm.tokenizer.token_texts``)."""
    return partial(tokenizing.token_texts, spec.load_tokenizer())


def vocabulary(spec: ModelSpec, size: int) -> list[str]:
    """Every token id's text on its own, for the ``size`` rows of the model's unembedding; an id the tokenizer does
    not have (a vocabulary padded to a round size) shows as ``<unused ID>``."""
    texts = token_texts_for(spec)

    def text(token: int) -> str:
        try:
            return texts([token])[0]
        except (KeyError, ValueError):
            return f"<unused {token}>"

    return [text(token) for token in range(size)]
