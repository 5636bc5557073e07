"""quilt-ops tasks for ``fab`` in a checkout: ``fab --list``, ``fab -H HOST health``.

Outside a checkout, use the ``quilt-ops`` console script (same tasks, same options).
"""

from quilt_ops.cli import use_with_fab
from quilt_ops.tasks import ns

__all__ = ["ns"]  # fab looks for the collection named ns

use_with_fab()
