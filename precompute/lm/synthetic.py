"""Procedurally generated Python for the tiny LMs' training mix: code that exercises what the tasks test.

Python source on a machine holds few examples of what the next-token tasks decide (a list closed at depth two, a
variable built as a set and later grown with ``.add``), so a 2-layer organism trained on it alone stays at chance on
them. This module writes small, valid Python files dense in those features: string literals of both quote styles,
nested list literals (deep ones, and short lines closing at depth one or two), and accumulators of several types
(sets, strings, lists, counters) grown later in a function, among statements that grow other variables otherwise.

It never shares code, seeds or vocabulary with ``precompute.lm.tasks``: its identifiers, function names and words
inside strings come from lists disjoint from the tasks' (a test checks the lists and that no evaluation prompt
occurs in the generated stream), so a model that solves the tasks has learnt the rule, not the prompts.

No torch here; ``precompute.organisms.train_tinylm`` mixes windows of ``tokens(...)`` into its batches.
"""

from __future__ import annotations

import builtins
import functools
import keyword
import random
from collections.abc import Callable, Iterator

import numpy as np
from tokenizers import Tokenizer

from precompute.lm import tasks
from precompute.lm import tokenizer as tokenizing

CHUNK = 2048  # files generated and encoded at a time

# Vocabulary disjoint from precompute.lm.tasks' _NAMES, _QUALIFIERS, _FUNCS, _OBJECTS and _WORDS.
IDENTIFIERS = ("total", "counts", "grid", "matrix", "weights", "pairs", "names", "words", "seen_ids", "visited",
               "letters", "lines_out", "pieces", "summary", "report", "answer", "res", "acc_str", "digits", "keys",
               "uniq", "flags", "batch", "queue", "stack", "groups", "cells", "coords", "scores", "ranks", "labels",
               "ids", "members", "suffix", "joined", "banner", "html", "sql", "query", "row", "col", "col_names",
               "tokens_seen", "used", "vals", "errors", "warnings", "notes", "heads", "tails", "words_seen", "outputs",
               "hits", "misses", "sizes", "ext", "exts", "paths", "dirs", "urls", "hosts", "emails", "codes",
               "seen_names", "result_set", "text_out", "s", "t", "u", "w", "z", "out_str", "found", "todo", "done_ids",
               "chars", "vowels", "primes", "evens", "odds", "squares", "table", "board", "image", "kernel", "bias",
               "sample", "samples", "points", "edges", "nodes_seen", "graph", "adj", "layer", "layers", "block")
FUNCTIONS = ("compute", "gather", "scan", "walk", "merge", "split", "encode", "decode", "clean", "normalize",
             "summarize", "count", "filter", "select", "index", "convert", "emit", "dump", "join", "flatten",
             "tokenize", "describe", "visit", "resolve", "expand", "reduce", "pack", "unpack", "validate", "apply")
ARGUMENTS = ("xs", "seq", "items_in", "values_in", "rows_in", "it", "words_in", "lines_in", "stream", "src", "obj",
             "doc", "words_list", "records", "entries")
STRING_WORDS = ("hello", "world", "alpha", "beta", "gamma", "delta", "red", "green", "blue", "yes", "north", "south",
                "east", "west", "apple", "orange", "cat", "dog", "start", "stop", "begin", "end", "left", "right",
                "up", "down", "small", "large", "fast", "slow", "warning", "skipping", "retry", "saved", "created",
                "deleted", "updated", "ready", "pending", "total", "count", "size", "width", "height", "score",
                "level", "step", "epoch", "batch", "rate", "this", "that", "there", "here", "some", "more", "less",
                "x", "y", "id", "ms", "px", "kb", "please", "try", "again", "later", "welcome", "goodbye", "unit",
                "test", "sample", "debug", "info", "trace", "%s", "%d", "=", "->", "#", "-", "/", "*")
CALLS = ("len", "sorted", "str", "repr", "sum", "list", "tuple", "round", "hash", "ord")


def _ident(rng: random.Random) -> str:
    return rng.choice(IDENTIFIERS)


def _idents(rng: random.Random, k: int) -> list[str]:
    return rng.sample(IDENTIFIERS, k)


