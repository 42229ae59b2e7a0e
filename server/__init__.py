"""The atlas web server: HTML pages with JSON twins, read-only over ``store``.

Never imports torch, numpy, ``render`` or ``precompute``: a base install serves an atlas.
"""
