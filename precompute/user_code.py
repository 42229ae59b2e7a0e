"""Import what a user names as ``package.module:NAME`` (a task, a model factory), found from the current directory
or the Python path, as uvicorn finds an app (a console script's path does not hold the directory it runs in)."""

from __future__ import annotations

import importlib
import os
import sys


def import_target(target: str, what: str) -> object:
    """The object ``package.module:NAME`` names; ValueError saying what is wrong (``what``: "a task", ...)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{target!r}: name {what} as package.module:NAME")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(module_name), attr)
    except ImportError as err:
        raise ValueError(f"{target!r}: cannot import {module_name!r} ({err})") from None
    except AttributeError:
        raise ValueError(f"{target!r}: module {module_name!r} has no {attr!r}") from None
