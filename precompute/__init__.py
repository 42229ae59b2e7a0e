"""The offline precompute job: model registry and loaders, datasets, embedded organisms, planning, the CLI.

The only writer of an atlas. Modules import torch lazily where the CLI must also serve without it.
"""