# Words a made-up name must not be: the task templates' vocabulary, so no prompt's names occur in generated text
# (precompute.lm.tasks is read for its lists alone), and Python's keywords and builtins, so names stay names.
_RESERVED = frozenset({*tasks._NAMES, *tasks._QUALIFIERS, *tasks._FUNCS, *tasks._OBJECTS, *tasks._WORDS,
                       tasks.FIXED_VARIABLE, *keyword.kwlist, *dir(builtins)})


@functools.cache
def _name_parts() -> tuple[str, ...]:
    """The committed tokenizer's whole lowercase words of 3+ letters (``Ġword`` tokens) that are not reserved: the
    pieces made-up names are built from, so a name is one to three tokens long, as the tasks' names are."""
    vocab = tokenizing.load_tokenizer().get_vocab()
    return tuple(sorted(word for token in vocab if token.startswith("Ġ") and (word := token[1:]).isalpha()
                        and word.islower() and len(word) >= 3 and word not in _RESERVED))


def _made_up_name(rng: random.Random) -> str:
    """An identifier of one or two words of the vocabulary (``sheet``, ``loop_rank``): thousands of names, so a model
    must bind a variable to its type by matching the name wherever it recurs, as the tasks' unseen names need, not
    learn how each of a hundred known names tends to grow."""
    parts = _name_parts()
    while True:
        name = "_".join(rng.choice(parts) for _ in range(rng.choice((1, 1, 2))))
        if name not in _RESERVED:
            return name


def _fresh_idents(rng: random.Random, k: int) -> list[str]:
    """``k`` distinct names, each a known identifier one time in four and made up otherwise."""
    names: list[str] = []
    while len(names) < k:
        name = _ident(rng) if rng.random() < 0.25 else _made_up_name(rng)
        if name not in names:
            names.append(name)
    return names


def _words(rng: random.Random, low: int = 1, high: int = 6) -> str:
    return " ".join(rng.choice(STRING_WORDS) for _ in range(rng.randint(low, high)))


def _string(rng: random.Random, names: list[str]) -> str:
    """A string literal, either quote, sometimes an f-string with a placeholder, sometimes holding the other quote."""
    quote = rng.choice("'\"")
    other = "'" if quote == '"' else '"'
    body = _words(rng)
    roll = rng.random()
    if roll < 0.15:
        body = f"{body} {{{rng.choice(names)}}} {_words(rng, 1, 3)}"
        return f"f{quote}{body}{quote}"
    if roll < 0.25:
        body = f"{body} {other}{_words(rng, 1, 2)}{other}"
    return f"{quote}{body}{quote}"


def _header(rng: random.Random) -> tuple[str, str]:
    """A function definition line and its argument name."""
    arg = rng.choice(ARGUMENTS)
    return f"def {rng.choice(FUNCTIONS)}_{_ident(rng)}({arg}):\n", arg


def quotes_file(rng: random.Random) -> str:
    """A function full of string literals in the contexts code uses them: assignments, returns, calls, dict keys,
    conditionals, logging, comparisons."""
    header, arg = _header(rng)
    lines = [header]
    names = _idents(rng, 4)
    for _ in range(rng.randint(3, 9)):
        a, b, c, d = rng.sample(names, 4)
        lines.append("    " + rng.choice((
            f"{a} = {_string(rng, names)}",
            f"{a} = {b} + {_string(rng, names)}",
            f"{a} += {_string(rng, names)}",
            f"print({_string(rng, names)})",
            f"print({_string(rng, names)}, {b})",
            f"{a} = {{{_string(rng, names)}: {b}, {_string(rng, names)}: {c}}}",
            f"{a}[{_string(rng, names)}] = {_string(rng, names)}",
            f"if {a} == {_string(rng, names)}:\n        {b} = {_string(rng, names)}",
            f"{a} = {b}.get({_string(rng, names)}, {_string(rng, names)})",
            f"{a} = {_string(rng, names)} if {b} else {_string(rng, names)}",
            f"{a} = {b} or {_string(rng, names)}",
            f"{a}.append({_string(rng, names)})",
            f"{a} = {_string(rng, names)}.join({b})",
            f"{a} = {_string(rng, names)}.format({b})",
            f"assert {a}, {_string(rng, names)}",
            f"raise KeyError({_string(rng, names)})",
            f"{a} = [{_string(rng, names)}, {_string(rng, names)}, {_string(rng, names)}]",
            f"{a} = {d}({_string(rng, names)}, {c}={_string(rng, names)})",
        )) + "\n")
    lines.append(f"    return {rng.choice(names)}\n")
    return "".join(lines)


