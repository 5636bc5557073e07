"""quilt-ops: safe, scripted operations on a Quilt Teams Registry host.

Tasks (see ``quilt_ops.tasks``) are thin: they read options and config, call the
library modules below, render the result and map it to an exit status.

- ``config`` and ``options``: the ``quilt`` settings and task options, validated
- ``ssh``, ``remote``, ``local``: connections, remote commands (with the process-group kill of
  a command given up on), and ``--local`` (the registry host itself, no SSH)
- ``hosts`` and ``stopping``: the target hosts, run in parallel, stopped cleanly on Ctrl-C
- ``shell``: the remote scripts' shared parts, and reading what they print
- ``docker_access`` and ``containers``: Docker through the CLI in a script or the SDK;
  ``docker inspect`` of the three roles and their verdicts
- ``hostfiles``, ``lock``, ``journal``: files next to the env file (who may write them, atomic
  replace through stdin, private backups), the host lock, the rotation journal
- ``checks``, ``health``, ``account``: verdicts; the host's health in one round trip; the AWS side
- ``restart``: recreate the containers and wait for health
- ``envfile`` and ``masking``: the env file's key lines rewritten byte for byte; secrets masked
- ``keys``, ``rotation_plan``, ``rotation``, ``rotation_fleet``: IAM keys; the rotation's pure
  decisions; one host's rotation, rollback and resume; the rotation across hosts
- ``admin``: create-admin's validation and prompt-answering session
- ``stacks`` and ``backups``: registry CloudFormation stacks; RDS snapshots
- ``exporter``: health as a Prometheus exporter over kept connections
- ``audit``, ``reporting``, ``output``: the audit log; progress as the library reports it;
  tables, JSON, Nagios and Prometheus
- ``status`` and ``errors``: exit statuses and the exceptions that map to them
- ``tasks``, ``executor``, ``cli``: the tasks, how Invoke runs them, the console script
"""

__version__ = "0.3.0"
