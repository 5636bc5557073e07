"""quilt-ops: safe, scripted operations on a Quilt Teams Registry host.

Tasks (see ``quilt_ops.tasks``) are thin: they read options and config, call the
library modules below, render the result and map it to an exit status.

- ``config``: the ``quilt`` settings, validated
- ``ssh``: connections with host-key checking, remote commands and files
- ``containers``: ``docker inspect`` and removal of the registry's containers
- ``health``: the health checks and their verdicts
- ``restart``: recreate the containers and wait for health
- ``output``: tables, JSON and progress
"""

__version__ = "0.1.0"
