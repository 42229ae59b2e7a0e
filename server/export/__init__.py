"""``atlascope export``: the atlas taken away, as a static site (``site``) or as Parquet tables (``tables``).

Exports read the atlas as the server does, read-only, and write only into a new directory (``command``).
"""
