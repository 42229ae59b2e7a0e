"""A user's task in Python, as `atlascope tasks --python tests.user_task:NAME` and `precompute --tasks` load it:
whether a list literal is closed with `]` right after its first element or continues with `,`."""

from __future__ import annotations

import random

from precompute.lm.tasks import Pair, Task


def _pair(rng: random.Random, answer: str) -> Pair:
    name = rng.choice(("items", "values", "rows", "parts"))
    if answer == "]":
        return Pair(f"{name} = [{rng.randint(0, 99)}", "]", ",", rest="\n")
    return Pair(f"{name} = [{rng.randint(0, 99)}, {rng.randint(0, 99)}", ",", "]", rest=" 7]\n")


ONE_OR_MORE = Task("one_or_more", "A list closes after one element or goes on.", ("]", ","), _pair)


def one_or_more() -> Task:
    return ONE_OR_MORE


NOT_A_TASK = 3
