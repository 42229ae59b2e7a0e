"""Run Python as on a base install, with torch, torchvision, lucent and numpy unimportable.

    python tests/no_torch.py -m MODULE [ARGS...]
    python tests/no_torch.py -c CODE [ARGS...]
"""

import importlib.abc
import runpy
import sys

BLOCKED = {"torch", "torchvision", "lucent", "numpy"}


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: this run stands for an install without the precompute extra")


if __name__ == "__main__":
    sys.meta_path.insert(0, Refuse())
    mode, target, *rest = sys.argv[1:]
    sys.argv = [target, *rest]
    if mode == "-m":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        exec(compile(target, "<no_torch>", "exec"), {"__name__": "__main__", "BLOCKED": BLOCKED})
