"""How a language model's token texts are stored (contexts, top tokens, logit effects, circuit prompts): the job
writes them with ``token_text``, the server finds their bytes with ``BYTE``. No torch, no tokenizer: both sides import
it.

A token of a byte-level tokenizer is bytes, and need not be whole UTF-8 characters: a character can be split across
tokens, and the vocabulary holds every single byte. Decoding such a token with replacement characters loses its bytes
(every one shows "�"), and moving a split character onto the token that completes it leaves the others showing
nothing. So each token's text is its own bytes: the whole characters they hold as text, and each byte that is not part
of one written ``<0xNN>`` (hexadecimal, upper case: SentencePiece's name for a byte token). Nothing is lost, a token
reads the same wherever it appears, and tokens whose bytes make whole characters join to the source text.
"""

from __future__ import annotations

import re

BYTE = re.compile(r"<0x[0-9A-F]{2}>")  # one byte that is not part of a whole character, as ``token_text`` writes it
_ESCAPED = re.compile(r"[\udc80-\udcff]")  # such a byte as Python's "surrogateescape" decodes it


def token_text(piece: bytes) -> str:
    """A token's stored text: b' caf\\xc3\\xa9' -> ' café', b'\\xc3' -> '<0xC3>', b'\\x13' -> '\\x13' (a whole
    character, if an invisible one: showing it is the server's part)."""
    return _ESCAPED.sub(lambda byte: f"<0x{ord(byte.group()) - 0xDC00:02X}>", piece.decode("utf-8", "surrogateescape"))
