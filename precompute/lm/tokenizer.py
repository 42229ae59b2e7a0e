"""The tiny LMs' tokenizer: byte-level BPE with 2048 tokens (the size of OpenAI's ``tinypython_2k``), trained on the
training split of ``precompute.lm.corpus``.

The pre-tokenizer is a code-aware variant of GPT-2's regex, so that the next-token tasks have clean candidates:
quote runs (``'``, ``\"\"\"``) never merge with other punctuation, so a closing quote is exactly ``'`` or ``"``;
other punctuation runs merge (``]]``, ``))``, `` +=``); a dot directly before a name stays with it (``.add``), so
attribute access can be one token. Everything is byte-level, so any text round-trips.

Other language models' tokenizers are read into the same ``tokenizers.Tokenizer`` (``from_gpt2_files``: OpenAI's
``tinypython_2k``), so tasks are encoded, and tokens shown, the same way for every model.

    python -m precompute.lm.tokenizer train      # rewrites precompute/organisms/tinylm_tokenizer.json
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from store.tokens import token_text

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


def from_gpt2_files(encoder_path: Path, merges_path: Path, pattern: str) -> Tokenizer:
    """A byte-level BPE saved in GPT-2's file format, read with ``pattern`` as its pre-tokenizer: ``encoder.json``
    maps each token (its bytes in the byte alphabet above) to its id, which is also its rank; ``vocab.bpe`` lists, in
    rank order, the merge that makes each token after the 256 single bytes (merge i makes token 256 + i).
    ``<|endoftext|>`` takes the id ``encoder.json`` gives it, else the one after the last merge.

    It encodes by rank, as a reader of these files by rank (tiktoken) does: a piece of the pre-tokenizer that is a
    token is that token, and otherwise the adjacent pair whose concatenation has the lowest rank merges first.
    ``tokenizers`` merges listed pairs by their place in its list, so every split of a token into two tokens is
    listed here at that token's rank, not only the one ``vocab.bpe`` names (which alone would leave ``ab`` + ``c``
    unmerged where ``abc`` was made from ``a`` + ``bc``). ``<|endoftext|>`` written in text stays text, as tiktoken's
    ``encode_ordinary`` has it. ValueError when the files cannot be read as such."""
    encoder = json.loads(encoder_path.read_text(encoding="utf-8"))
    lines = merges_path.read_text(encoding="utf-8").splitlines()
    listed = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    if (not isinstance(encoder, dict) or not all(isinstance(i, int) for i in encoder.values())
            or any(len(pair) != 2 for pair in listed)):
        raise ValueError(f"{encoder_path} must map tokens to ids and {merges_path} hold one merge 'left right' a "
                         f"line")
    eot = encoder.pop(EOT, 256 + len(listed))
    encoder.pop("<|startoftext|>", None)  # GPT-2's files may name it; no model of this format reads it
    if unknown := [token for token in encoder if not set(token) <= _CHAR_TO_BYTE.keys()]:
        raise ValueError(f"{encoder_path}: token(s) {unknown[:5]} are not written in the byte-level alphabet")
    if sorted(encoder.values()) != list(range(256 + len(listed))) or eot in encoder.values():
        raise ValueError(f"{encoder_path} and {merges_path} disagree: {len(encoder)} tokens besides {EOT} (id "
                         f"{eot}), {len(listed)} merges; expected the 256 single bytes plus one token per merge, "
                         f"numbered from 0, and {EOT} apart")
    if wrong := [f"{a} {b}" for i, (a, b) in enumerate(listed) if encoder.get(a + b) != 256 + i]:
        raise ValueError(f"{merges_path}: merge(s) {wrong[:5]} do not make the token {encoder_path} numbers next")
    named = set(listed)
    splits = sorted(((token[:cut], token[cut:]) for token in encoder for cut in range(1, len(token))
                     if token[:cut] in encoder and token[cut:] in encoder),
                    key=lambda pair: (encoder[pair[0] + pair[1]], pair not in named, len(pair[0])))
    tok = Tokenizer(models.BPE(vocab={**encoder, EOT: eot}, merges=splits, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


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
    """Each token's stored text (``store.tokens.token_text``): its own bytes, so a token reads the same wherever it
    appears. Texts of tokens that hold whole characters join to the decoded text; a character split across tokens
    shows as its bytes (``<0xC3>``, ``<0xA9>``), never as "�" or as nothing."""
    return [token_text(token_bytes(tokenizer, int(i))) for i in ids]


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
