"""Token texts for a language model's pages, from the tokenizer its token sample was made with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from precompute.lm import tokenizer as tokenizing
from precompute.registry import ModelSpec

TokenTexts = Callable[[Sequence[int]], list[str]]  # consecutive token ids -> each one's display text


def token_texts_for(spec: ModelSpec) -> TokenTexts:
    """The organisms' BPE, or for a released OpenAI model (a spec with user's ``weights``) its ``tinypython_2k``,
    which lives beside the weights. Texts of consecutive ids join to the decoded text
    (``precompute.lm.tokenizer.token_texts``)."""
    if spec.weights is None:
        return partial(tokenizing.token_texts, tokenizing.load_tokenizer())
    from precompute.lm import openai_checkpoint

    encoding = openai_checkpoint.load_tokenizer(spec.weights)
    return lambda ids: tokenizing.piece_texts(encoding.decode_single_token_bytes(int(i)) for i in ids)


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
