"""The LM corpus, its split, the tokenizer and the committed held-out sample (precompute.lm.corpus / .tokenizer)."""

import json
import re

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from precompute.lm import corpus as lm_corpus  # noqa: E402
from precompute.lm import tokenizer as lm_tokenizer  # noqa: E402
from store.tokens import BYTE  # noqa: E402


@pytest.fixture(scope="module")
def found():
    return lm_corpus.discover()


@pytest.fixture(scope="module")
def tok():
    return lm_tokenizer.load_tokenizer()


def test_split_is_by_file_disjoint_and_reproducible(found):
    train, heldout = found.split("train"), found.split("heldout")
    assert train and heldout
    assert {f.name for f in train}.isdisjoint(f.name for f in heldout)
    assert len(train) + len(heldout) == len(found.files)
    assert len({f.sha256 for f in found.files}) == len(found.files)  # no held-out text duplicated into training
    again = lm_corpus.discover()
    assert again.files == found.files and again.hash == found.hash
    assert 0.02 < len(heldout) / len(found.files) < 0.1


def test_membership_is_a_function_of_the_name_alone():
    names = [f"site-packages/pkg{i}/mod{i}.py" for i in range(4000)]
    alone = [lm_corpus.is_heldout(n) for n in names]
    assert alone == [lm_corpus.is_heldout(n) for n in reversed(names)][::-1]
    assert 0.03 < sum(alone) / len(names) < 0.07
    assert all(lm_corpus.is_sampled(f"stdlib/x{i}.py") for i in range(100))
    assert lm_corpus.name_unit("a", "heldout") != lm_corpus.name_unit("a", "sample")


def test_vocab_size(tok):
    assert tok.get_vocab_size() == lm_tokenizer.VOCAB_SIZE == 2048
    assert lm_tokenizer.eot_id(tok) == 0


def test_round_trip_on_stdlib_text(found, tok):
    name, text = next(found.documents("train"))
    text += '\nGREETING = "héllo wörld ✓ 日本語 🐍"\n'
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text


def test_task_tokens_are_single_tokens(tok):
    for piece in ["'", '"', "]", "]]", " +=", ".", ".add", ")", "))"]:
        assert len(tok.encode(piece).ids) == 1, piece


def stored_bytes(text: str) -> bytes:
    """A token's bytes back from its stored text: its characters in UTF-8, each ``<0xNN>`` the byte it names."""
    return b"".join(bytes([int(part[3:5], 16)]) if BYTE.fullmatch(part) else part.encode()
                    for part in re.split(f"({BYTE.pattern})", text))


def test_token_texts_keep_every_byte_of_every_token(tok):
    text = "s = '日本 ✓ 🐍 é'\n"
    ids = tok.encode(text).ids
    pieces = [lm_tokenizer.token_bytes(tok, i) for i in ids]
    assert any(not _decodes(p) for p in pieces), "expected a character split across tokens"
    texts = lm_tokenizer.token_texts(tok, ids)
    assert [stored_bytes(t) for t in texts] == pieces  # each token's own bytes: none lost, none moved to a neighbour
    assert all(t and "\ufffd" not in t for t in texts)  # no token blank, none "�"
    assert all(t == p.decode() for t, p in zip(texts, pieces) if _decodes(p))  # whole characters as text
    plain = "def f(x):\n    return x + 1\n"
    assert "".join(lm_tokenizer.token_texts(tok, tok.encode(plain).ids)) == plain
    eot = lm_tokenizer.eot_id(tok)
    assert lm_tokenizer.token_texts(tok, [eot]) == [lm_tokenizer.EOT]
    # single-byte tokens seen on a unit's page as "�" and missing-glyph boxes: a byte no character completes is
    # written by number; a control character stays the character, for the pages to show by number
    singles = [121, 130, 208, 204]
    assert [lm_tokenizer.token_bytes(tok, i) for i in singles] == [b"\xbc", b"\xc5", b"\x13", b"\x0f"]
    assert lm_tokenizer.token_texts(tok, singles) == ["<0xBC>", "<0xC5>", "\x13", "\x0f"]


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_committed_heldout_sample(tok):
    held = lm_corpus.load_heldout()
    assert held.tokens.dtype == np.uint16 and held.tokens.shape == (lm_corpus.HELDOUT_TOKENS,) == (262_144,)
    assert int(held.tokens.max()) < tok.get_vocab_size()
    starts = [start for _, start in held.documents]
    assert starts[0] == 0 and starts == sorted(set(starts)) and starts[-1] < len(held.tokens)
    assert all(lm_corpus.is_heldout(name) for name, _ in held.documents)
    name, start = held.documents[1]
    assert held.document_at(start) == name and held.document_at(start - 1) == held.documents[0][0]
    assert held.tokens[start - 1] == lm_tokenizer.eot_id(tok)
    assert held.meta["tokenizer_sha256"] == lm_tokenizer.tokenizer_hash()
    assert json.loads(lm_corpus.HELDOUT_PATH.with_suffix(".json").read_text())["tokens"] == 262_144


def test_regenerating_heldout_gives_the_same_tokens(found, tok):
    held = lm_corpus.load_heldout()
    if found.hash != held.meta["corpus_hash"]:
        pytest.skip(f"local corpus {found.hash[:12]} is not the recorded {held.meta['corpus_hash'][:12]} "
                    "(different Python or installed packages)")
    tokens, documents = lm_corpus.make_heldout(found, tok)
    assert np.array_equal(tokens, held.tokens) and documents == held.documents


def test_train_tokens_are_cached_and_separated(found, tok, tmp_path, monkeypatch):
    monkeypatch.setenv("ATLASCOPE_CACHE", str(tmp_path))
    small = lm_corpus.Corpus(tuple(found.split("train")[:5]))
    tokens = lm_corpus.train_tokens(small, verbose=False)
    assert tokens.dtype == np.uint16 and str(tmp_path) in str(tokens.filename)
    assert int((tokens == lm_tokenizer.eot_id(tok)).sum()) == 5 and tokens[-1] == lm_tokenizer.eot_id(tok)
    assert tok.decode(tokens.tolist()) == "".join(text for _, text in small.documents("train"))
    assert np.array_equal(lm_corpus.train_tokens(small, verbose=False), tokens)
