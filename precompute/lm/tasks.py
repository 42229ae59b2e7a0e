"""Binary next-token tasks on Python code: contrastive prompts whose next token is one of two candidate tokens.

As in the weight-sparse transformers paper (shared/anchors.md), each task cuts realistic Python just before a token
that one feature of the context decides (the opening quote, the nesting depth, the type a variable was given) and
scores a model on the two candidates alone. Pairs are seeded and balanced between the two answers, so chance is one
half; the pruning and evaluation splits never share a prompt. A task is text: each model reads it with its own
tokenizer (``precompute.lm.task_check.candidate_ids``), in which each candidate must be one token. Candidate texts are
chosen to be single tokens of ``precompute/organisms/tinylm_tokenizer.json`` *and* the tokens that tokenizer really
produces at the cut, so a model sees the prompt as it saw code in training; a task's ``forms`` are the candidates as
a tokenizer that joins them with what follows cuts them (OpenAI's ``tinypython_2k`` reads a closing ``]]`` at a
line's end as ``]]\\n``).

No torch here: ``precompute.lm.evaluate`` scores models on these pairs.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("prune", "eval")
_TRIES = 1000  # draws for one new distinct pair before a task is declared too small for the n asked


@dataclass(frozen=True)
class Pair:
    """A prompt and its two candidate next tokens (``correct`` is the one the context decides).

    ``rest`` finishes the text after the correct token, so ``prompt + correct + rest`` is the realistic code the prompt
    was cut from (tests compile it and check the tokenizer cuts there); ``meta`` says what varied, e.g. the depth."""

    prompt: str
    correct: str
    wrong: str
    rest: str = ""
    meta: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """A named binary task. ``make(rng, answer)`` draws one pair whose correct token is ``answer``, one of
    ``candidates``; asking for the answer (rather than drawing it) is what keeps every list of pairs balanced.

    Users add tasks by constructing one, from a function (``load_task("package.module:NAME")``, or ``TASKS`` in code)
    or from a file (``Task.from_jsonl``)."""

    name: str
    description: str
    candidates: tuple[str, str]
    make: Callable[[random.Random, str], Pair]
    # Other forms of the two candidates, in their order, read instead of them by a tokenizer that has both texts of a
    # form as single tokens (the first such form): each text a candidate followed by how every pair's ``rest`` starts,
    # so it is the token that tokenizer cuts there
    forms: tuple[tuple[str, str], ...] = ()

    def pairs(self, seed: int | str, n: int) -> list[Pair]:
        """``n`` distinct pairs (by prompt), half answering each candidate (the odd one out at random), in a seeded
        random order."""
        return _draw(self, random.Random(seed), n, keep=lambda prompt: True)

    @classmethod
    def from_jsonl(cls, path: Path | str, name: str | None = None, description: str = "") -> Task:
        """A task from a file of ``{"prompt", "correct", "wrong"}`` objects, one a line (optional ``"rest"``; other
        keys become ``meta``). Every line must use the same two candidate texts, one as correct, one as wrong, and
        both must be correct somewhere, so pairs can be balanced. Drawing picks lines at random: a file of k pairs
        yields at most k distinct pairs, shared out between the prune and eval splits."""
        path = Path(path)
        by_answer: dict[str, list[Pair]] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                pair = _pair_from_json(line, f"{path}:{number}")
                by_answer.setdefault(pair.correct, []).append(pair)
                if len({*by_answer, pair.wrong}) > 2:
                    raise ValueError(f"{path}:{number}: candidates {pair.correct!r}/{pair.wrong!r} differ from the "
                                     f"file's earlier {sorted(by_answer)!r}: a task has two candidate texts")
        if len(by_answer) != 2:
            raise ValueError(f"{path}: a task needs pairs answering each of its two candidates; the correct texts "
                             f"found are {sorted(by_answer)!r}")
        first = next(iter(by_answer.values()))[0]
        return cls(name or path.stem, description or f"pairs from {path.name}", (first.correct, first.wrong),
                   lambda rng, answer: rng.choice(by_answer[answer]))


def _pair_from_json(line: str, where: str) -> Pair:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object with prompt, correct and wrong; got {type(obj).__name__}")
    fields = {key: obj.pop(key, None) for key in ("prompt", "correct", "wrong")}
    bad = [key for key, value in fields.items() if not isinstance(value, str) or not value]
    rest = obj.pop("rest", "")
    if bad or not isinstance(rest, str):
        raise ValueError(f"{where}: {', '.join(bad) or 'rest'} must be a non-empty string")
    if fields["correct"] == fields["wrong"]:
        raise ValueError(f"{where}: correct and wrong are the same text {fields['correct']!r}")
    return Pair(**fields, rest=rest, meta=obj)


def _draw(task: Task, rng: random.Random, n: int, keep: Callable[[str], bool]) -> list[Pair]:
    answers = [task.candidates[i % 2] for i in range(n)]
    rng.shuffle(answers)
    seen: set[str] = set()
    out = []
    for answer in answers:
        for _ in range(_TRIES):
            pair = task.make(rng, answer)
            if pair.prompt not in seen and keep(pair.prompt):
                break
        else:
            raise ValueError(f"task {task.name!r}: no new pair answering {answer!r} in {_TRIES} draws after "
                             f"{len(out)} pairs; it has too few distinct prompts for n={n}")
        if (pair.correct, pair.wrong) != (answer, _other(task, answer)):
            raise ValueError(f"task {task.name!r}: asked for a pair answering {answer!r}, got correct "
                             f"{pair.correct!r} and wrong {pair.wrong!r}")
        seen.add(pair.prompt)
        out.append(pair)
    return out


def _other(task: Task, answer: str) -> str:
    return task.candidates[1 - task.candidates.index(answer)]


def split_of(prompt: str) -> str:
    """The split a prompt belongs to, by a hash of its text: fixed whatever seed or n drew it."""
    return SPLITS[hashlib.sha256(prompt.encode()).digest()[0] % 2]


def split(task: Task, which: str, n: int, seed: int = 0) -> list[Pair]:
    """``n`` pairs for pruning a circuit (``"prune"``) or for evaluating it on held-out prompts (``"eval"``).

    Each split draws from its own seed stream and keeps only prompts that ``split_of`` assigns to it, so the two never
    share a prompt, however many pairs either asks for."""
    if which not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {which!r}")
    return _draw(task, random.Random(f"{task.name}/{which}/{seed}"), n, keep=lambda prompt: split_of(prompt) == which)


def contrastive_split(task: Task, which: str, n: int, seed: int = 0) -> list[tuple[Pair, Pair]]:
    """``n`` contrastive pairs of a split, for pruning: each is two prompts drawn from one seed, one answering each of
    the task's candidates (the first candidate's first), so a minibatch of them holds both answers in equal number,
    and where a template's draws do not depend on the answer (the quote task's do not) the two prompts differ only
    where the task decides.

    Seeds are ``{task}/{which}/{seed}/contrastive/{i}`` for i = 0, 1, ...; a seed is skipped unless both of its
    prompts belong to the split by ``split_of`` (so no prompt of one split is in the other, as ``split`` keeps them),
    differ, and are new to the list."""
    if which not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {which!r}")
    out: list[tuple[Pair, Pair]] = []
    seen: set[str] = set()
    index = misses = 0
    while len(out) < n:
        source = f"{task.name}/{which}/{seed}/contrastive/{index}"
        index += 1
        first, second = (task.make(random.Random(source), answer) for answer in task.candidates)
        for pair, answer in ((first, task.candidates[0]), (second, task.candidates[1])):
            if (pair.correct, pair.wrong) != (answer, _other(task, answer)):
                raise ValueError(f"task {task.name!r}: asked for a pair answering {answer!r}, got correct "
                                 f"{pair.correct!r} and wrong {pair.wrong!r}")
        prompts = (first.prompt, second.prompt)
        if (first.prompt != second.prompt and not seen.intersection(prompts)
                and split_of(first.prompt) == which == split_of(second.prompt)):
            out.append((first, second))
            seen.update(prompts)
            misses = 0
        elif (misses := misses + 1) >= _TRIES:
            raise ValueError(f"task {task.name!r}: no new contrastive pair in the {which!r} split in {_TRIES} draws "
                             f"after {len(out)}; it has too few distinct prompts for n={n}")
    return out


# Shared vocabulary of the templates. Names are drawn independently of the answer, so none of them hints at it.
_NAMES = ("result", "value", "data", "items", "name", "text", "label", "key", "path", "out", "buf", "parts", "msg",
          "line", "token", "prefix", "record", "entry", "node", "cache", "seen", "tags", "fields", "chunk", "header",
          "title", "status", "mode", "kind", "rows", "acc", "current", "target", "source", "config", "state")
_QUALIFIERS = ("user", "file", "error", "default", "new", "old", "raw", "full", "base", "last", "first", "extra")
_FUNCS = ("build", "parse", "load", "render", "format", "collect", "make", "get", "read", "update", "check", "process")
_OBJECTS = ("self", "cls", "ctx", "args", "options", "request", "node", "parser")
_WORDS = ("invalid", "value", "for", "the", "file", "not", "found", "expected", "got", "missing", "config", "user",
          "name", "path", "error", "could", "open", "unknown", "option", "must", "be", "a", "positive", "integer",
          "connection", "closed", "timeout", "while", "loading", "data", "from", "cannot", "read", "write", "to",
          "directory", "is", "empty", "no", "such", "key", "in", "list", "of", "items", "default", "mode", "utf8",
          "line", "output", "input", "ok", "done", "failed", "request", "response", "status", "version", "index")


def _name(rng: random.Random) -> str:
    base = rng.choice(_NAMES)
    return f"{rng.choice(_QUALIFIERS)}_{base}" if rng.random() < 0.3 else base


def _names(rng: random.Random, k: int) -> list[str]:
    """``k`` distinct variable names."""
    names: list[str] = []
    while len(names) < k:
        name = _name(rng)
        if name not in names:
            names.append(name)
    return names


def _function(rng: random.Random, arg: str) -> str:
    return f"def {rng.choice(_FUNCS)}_{rng.choice(_NAMES)}({arg}):\n"


# --- single_double_quote: close a string with the quote that opened it ---------------------------------------------

def _string_body(rng: random.Random, names: list[str], f_string: bool) -> str:
    """1-8 words; an f-string may hold a placeholder. Ends with a word, so the closing quote is a token of its own."""
    words = [rng.choice(_WORDS) for _ in range(rng.randint(1, 8))]
    if f_string and len(words) > 1:
        words.insert(rng.randrange(len(words) - 1), f"{{{names[1]}}}")
    if len(words) > 2 and rng.random() < 0.3:
        words[rng.randrange(len(words) - 1)] += rng.choice((":", ",", "."))
    return " ".join(words)


def _quote_pair(rng: random.Random, answer: str) -> Pair:
    names = _names(rng, 3)
    var, other, key = names
    prefix = "f" if rng.random() < 0.2 else ""
    opened = prefix + answer + _string_body(rng, names, f_string=bool(prefix))
    # (context name, statement with the open string, what ends the line after the quote, needs a function body)
    context, statement, after, in_function = rng.choice((
        ("assign", f"{var} = {opened}", "", False),
        ("return", f"return {opened}", "", True),
        ("augmented", f"{var} += {opened}", "", False),
        ("assert", f"assert {other}, {opened}", "", False),
        ("annotated", f"{var}: str = {opened}", "", False),
        ("attribute", f"{rng.choice(_OBJECTS)}.{var} = {opened}", "", False),
        ("or_default", f"{var} = {other} or {opened}", "", False),
        ("conditional", f"{var} = {other} if {key} else {opened}", "", False),
        ("item", f"{other}[{answer}{key}{answer}] = {opened}", "", False),
        ("call", f"print({opened}", ")", False),
        ("call", f"raise ValueError({opened}", ")", False),
        ("call", f"{var} = {other}.get({answer}{key}{answer}, {opened}", ")", False),
        ("call", f"logger.info({opened}", ")", False),
    ))
    lines = []
    if in_function or rng.random() < 0.4:
        lines.append(_function(rng, other))
    indent = "    " if lines else ""
    for _ in range(rng.randint(0, 2)):  # earlier strings use either quote, whatever the answer
        q = rng.choice("'\"")
        lines.append(f"{indent}{_name(rng)} = {q}{' '.join(rng.choices(_WORDS, k=rng.randint(1, 4)))}{q}\n")
    prompt = "".join(lines) + indent + statement
    return Pair(prompt, answer, "'" if answer == '"' else '"', rest=after + "\n",
                meta={"context": context, "f_string": bool(prefix), "context_lines": len(lines)})


SINGLE_DOUBLE_QUOTE = Task(
    "single_double_quote",
    "Close a string literal: the quote that opened it (\" or ') decides the closing token.",
    ('"', "'"), _quote_pair)


# --- bracket_counting: close a list literal at nesting depth 1 (]) or 2 (]]) ----------------------------------------

def _element(rng: random.Random, names: list[str], last: bool) -> str:
    """A list element. Indexing and calls add closed brackets to count past; the last element is a plain number or
    name so that the closing brackets form a token of their own."""
    kinds = ("int", "float", "name") if last else ("int", "float", "name", "index", "call")
    kind = rng.choice(kinds)
    if kind == "int":
        return str(rng.randint(-9, 999) if rng.random() < 0.2 else rng.randint(0, 99))
    if kind == "float":
        return f"{rng.randint(0, 9)}.{rng.randint(0, 99)}"
    if kind == "name":
        return rng.choice(names)
    if kind == "index":
        return f"{rng.choice(names)}[{rng.randint(0, 3)}]"
    return f"{rng.choice(('len', 'max', 'min', 'abs', 'int', 'float'))}({rng.choice(names)})"


def _flat(rng: random.Random, names: list[str], k: int, closed: bool) -> str:
    elements = [_element(rng, names, last=not closed and i == k - 1) for i in range(k)]
    return "[" + ", ".join(elements) + ("]" if closed else "")


def _bracket_pair(rng: random.Random, answer: str) -> Pair:
    depth = 1 if answer == "]" else 2
    names = _names(rng, 4)
    var, other = names[:2]
    if depth == 1:
        body = _flat(rng, names[2:], rng.randint(1, 6), closed=False)
    else:  # a matrix-like list of rows, the last row open
        width = rng.randint(1, 4)
        rows = [_flat(rng, names[2:], width, closed=True) for _ in range(rng.randint(0, 3))]
        body = "[" + ", ".join([*rows, _flat(rng, names[2:], rng.randint(1, width), closed=False)])
    # (context name, text before the list, text after it, needs a function body)
    context, opener, closer, in_function = rng.choice((
        ("assign", f"{var} = ", "", False),
        ("return", "return ", "", True),
        ("yield", "yield ", "", True),
        ("augmented", f"{var} += ", "", False),
        ("attribute", f"{rng.choice(_OBJECTS)}.{var} = ", "", False),
        ("item", f"{other}[\"{var}\"] = ", "", False),
        ("item", f"{other}[{rng.randint(0, 9)}] = ", "", False),
        # A call too long for one line, as black lays it out: the lone argument on its own line, so the brackets
        # end the line (inline, ``]])`` would be one token).
        ("call", f"{var} = {rng.choice(('np.array', 'torch.tensor', 'np.asarray', 'pd.DataFrame'))}(\n    ", "\n)",
         False),
        ("call", f"{rng.choice(_OBJECTS)}.{rng.choice(_FUNCS)}(\n    ", "\n)", False),
    ))
    lines = []
    if in_function or rng.random() < 0.4:
        lines.append(_function(rng, other))
    indent = "    " if lines else ""
    if rng.random() < 0.5:  # an earlier, closed list of either depth, whatever the answer
        earlier = _flat(rng, names[2:], rng.randint(1, 3), closed=True)
        lines.append(f"{indent}{_name(rng)} = {earlier if rng.random() < 0.5 else f'[{earlier}]'}\n")
    prompt = "".join(lines) + indent + opener.replace("\n", "\n" + indent) + body
    return Pair(prompt, answer, "]]" if depth == 1 else "]", rest=closer.replace("\n", "\n" + indent) + "\n",
                meta={"depth": depth, "context": context, "context_lines": len(lines)})


BRACKET_COUNTING = Task(
    "bracket_counting",
    "Close a list literal: one bracket at nesting depth 1, two (]]) at depth 2.",
    ("]", "]]"), _bracket_pair, forms=(("]\n", "]]\n"),))  # every pair's brackets end their line


# --- set_or_string: a variable made with set() gets .add, one made with "" gets += ----------------------------------

def _filler(rng: random.Random, names: list[str], loop_var: str | None) -> str:
    """An unrelated statement on other variables; some use .append or += themselves, so the variable's own
    initialisation, not the last method seen, must decide."""
    a, b = rng.sample(names, 2)
    options = [f"{a} = {rng.randint(0, 9)}", f"{a} = []", f"{a} += 1", f"{a}.append({b})", f"{a} = len({b})",
               f"{a} = {b}.strip()", f"{a} = {rng.choice(_OBJECTS)}.{b}", f"{a} = {{}}"]
    if loop_var:
        options += [f"{a} = {loop_var}.{rng.choice(_NAMES)}", f"{a}.append({loop_var})"]
    return rng.choice(options)


def _set_or_string_pair(rng: random.Random, answer: str, fixed_name: str | None = None) -> Pair:
    is_set = answer == ".add"
    var, arg, item, *others = _names(rng, 6) if fixed_name is None else [fixed_name, *_other_names(rng, 5, fixed_name)]
    init = "set()" if is_set else rng.choice(('""', "''"))
    lines = [_function(rng, arg), f"    {var} = {init}\n"]
    lines += [f"    {_filler(rng, others, None)}\n" for _ in range(rng.randint(0, 3))]
    opener = rng.choice((f"for {item} in {arg}:", f"if {item}:", None))
    indent = "    "
    if opener:
        lines.append(f"    {opener}\n")
        indent = "        "
        loop_var = item if opener.startswith("for") else None
        lines += [f"{indent}{_filler(rng, others, loop_var)}\n" for _ in range(rng.randint(0, 2))]
    added = item if opener else arg
    return Pair("".join(lines) + indent + var, answer, " +=" if is_set else ".add",
                rest=f"({added})\n" if is_set else f" {added}\n",
                meta={"kind": "set" if is_set else "str", "lines_between": len(lines) - 2})


SET_OR_STRING = Task(
    "set_or_string",
    "A variable made with set() or \"\" reappears at a line start: .add for a set, += for a string.",
    (".add", " +="), _set_or_string_pair)


FIXED_VARIABLE = "current"  # the name OpenAI's set_or_string_fixedvarname gives the variable


def _other_names(rng: random.Random, k: int, excluded: str) -> list[str]:
    """``k`` distinct variable names, none of them ``excluded`` (nor qualified forms of it)."""
    names: list[str] = []
    while len(names) < k:
        name = _name(rng)
        if excluded not in name and name not in names:
            names.append(name)
    return names


SET_OR_STRING_FIXEDVARNAME = Task(
    "set_or_string_fixedvarname",
    f"set_or_string with the variable always named {FIXED_VARIABLE!r} (OpenAI's variant): no binding of a name to "
    "its type, only whether set() or \"\" made it.",
    (".add", " +="), lambda rng, answer: _set_or_string_pair(rng, answer, fixed_name=FIXED_VARIABLE))


TASKS: dict[str, Task] = {task.name: task for task in (SINGLE_DOUBLE_QUOTE, BRACKET_COUNTING, SET_OR_STRING,
                                                         SET_OR_STRING_FIXEDVARNAME)}


def load_task(target: str) -> Task:
    """A task of yours from Python: ``package.module:NAME``, where NAME is a ``Task`` or a function returning one (its
    ``make(rng, answer)`` draws pairs; see the built-in ones above). The module is found from the current directory or
    the Python path, as uvicorn finds an app (a console script's path does not hold the directory it runs in)."""
    from precompute.user_code import import_target

    found = import_target(target, "a task")
    task = found() if callable(found) and not isinstance(found, Task) else found
    if not isinstance(task, Task):
        raise ValueError(f"{target!r} is a {type(task).__name__}, not a precompute.lm.tasks.Task")
    return task
