"""``python -m quilt_ops``: the quilt-ops console script."""

from .cli import main

main()