def _atom(rng: random.Random, names: list[str], plain: bool = False) -> str:
    """A list element; ``plain`` ones (a number or a name) end a literal, so its closing brackets are tokens of their
    own (``x[3]]`` would merge an index's bracket into them)."""
    roll = rng.random() * (0.75 if plain else 1.0)
    if roll < 0.45:
        return str(rng.randint(0, 99))
    if roll < 0.6:
        return f"{rng.randint(0, 9)}.{rng.randint(0, 9)}"
    if roll < 0.75:
        return rng.choice(names)
    if roll < 0.85:
        return f"{rng.choice(names)}[{rng.randint(0, 5)}]"
    if roll < 0.92:
        return f"{rng.choice(CALLS)}({rng.choice(names)})"
    return f"-{rng.randint(1, 9)}"


def nested_list(rng: random.Random, names: list[str], depth: int) -> str:
    """A list literal nested ``depth`` deep (1-3), rows of varied length, the last element plain."""
    if depth == 1:
        count = rng.randint(1, 6)
        return "[" + ", ".join(_atom(rng, names, plain=i == count - 1) for i in range(count)) + "]"
    return "[" + ", ".join(nested_list(rng, names, depth - 1) for _ in range(rng.randint(1, 4))) + "]"


def _maybe_in_function(rng: random.Random, names: list[str]) -> tuple[list[str], str]:
    """Half the time a function header whose argument replaces ``names[0]``: (the lines so far, the body's indent)."""
    if rng.random() < 0.5:
        header, names[0] = _header(rng)
        return [header], "    "
    return [], ""


def lists_file(rng: random.Random) -> str:
    """Assignments, returns and calls with list literals of depth 1-3. Most end their line with the closing brackets
    (so ``]`` and ``]]`` are tokens of their own, as where code ends a statement); some close inside a call or loop."""
    names = _idents(rng, 5)
    lines, indent = _maybe_in_function(rng, names)
    for _ in range(rng.randint(3, 8)):
        depth = rng.choice((1, 1, 1, 2, 2, 2, 3))
        literal = nested_list(rng, names, depth)
        target = rng.choice(names[1:])
        wrapper = rng.choice(("np.array", "torch.tensor", "list", "tuple", "np.asarray", "validate"))
        lines.append(indent + rng.choice((
            f"{target} = {literal}",
            f"{target} = {literal}",
            f"{target} += {literal}",
            f"{target}[{rng.randint(0, 9)}] = {literal}",
            f"{target}.{rng.choice(IDENTIFIERS)} = {literal}",
            f"{target} = {wrapper}(\n{indent}    {literal}\n{indent})",
            f"{target}.extend({literal})",
            f"for {names[0]} in {literal}:\n{indent}    {target}.append({names[0]})",
        )) + "\n")
    if indent:
        lines.append(f"    return {nested_list(rng, names, rng.choice((1, 2)))}\n")
    return "".join(lines)


# (initial value, how it grows, what a grown value looks like) per accumulator kind
_GROWTH: dict[str, tuple[tuple[str, ...], Callable[[str, str], str]]] = {
    "set": (("set()",), lambda var, item: f"{var}.add({item})"),
    "str": (('""', "''"), lambda var, item: f"{var} += {item}"),
    "list": (("[]",), lambda var, item: f"{var}.append({item})"),
    "int": (("0",), lambda var, item: f"{var} += 1"),
    "dict": (("{}",), lambda var, item: f"{var}[{item}] = 1"),
}


def _string_item(rng: random.Random, item: str) -> str:
    return rng.choice((item, f"str({item})", f"{item}.lower()", _string(rng, [item]), f"{item} + ' '",
                       f'"{rng.choice(STRING_WORDS)}"'))


