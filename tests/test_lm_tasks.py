"""The binary next-token tasks: seeded, balanced pair generators whose prompts are real Python cut where the committed
tokenizer cuts, prune/eval splits that never share a prompt, JSONL tasks, and the task loss and held-out loss."""

from __future__ import annotations

import json
import math
import re
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from torch import nn

from precompute.lm.evaluate import EOT, encode_pairs, heldout_loss, task_loss, task_metrics
from precompute.lm.tasks import SPLITS, TASKS, Pair, Task, split, split_of

TOKENIZER_FILE = Path(__file__).resolve().parents[1] / "precompute" / "organisms" / "tinylm_tokenizer.json"


@pytest.mark.parametrize("name", ["single_double_quote", "bracket_counting", "set_or_string",
                                  "set_or_string_fixedvarname"])
def test_required_tasks_are_registered(name):
    assert TASKS[name].name == name and len(set(TASKS[name].candidates)) == 2


@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS)
def test_pairs_are_deterministic_per_seed_and_vary_across_seeds(task):
    assert task.pairs(3, 50) == task.pairs(3, 50)
    assert split(task, "eval", 50, seed=1) == split(task, "eval", 50, seed=1)
    assert task.pairs(3, 50) != task.pairs(4, 50)


@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS)
@pytest.mark.parametrize("n", [200, 31])
def test_answers_are_balanced_and_prompts_distinct(task, n):
    pairs = task.pairs(0, n)
    counts = [sum(p.correct == c for p in pairs) for c in task.candidates]
    assert sorted(counts) == [n // 2, n - n // 2]
    assert all({p.correct, p.wrong} == set(task.candidates) for p in pairs)
    assert len({p.prompt for p in pairs}) == n


@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS)
def test_prune_and_eval_splits_never_share_a_prompt(task):
    prune, held_out = split(task, "prune", 400), split(task, "eval", 400)
    assert {p.prompt for p in prune}.isdisjoint({p.prompt for p in held_out})
    assert {split_of(p.prompt) for p in prune} == {"prune"} and {split_of(p.prompt) for p in held_out} == {"eval"}
    with pytest.raises(ValueError, match="split must be one of"):
        split(task, "train", 1)


def compiles(source: str) -> bool:
    try:
        compile(source, "<pair>", "exec")
    except SyntaxError:
        return False
    return True


@pytest.mark.parametrize("name", ["single_double_quote", "bracket_counting"])
def test_only_the_correct_closing_makes_valid_python(name):
    """The quote and bracket prompts are code cut before its closing: the right closing completes a module, the other
    leaves it unterminated or unbalanced."""
    for pair in TASKS[name].pairs(0, 300):
        assert compiles(pair.prompt + pair.correct + pair.rest), pair
        assert not compiles(pair.prompt + pair.wrong + pair.rest), pair


def test_bracket_depth_is_the_number_of_open_brackets():
    for pair in TASKS["bracket_counting"].pairs(0, 300):
        assert pair.prompt.count("[") - pair.prompt.count("]") == pair.meta["depth"] == len(pair.correct)


@pytest.mark.parametrize("name", ["set_or_string", "set_or_string_fixedvarname"])
def test_set_or_string_prompt_ends_with_the_variable_its_initialisation_decides(name):
    """The last line is the variable alone; only its initialisation, lines earlier, says set or string, and no line
    in between starts with it. OpenAI's fixed-name variant always calls it ``current``."""
    for pair in TASKS[name].pairs(0, 300):
        assert compiles(pair.prompt + pair.correct + pair.rest), pair
        var = pair.prompt.rsplit("\n", 1)[1].strip()
        starts = re.findall(rf"^\s*{var}\b.*$", pair.prompt, re.M)
        assert len(starts) == 2 and starts[-1].strip() == var
        init = starts[0].split("=", 1)[1].strip()
        assert init == "set()" if pair.correct == ".add" else init in ('""', "''")
        assert (pair.correct == ".add") == (pair.meta["kind"] == "set")
        assert var == "current" or name == "set_or_string"


# --- with the committed tokenizer -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tinylm_tokenizer() -> Tokenizer:
    if not TOKENIZER_FILE.exists():
        pytest.skip(f"{TOKENIZER_FILE} not made yet")
    return Tokenizer.from_file(str(TOKENIZER_FILE))


