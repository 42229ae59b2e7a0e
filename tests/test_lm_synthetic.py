"""The organisms' training data: the generated Python is valid code, seeded, and disjoint from the tasks it teaches,
and no task prompt occurs in the training mix (generated text or Python corpus).

The proof for the generated text is by witness words: a word that lies wholly inside a prompt (with a non-word
character on each side within the prompt) would be a whole word of any text the prompt occurs in. A prompt with such
a word that the generated text the committed organisms trained on never contains does not occur in it; the few short
prompts without one are searched for directly. For the corpus, where common words abound, the same fact narrows the search: only documents holding a
prompt's longest inner word are searched for the prompt.
"""

from __future__ import annotations

import functools
import json
import random
import re

import pytest

from precompute.lm import synthetic, tasks
from precompute.lm.corpus import discover
from precompute.lm.tasks import SPLITS, TASKS, split
from precompute.lm.tokenizer import load_tokenizer
from precompute.organisms import tinylm
from store.keys import CardKey

WORD = re.compile(r"\w+")


def test_generated_files_are_valid_python_and_seeded():
    first = [file for file, _ in zip(synthetic.files(0), range(300))]
    for text in first:
        compile(text, "<generated>", "exec")
    assert first == [file for file, _ in zip(synthetic.files(0), range(300))]
    assert first != [file for file, _ in zip(synthetic.files(1), range(300))]


def test_generated_files_exercise_what_the_tasks_test():
    """Both quote styles close strings; lines end closing lists at depth one and two in like numbers (and deep lists
    reach three); sets grow with .add and strings with +=, each after the line that made it."""
    text = "".join(file for file, _ in zip(synthetic.files(0), range(700)))
    assert text.count("'") > 1000 and text.count('"') > 1000
    ends = re.findall(r"(\]+)\n", "".join(synthetic.matrices_file(random.Random(i)) for i in range(200)))
    assert 0.4 < ends.count("]") / len(ends) < 0.6 and ends.count("]]") + ends.count("]") == len(ends)
    assert "]]]" in "".join(synthetic.lists_file(random.Random(i)) for i in range(50))
    assert re.search(r"^ +(\w+)\.add\(", text, re.M) and re.search(r"^ +\w+ \+= ", text, re.M)
    made = re.findall(r"^    (\w+) = (set\(\)|\"\"|'')$", text, re.M)
    assert {how == "set()" for _, how in made} == {True, False}
    for var, how in made[:80]:
        grows = r"\.add\(" if how == "set()" else r" \+= "
        assert re.search(rf"^ +{var}{grows}", text, re.M), var


def test_vocabulary_is_disjoint_from_the_task_templates():
    task_names = {*tasks._NAMES, *tasks._QUALIFIERS, *tasks._FUNCS, *tasks._OBJECTS, tasks.FIXED_VARIABLE}
    generated_names = {*synthetic.IDENTIFIERS, *synthetic.FUNCTIONS, *synthetic.ARGUMENTS}
    assert not task_names & generated_names
    assert not set(tasks._WORDS) & set(synthetic.STRING_WORDS)
    made_up = {synthetic._made_up_name(random.Random(i)) for i in range(3000)}
    assert len(made_up) > 1000 and all(name.isidentifier() for name in made_up)
    assert not {*task_names, *tasks._WORDS} & {part for name in made_up for part in [name, *name.split("_")]}


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    """Every prompt of both splits of every task, as many as the cards and circuits draw."""
    return [pair.prompt for task in TASKS.values() for which in SPLITS for pair in split(task, which, tinylm.TASK_PAIRS)]


@functools.cache
def _generated(tokens: int, seed: int, kinds: tuple[str, ...]) -> list[str]:
    """The generated files of a card's record (the twins read the same ones: made once)."""
    return synthetic.texts(load_tokenizer(), tokens, seed, kinds)


def _inner_words(prompt: str) -> set[str]:
    """Words with a non-word character on both sides inside ``prompt``: whole words wherever the prompt occurs."""
    return {m.group() for m in WORD.finditer(prompt) if m.start() > 0 and m.end() < len(prompt)}


def phases(training: dict) -> list[dict]:
    """A card's training record and those of the phases it started from (``train_tinylm --init-from``), last first."""
    return [training, *(phases(training["initialised_from"]["training"]) if "initialised_from" in training else [])]


@pytest.mark.parametrize("slug", ["tinylm-sparse", "tinylm-dense"])
def test_no_task_prompt_occurs_in_the_generated_training_text(slug, prompts):
    """Regenerate the very files the organism's card says it trained on, in each of its training phases, and show
    every prompt of both splits of every task has a witness word those files never contain."""
    tokenizer = load_tokenizer()
    for training in phases(json.loads(tinylm.card_path(slug).read_text())[CardKey.TRAINING]):
        recorded = training["synthetic"]
        files = _generated(recorded["tokens"], recorded["seed"], tuple(recorded.get("round", synthetic.ROUND)))
        assert sum(len(ids) for ids in tokenizer.encode_batch(files, add_special_tokens=False)) + len(files) \
            == recorded["tokens"]
        text = "\n".join(files)
        trained_words = set(WORD.findall(text))
        for prompt in prompts:  # a witness word, or else (a short prompt of common words) a search of the whole text
            assert _inner_words(prompt) - trained_words or prompt not in text, \
                f"{prompt!r} occurs in the generated text of {training['command']}"


def test_no_task_prompt_occurs_in_the_training_corpus(prompts):
    """Search each training document of the Python corpus found on this machine (the one the cards name on the
    machine that trained them) for every prompt, among the documents holding the prompt's longest inner word (every
    document, for the few short prompts that have none)."""
    by_word: dict[str, list[str]] = {}
    for prompt in prompts:
        inner = _inner_words(prompt)
        by_word.setdefault(max(inner, key=len) if inner else "", []).append(prompt)
    searched = 0
    for name, text in discover().documents("train"):
        for word in (by_word.keys() & set(WORD.findall(text))) | {""}:
            searched += len(by_word.get(word, ()))
            found = [prompt for prompt in by_word.get(word, ()) if prompt in text]
            assert not found, f"{name} holds the task prompt {found[0]!r}"
    assert searched > 0, "no document shares a word with any prompt: the search proved nothing"


def _lines_to_first_growth(file: str) -> int:
    """Lines between the one that makes a bindings file's accumulator and the first that grows it."""
    lines = file.splitlines()
    made = next(i for i, line in enumerate(lines) if re.match(r"^    \w+ = (set\(\)|\"\"|'')$", line))
    var = lines[made].split()[0]
    return next(i for i, line in enumerate(lines) if re.match(rf"^ +{var}(\.add\(| \+= )", line)) - made - 1


def test_near_bindings_grow_the_accumulator_within_a_few_lines_as_bindings_seldom_do():
    near = [_lines_to_first_growth(synthetic.near_bindings_file(random.Random(i))) for i in range(1000)]
    far = [_lines_to_first_growth(synthetic.bindings_file(random.Random(i))) for i in range(1000)]
    assert max(near) <= 3 < max(far)
    assert near.count(0) > 2 * far.count(0) and near.count(0) + near.count(1) > 2 * (far.count(0) + far.count(1))
