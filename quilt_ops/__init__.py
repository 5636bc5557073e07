"""quilt-ops: safe, scripted operations on a Quilt Teams Registry host.

Tasks (see ``quilt_ops.tasks``) are thin: they read options and config, call the
library modules below, render the result and map it to an exit status.

- ``config``: the ``quilt`` settings, validated
- ``ssh``: connections with host-key checking, remote commands
- ``hosts``: the target hosts, and running on each in parallel
- ``local``: ``--local``, the registry host itself as a target (no SSH)
- ``docker_access``: Docker for a step: the CLI in its script, or the Docker SDK (``--local``)
- ``hostfiles``: files on the host (SFTP reads, atomic replace, backups)
- ``lock``: the host lock
- ``containers``: ``docker inspect`` and removal of the registry's containers
- ``health``: the health checks and their verdicts
- ``restart``: recreate the containers and wait for health
- ``envfile``: the env file's key lines, rewritten byte for byte
- ``keys``: RegistryUser's IAM access keys
- ``rotation``: the key rotation, its journal, rollback and resume
- ``admin``: create-admin's validation and prompt-answering session
- ``stacks``: registry CloudFormation stacks
- ``audit``: the local audit log
- ``output``: progress, tables, JSON, Nagios and Prometheus formats
- ``status`` and ``errors``: exit statuses and the exceptions that map to them
"""

__version__ = "0.2.0"