@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS)
def test_candidates_are_single_tokens_and_the_tokens_the_tokenizer_cuts_there(task, tinylm_tokenizer):
    """The tokenizer cuts each realistic text exactly at the prompt's end and makes the correct candidate its next
    token, so the model meets the prompt tokenized as in training and the candidate as the natural continuation."""
    def ids(text):
        return tinylm_tokenizer.encode(text, add_special_tokens=False).ids

    assert all(len(ids(text)) == 1 for text in task.candidates)
    for which in SPLITS:
        for pair in split(task, which, 300):
            prompt = ids(pair.prompt)
            assert ids(pair.prompt + pair.correct + pair.rest)[:len(prompt) + 1] == prompt + ids(pair.correct), pair


# --- evaluation -----------------------------------------------------------------------------------------------------

def char_tokenizer() -> Tokenizer:
    """A real ``tokenizers`` tokenizer, one token per printable character, with ``<|endoftext|>`` as id 0."""
    vocab = {EOT: 0, **{c: i + 1 for i, c in enumerate(string.printable)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="?"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.add_special_tokens([EOT])
    return tok


def marker_pair(rng, answer: str) -> Pair:
    """A prompt of 3-40 letters; one that answers A holds 1-3 '!' markers."""
    chars = rng.choices("xyz ", k=rng.randint(3, 40))
    for _ in range(rng.randint(1, 3) if answer == "A" else 0):
        chars.insert(rng.randrange(len(chars) + 1), "!")
    return Pair("".join(chars), answer, "B" if answer == "A" else "A")


MARKER = Task("marker", "A after a '!', B otherwise", ("A", "B"), marker_pair)


class MarkerModel(nn.Module):
    """Causal stub: A's logit is twice the '!' seen so far, B's drifts with the position, so reading any position but
    a prompt's last one (a padded one, say) would change the loss."""

    def __init__(self, tok: Tokenizer):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.vocab, self.marker = tok.get_vocab_size(), tok.token_to_id("!")
        self.a, self.b = tok.token_to_id("A"), tok.token_to_id("B")

    def forward(self, idx: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        logits = torch.zeros(*idx.shape, self.vocab)
        logits[..., self.a] = 2 * (idx == self.marker).cumsum(1)
        logits[..., self.b] = 1 + 0.01 * torch.arange(idx.shape[1])
        if at is not None:
            logits = logits[torch.arange(len(at)), at]  # [B, vocab], as SparseGPT answers
        return logits * self.scale


def expected_loss(pairs: list[Pair]) -> float:
    """The task loss by hand: the prompt after one <|endoftext|>, the logits at its last position, two-way softmax."""
    total = 0.0
    for p in pairs:
        a, b = 2 * p.prompt.count("!"), 1 + 0.01 * len(p.prompt)  # last position = len(prompt) after the EOT
        correct, wrong = (a, b) if p.correct == "A" else (b, a)
        total += math.log1p(math.exp(wrong - correct))
    return total / len(pairs)


def test_task_metrics_reads_each_prompts_last_position_and_computes_the_papers_loss():
    tok = char_tokenizer()
    pairs = MARKER.pairs(0, 41)
    assert len({len(p.prompt) for p in pairs}) > 10  # padding really happens
    metrics = task_metrics(MarkerModel(tok), tok, MARKER, pairs)
    assert metrics == {"accuracy": 1.0, "loss": pytest.approx(expected_loss(pairs), rel=1e-6), "pairs": 41,
                       "chance": 0.5}
    assert task_metrics(MarkerModel(tok), tok, MARKER, pairs, batch_size=4) == pytest.approx(metrics)
    flipped = [Pair(p.prompt, p.wrong, p.correct) for p in pairs]
    assert task_metrics(MarkerModel(tok), tok, MARKER, flipped)["accuracy"] == 0.0


def test_task_loss_is_the_two_way_cross_entropy():
    two = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    assert float(task_loss(two)) == pytest.approx((math.log1p(math.exp(-2)) + math.log1p(math.exp(1))) / 2)


def test_a_candidate_of_several_tokens_is_refused_by_name():
    tok = char_tokenizer()
    task = Task("two_chars", "", ("A", "xy"), lambda rng, answer: Pair(str(rng.random()), answer, "xy" if answer == "A" else "A"))
    with pytest.raises(ValueError, match=r"task 'two_chars': candidate 'xy' is 2 tokens"):
        task_metrics(MarkerModel(tok), tok, task, task.pairs(0, 2))


def test_right_padding_leaves_the_real_models_logits_alone():
    """With the real SparseGPT (sparse attention, AbsTopK), a batch of padded prompts gives each prompt the logits it
    gets alone."""
    model_module = pytest.importorskip("precompute.lm.model")
    torch.manual_seed(0)
    model = model_module.SparseGPT(model_module.GPTConfig(vocab_size=len(string.printable) + 1)).eval()
    tok, pairs = char_tokenizer(), MARKER.pairs(1, 12)
    batch = encode_pairs(tok, MARKER, pairs)
    with torch.inference_mode():
        batched = model(batch.tokens)
        for i in range(len(pairs)):
            alone = model(batch.tokens[i:i + 1, :int(batch.last[i]) + 1])
            torch.testing.assert_close(batched[i, batch.last[i]], alone[0, -1], atol=1e-5, rtol=1e-5)


class BigramModel(nn.Module):
    """Logits from a fixed table of the previous token: its loss on a stream is known without windows."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


def test_heldout_loss_is_the_mean_cross_entropy_of_every_windowed_target():
    rng = np.random.default_rng(0)
    vocab, context = 11, 8
    tokens = rng.integers(0, vocab, size=8 * 5 + 4, dtype=np.uint16)  # 5 windows; the last 3 tokens are left out
    table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0))
    log_probs = torch.log_softmax(table, dim=1).numpy()
    used = tokens[:5 * context + 1].astype(np.int64)
    expected = -log_probs[used[:-1], used[1:]].mean()
    for batch in (1, 2, 5, 64):
        assert heldout_loss(BigramModel(table), tokens, context, batch) == pytest.approx(expected, rel=1e-6)
    assert heldout_loss(BigramModel(torch.zeros(vocab, vocab)), tokens, context, 3) == pytest.approx(math.log(vocab))
    with pytest.raises(ValueError, match="no window"):
        heldout_loss(BigramModel(table), tokens[:context], context, 1)


# --- JSONL tasks ----------------------------------------------------------------------------------------------------

def write_jsonl(path, rows) -> None:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


def test_a_jsonl_task_round_trips_and_splits(tmp_path):
    source = TASKS["single_double_quote"].pairs(0, 60)
    path = tmp_path / "my_quotes.jsonl"
    write_jsonl(path, [{"prompt": p.prompt, "correct": p.correct, "wrong": p.wrong, "rest": p.rest, **p.meta}
                       for p in source] + [""])
    task = Task.from_jsonl(path)
    assert task.name == "my_quotes" and set(task.candidates) == {'"', "'"}
    drawn = task.pairs(0, 20)
    assert all(p in source for p in drawn) and sorted(p.correct for p in drawn) == sorted('"' * 10 + "'" * 10)
    prune, held_out = split(task, "prune", 6), split(task, "eval", 6)
    assert {p.prompt for p in prune}.isdisjoint({p.prompt for p in held_out})
    with pytest.raises(ValueError, match="too few distinct prompts"):
        task.pairs(0, 61)


@pytest.mark.parametrize(("rows", "message"), [
    (["{not json"], r"bad\.jsonl:1: not JSON"),
    ([{"prompt": "x = 1", "correct": "A"}, "[1, 2]"], r"bad\.jsonl:1: wrong must be a non-empty string"),
    ([{"prompt": "x", "correct": "A", "wrong": "B"}, "[1, 2]"], r"bad\.jsonl:2: expected an object"),
    ([{"prompt": "x", "correct": "A", "wrong": "A"}], r"bad\.jsonl:1: correct and wrong are the same"),
    ([{"prompt": "x", "correct": "A", "wrong": "B"}, {"prompt": "y", "correct": "C", "wrong": "B"}],
     r"bad\.jsonl:2: candidates 'C'/'B' differ"),
    ([{"prompt": "x", "correct": "A", "wrong": "B"}, {"prompt": "y", "correct": "A", "wrong": "B"}],
     r"bad\.jsonl: a task needs pairs answering each"),
])
def test_a_malformed_jsonl_task_is_refused_with_its_line(tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, rows)
    with pytest.raises(ValueError, match=message):
        Task.from_jsonl(path)


def test_a_task_function_that_ignores_the_asked_answer_is_refused():
    task = Task("stubborn", "", ("A", "B"), lambda rng, answer: Pair(str(rng.random()), "A", "B"))
    with pytest.raises(ValueError, match="task 'stubborn': asked for a pair answering 'B'"):
        task.pairs(0, 4)
