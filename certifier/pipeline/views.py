"""The read model's old name, kept for ``certifier status`` (``cli.py``) until it imports
:mod:`certifier.pipeline.read` itself; everything else does."""

from certifier.pipeline.read import *  # noqa: F403
from certifier.pipeline.read import __all__ as __all__