def accumulators_file(rng: random.Random) -> str:
    """A function that builds accumulators and grows them after unrelated statements, as code does: usually one (a
    set grown by ``.add`` or a string by ``+=``), sometimes two or three of different kinds (a list, a counter, a
    dict beside them), so the type set at the top, not the last method seen, decides how a variable grows."""
    header, arg = _header(rng)
    kinds = [rng.choice(("set", "str"))]
    if rng.random() < 0.4:
        kinds += rng.sample([kind for kind in _GROWTH if kind != kinds[0]], rng.randint(1, 2))
        rng.shuffle(kinds)
    names = _idents(rng, len(kinds) + 2)
    item, other = names[-2:]
    lines = [header]
    for kind, var in zip(kinds, names):
        lines.append(f"    {var} = {rng.choice(_GROWTH[kind][0])}\n")
    for _ in range(rng.randint(0, 2)):
        lines.append(f"    {other} = {rng.choice((f'len({arg})', '0', 'None', f'{arg}[0]', 'True', '[]'))}\n")
    lines.append(f"    {rng.choice((f'for {item} in {arg}:', f'for {item} in sorted({arg}):', f'if {arg}:'))}\n")
    body = "        "
    order = kinds * rng.randint(1, 3)
    rng.shuffle(order)
    for kind in order:
        var = names[kinds.index(kind)]
        if rng.random() < 0.4:
            lines.append(f"{body}{other} = {rng.choice((item, f'{other} + 1', f'len({item})', '[]'))}\n")
        grown = _string_item(rng, item) if kind == "str" else item
        lines.append(body + _GROWTH[kind][1](var, grown) + "\n")
    lines.append(f"    return {rng.choice(names[:len(kinds)])}\n")
    return "".join(lines)


def _row(rng: random.Random, names: list[str], width: int) -> str:
    """A flat list of ``width`` elements, the last one plain (so its closing brackets are tokens of their own)."""
    return "[" + ", ".join(_atom(rng, names, plain=i == width - 1) for i in range(width)) + "]"


def matrices_file(rng: random.Random) -> str:
    """Short statements, each ending its line with a list literal of depth one (``]``) or two (``]]``) in equal
    number: a flat list, or rows of a matrix (1-4 rows, 1-5 wide, sometimes ragged). Lines this short put a closing
    decision every dozen tokens, where ``lists_file``'s deep literals put one every fifty or more; indexed names and
    calls inside add closed brackets to count past."""
    names = _fresh_idents(rng, 5)
    lines, indent = _maybe_in_function(rng, names)
    for _ in range(rng.randint(4, 10)):
        if rng.random() < 0.5:
            literal = _row(rng, names, rng.randint(1, 6))
        else:
            width = rng.randint(1, 5)
            rows = [_row(rng, names, width if rng.random() < 0.7 else rng.randint(1, 5))
                    for _ in range(rng.randint(1, 4))]
            literal = "[" + ", ".join(rows) + "]"
        target = rng.choice(names[1:])
        lines.append(indent + rng.choice((
            f"{target} = {literal}",
            f"{target} = {literal}",
            f"{target} += {literal}",
            f"{target}[{rng.randint(0, 9)}] = {literal}",
            f"{target}.{rng.choice(IDENTIFIERS)} = {literal}",
            f"{target} = {rng.choice(('np.array', 'torch.tensor', 'np.asarray'))}(\n{indent}    {literal}\n{indent})",
        )) + "\n")
    if indent:
        lines.append(f"    return {names[1]}\n")
    return "".join(lines)


def bindings_file(rng: random.Random) -> str:
    """One accumulator, a set or a string, made at the top of a function and grown at line starts further down,
    with statements on other variables between that grow in other ways (``+= 1``, ``.append``), so only the line
    that made the variable says whether it grows by ``.add`` or ``+=``."""
    return _bindings(rng, most_before=3, most_between=2)


def near_bindings_file(rng: random.Random) -> str:
    """``bindings_file`` with the accumulator first grown a line or two after the line that made it: bindings files
    seldom do so (2 in 100 grow it on the very next line), and the organisms trained on them chose ``+=`` for a set
    grown at once (66% right with no line between, 91% with four; README, "The embedded language organisms")."""
    return _bindings(rng, most_before=1, most_between=1)


def _bindings(rng: random.Random, most_before: int, most_between: int) -> str:
    """A bindings file with up to ``most_before`` statements between the accumulator's line and the block that grows
    it, and up to ``most_between`` before its first growth inside the block (2 before each later one)."""
    header, arg = _header(rng)
    kind = rng.choice(("set", "str"))
    var, item, *others = _fresh_idents(rng, 5)
    lines = [header]
    if rng.random() < 0.5:
        lines.append(f"    {others[0]} = {rng.choice(('0', '[]', '{}', 'None', f'len({arg})'))}\n")
    lines.append(f"    {var} = {rng.choice(_GROWTH[kind][0])}\n")
    lines += [f"    {_bystander(rng, others, arg)}\n" for _ in range(rng.randint(0, most_before))]
    opener = rng.choice((f"for {item} in {arg}:", f"for {item} in sorted({arg}):", f"if {arg}:", None))
    body, value = ("        ", item if opener.startswith("for") else arg) if opener else ("    ", arg)
    if opener:
        lines.append(f"    {opener}\n")
    for growth in range(rng.randint(1, 3)):
        between = most_between if growth == 0 else 2
        lines += [f"{body}{_bystander(rng, others, value)}\n" for _ in range(rng.randint(0, between))]
        grown = _string_item(rng, value) if kind == "str" else value
        lines.append(body + _GROWTH[kind][1](var, grown) + "\n")
    lines.append(f"    return {var}\n")
    return "".join(lines)


