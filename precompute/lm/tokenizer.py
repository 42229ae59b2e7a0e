"""The tiny LMs' tokenizer: byte-level BPE with 2048 tokens (the size of OpenAI's ``tinypython_2k``), trained on the
training split of ``precompute.lm.corpus``.

The pre-tokenizer is a code-aware variant of GPT-2's regex, so that the next-token tasks have clean candidates:
quote runs (``'``, ``\"\"\"``) never merge with other punctuation, so a closing quote is exactly ``'`` or ``"``;
other punctuation runs merge (``]]``, ``))``, `` +=``); a dot directly before a name stays with it (``.add``), so
attribute access can be one token. Everything is byte-level, so any text round-trips.

    python -m precompute.lm.tokenizer train      # rewrites precompute/organisms/tinylm_tokenizer.json
"""

from __future__ import annotations

import codecs
import hashlib
import time
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "organisms" / "tinylm_tokenizer.json"
VOCAB_SIZE = 2048
EOT = "<|endoftext|>"  # between documents; id 0
PATTERN = "|".join((
    r" ?[\p{L}_][\p{L}\p{N}_]*",  # a name or keyword, with its leading space
    r"\.[\p{L}_][\p{L}\p{N}_]*",  # attribute access: .add
    r" ?\p{N}+",  # digits
    r" ?'+| ?\"+",  # a run of one kind of quote, never merged with other punctuation
    r" ?(?:[^\s\p{L}\p{N}_'\".]|\.(?![\p{L}_]))+",  # other punctuation: ]] )) += (not a dot before a name)
    r"\s+(?!\S)|\s+",  # whitespace as GPT-2 splits it: indentation, leaving one space for the next word
))


def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's character for each byte -> the byte: printable Latin-1 bytes stand for themselves, the others
    (controls, space, soft hyphen) for 256, 257, ... in byte order, as in GPT-2."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + i): b for i, b in enumerate(others)})
    return table


_CHAR_TO_BYTE = _byte_alphabet()


def new_tokenizer() -> Tokenizer:
    """An untrained tokenizer with the pipeline above."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Train on ``texts`` (whole documents). All 256 bytes are in the vocabulary whatever the texts hold."""
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(path: Path | str = DEFAULT_PATH) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def tokenizer_hash(path: Path | str = DEFAULT_PATH) -> str:
    """sha256 of the tokenizer's JSON file: what model cards and shard caches name it by."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def eot_id(tokenizer: Tokenizer) -> int:
    return tokenizer.token_to_id(EOT)


def token_bytes(tokenizer: Tokenizer, token_id: int) -> bytes:
    """The bytes a token stands for (a special token: its literal text)."""
    piece = tokenizer.id_to_token(token_id)
    if piece is None:
        raise ValueError(f"token id {token_id} is not in the vocabulary")
    if piece == EOT:
        return piece.encode()
    return bytes(_CHAR_TO_BYTE[c] for c in piece)


def token_texts(tokenizer: Tokenizer, ids: Iterable[int]) -> list[str]:
    """Each token's display text: ``"".join(token_texts(t, ids)) == t.decode(ids, skip_special_tokens=False)``.

    A token can end inside a multi-byte UTF-8 character; the character is shown on the token that completes it (the
    earlier ones show ""), so the texts join to the decoded string and no token shows half a character. Invalid bytes
    become U+FFFD, as in ``decode``."""
    return piece_texts(token_bytes(tokenizer, int(i)) for i in ids)


def piece_texts(pieces: Iterable[bytes]) -> list[str]:
    """Display texts of consecutive tokens given as their bytes, as ``token_texts`` shows them (for any tokenizer)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    texts = [decoder.decode(piece) for piece in pieces]
    if texts:
        texts[-1] += decoder.decode(b"", final=True)  # a character cut off at the end
    return texts


def main() -> None:
    import argparse

    from precompute.lm import corpus

    parser = argparse.ArgumentParser(prog="python -m precompute.lm.tokenizer", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["train"])
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args()
    found = corpus.discover()
    start = time.perf_counter()
    tok = train(text for _, text in found.documents("train"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out))
    print(f"trained on {found.describe('train')} in {time.perf_counter() - start:.1f}s; "
          f"vocab {tok.get_vocab_size()}; wrote {args.out} (sha256 {tokenizer_hash(args.out)})")


if __name__ == "__main__":
    main()
