"""The atlas on disk: a SQLite index plus content-addressed blobs. Shared by precompute (writer) and server (reader).

No torch here: the server installs without it.
"""

from store.atlas import Atlas
from store.errors import AtlasError
from store.schema import FORMAT_VERSION

__all__ = ["Atlas", "AtlasError", "FORMAT_VERSION"]