def _bystander(rng: random.Random, names: list[str], value: str) -> str:
    """A statement on another variable, some growing it as a list or a counter does."""
    a, b = rng.sample(names, 2)
    return rng.choice((f"{a} = {rng.randint(0, 9)}", f"{a} = []", f"{a} += 1", f"{a}.append({value})",
                       f"{a} = len({b})", f"{a} = {b}.strip()", f"{a} = {{}}", f"{a}.append({b})"))


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "quotes": quotes_file,
    "lists": lists_file,
    "accumulators": accumulators_file,
    "matrices": matrices_file,
    "bindings": bindings_file,
    "near_bindings": near_bindings_file,
}
# Files of each kind per round, by tokens about 45% closing decisions, 36% accumulators, 18% quotes: the corpus
# teaches quotes already; trained on deep ``lists`` and ``accumulators`` named from a fixed list, both organisms
# stayed at or below chance on depth-two closings and, for the tasks' names, on sets (README, "The embedded language
# organisms"), which the short ``matrices`` and ``bindings`` files, with their made-up names, teach.
ROUND = ("matrices", "bindings", "bindings", "bindings", "matrices", "bindings", "quotes")


def parse_round(text: str) -> tuple[str, ...]:
    """A round from its comma-separated kinds (``"accumulators,lists,quotes"``), each a key of ``GENERATORS``."""
    kinds = tuple(kind.strip() for kind in text.split(",") if kind.strip())
    unknown = sorted(set(kinds) - set(GENERATORS))
    if not kinds or unknown:
        raise ValueError(f"a round lists generator kinds from {sorted(GENERATORS)}; got {text!r}")
    return kinds


def files(seed: int, kinds: tuple[str, ...] = ROUND) -> Iterator[str]:
    """An endless seeded stream of generated files, the generators ``kinds`` in turn, round after round (seeds are
    ``synthetic/<seed>``: the tasks draw theirs from ``<task>/<split>/<seed>``)."""
    rng = random.Random(f"synthetic/{seed}")
    while True:
        for kind in kinds:
            yield GENERATORS[kind](rng)


def chunks(tokenizer: Tokenizer, seed: int,
           kinds: tuple[str, ...] = ROUND) -> Iterator[tuple[list[str], list[np.ndarray]]]:
    """The stream ``files(seed, kinds)`` in chunks of ``CHUNK``: (texts, each text's ids followed by
    ``<|endoftext|>``, as corpus documents are, uint16)."""
    eot = tokenizing.eot_id(tokenizer)
    stream = files(seed, kinds)
    while True:
        texts = [next(stream) for _ in range(CHUNK)]
        yield texts, [np.array([*e.ids, eot], dtype=np.uint16)
                      for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def tokens(tokenizer: Tokenizer, count: int, seed: int, kinds: tuple[str, ...] = ROUND) -> np.ndarray:
    """Whole chunks of the stream until at least ``count`` tokens: uint16 [n >= count], the generated text a training
    run reads (``train_tinylm`` records n on the card, so ``texts`` gives back the very files)."""
    pieces, total = [], 0
    for _, ids in chunks(tokenizer, seed, kinds):
        pieces += ids
        total += sum(map(len, ids))
        if total >= count:
            return np.concatenate(pieces)
    raise AssertionError("unreachable: the stream is endless")


def texts(tokenizer: Tokenizer, count: int, seed: int, kinds: tuple[str, ...] = ROUND) -> list[str]:
    """The files behind ``tokens(tokenizer, count, seed, kinds)``."""
    out, total = [], 0
    for chunk, ids in chunks(tokenizer, seed, kinds):
        out += chunk
        total += sum(map(len, ids))
        if total >= count:
            return out
    raise AssertionError("unreachable: the stream is endless")
