"""The command line of the sandbox (``scripts/sandbox``): a thin layer over ``Sandbox`` and ``Host``.

    scripts/sandbox up [--host NAME] [--aliases N] [--registry-port N] [--catalog-port N]
    scripts/sandbox down [--host NAME]                 (no --host: every host, and the folder)
    scripts/sandbox status [--host NAME] [--json]
    scripts/sandbox env [--host NAME]
    scripts/sandbox fault set|clear NAME [VALUE] [--host NAME]   (host faults)
    scripts/sandbox fault aws KEY=VALUE ... [--host NAME]        (AWS faults, e.g. new_key_delay=20)

Without --host, commands act on the main host (ssh alias ``sandbox``). Known host
names: ``main``, ``names`` (other user, folder and container names), ``w<N>``
(the host of pytest-xdist worker N); an existing host keeps its shape.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from typing import Any

from .host import HOST_FAULTS, Host
from .sandbox import Sandbox
from .shapes import MAIN, NAMES, HostShape, worker_shape
from .util import SandboxError


def shape_for(sandbox: Sandbox, name: str) -> HostShape:
    """The shape of host ``name``: its current one when it exists, else a known one."""
    state = sandbox.load(name)
    if state:
        return state.shape
    if name == MAIN.name:
        return MAIN
    if name == NAMES.name:
        return NAMES
    match = re.fullmatch(r"w([1-9][0-9]{0,3})", name)
    if match:
        return worker_shape(int(match.group(1)))
    raise SandboxError(f"unknown host {name!r}: main, names or w<N>")


def cmd_up(sandbox: Sandbox, args: argparse.Namespace) -> int:
    started = time.monotonic()
    shape = shape_for(sandbox, args.host)
    changes: dict[str, Any] = {}
    if args.aliases is not None:
        changes["aliases"] = args.aliases
    if args.registry_port or args.catalog_port:
        changes["ports"] = {
            **shape.ports,
            **({"registry": args.registry_port} if args.registry_port else {}),
            **({"catalog": args.catalog_port} if args.catalog_port else {}),
        }
    host = sandbox.up(shape.with_changes(**changes) if changes else shape)
    print(
        f"sandbox: host {host.name} up in {time.monotonic() - started:.1f}s: "
        f"fab -S {host.ssh_config} -f {host.fabric_config} -H {host.alias} health"
    )
    return 0


def cmd_down(sandbox: Sandbox, args: argparse.Namespace) -> int:
    sandbox.down(args.host)
    print(f"sandbox: down: removed {'host ' + args.host if args.host else 'every host and ' + str(sandbox.root)}")
    return 0


def cmd_status(sandbox: Sandbox, args: argparse.Namespace) -> int:
    try:
        host = sandbox.host(args.host)
    except SandboxError:
        if args.json:
            print(json.dumps({"name": args.host, "up": False}))
        else:
            print(f"sandbox: host {args.host} is not up")
        return 1
    info = host.status()
    ok = (
        info["docker"]["ok"]
        and info["aws"]["ok"]
        and info["database"]["ok"]
        and all(s["ok"] for s in info["sshd"])
        and info["containers"]
        and info["registry"]
        and info["catalog"]
    )
    if args.json:
        print(json.dumps({**info, "up": True, "ok": ok}, indent=2))
        return 0 if ok else 1

    def word(flag: bool) -> str:
        return "up  " if flag else "DOWN"

    print(f"host       {host.name} (ssh {', '.join(host.aliases)}; {host.login_user}@127.0.0.1:{host.ssh_port})")
    print(f"docker     {word(info['docker']['ok'])} {info['docker']['host']}")
    sshds = ", ".join(f"{alias} :{s['port']}" for alias, s in zip(host.aliases, info["sshd"], strict=True))
    print(f"sshd       {word(all(s['ok'] for s in info['sshd']))} {sshds}")
    print(f"aws        {word(info['aws']['ok'])} {info['aws']['endpoint']} (stack {info['aws']['stack']})")
    db = info["database"]
    print(f"database   {word(db['ok'])} {db['endpoint']} (DB instance {db['instance']}, PostgreSQL)")
    print(f"containers {word(info['containers'])} {', '.join(host.containers.values())}")
    print(f"registry   {word(info['registry'])} {host.probes['registry']}")
    print(f"catalog    {word(info['catalog'])} {host.probes['catalog']}")
    if info["faults"]:
        print(f"faults     {', '.join(info['faults'])}")
    print(f"folder     {host.registry_dir}")
    return 0 if ok else 1


def cmd_env(sandbox: Sandbox, args: argparse.Namespace) -> int:
    host = sandbox.host(args.host)
    for key, value in host.aws_env().items():
        print(f"export {key}={value}")
    print(f"export QUILT_OPS_SANDBOX_DIR={sandbox.root}")
    print(f"# fab -S {host.ssh_config} -f {host.fabric_config} -H {host.alias} health")
    return 0


def cmd_fault(sandbox: Sandbox, args: argparse.Namespace) -> int:
    host: Host = sandbox.host(args.host)
    if args.action == "aws":
        settings: dict[str, Any] = {}
        for item in args.items:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise SandboxError(f"AWS fault {item!r}: expected KEY=VALUE")
            try:
                settings[key] = json.loads(value) if value else 0
            except ValueError:
                settings[key] = value
        current = host.aws_fault(**settings)
        print(f"sandbox: AWS faults of host {host.name}: {json.dumps(current)}")
        return 0
    if not args.items:
        raise SandboxError(f"fault {args.action}: which fault? one of: {', '.join(HOST_FAULTS)}")
    name, value = args.items[0], " ".join(args.items[1:])
    if args.action == "set":
        host.set_fault(name, value)
    else:
        host.clear_fault(name)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def host_option(p: argparse.ArgumentParser, default: str | None = MAIN.name) -> None:
        p.add_argument("--host", default=default, metavar="NAME", help=f"the host (default: {default or 'every host'})")

    up = sub.add_parser("up", help="bring a host up, or heal it (idempotent)")
    host_option(up)
    up.add_argument(
        "--aliases",
        type=int,
        metavar="N",
        help="extra ssh aliases <alias>1..N, each with its own sshd, for the same host",
    )
    up.add_argument("--registry-port", type=int, metavar="N", help="registry probe port (default 5000 when free)")
    up.add_argument("--catalog-port", type=int, metavar="N", help="catalog port (default 80 when free)")
    down = sub.add_parser("down", help="remove a host, or everything the sandbox made")
    host_option(down, None)
    st = sub.add_parser("status", help="say which parts of a host are up")
    host_option(st)
    st.add_argument("--json", action="store_true")
    env = sub.add_parser("env", help="print the export lines that point boto3 at a host's AWS")
    host_option(env)
    fault = sub.add_parser("fault", help="inject or clear a fault")
    fault.add_argument("action", choices=["set", "clear", "aws"])
    fault.add_argument("items", nargs="*", metavar="NAME [VALUE] | KEY=VALUE")
    host_option(fault)
    args = parser.parse_args(argv)

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("sandbox: %(message)s"))
    logger = logging.getLogger("registry_sandbox")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    sandbox = Sandbox()
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env, "fault": cmd_fault}
    try:
        return commands[args.command](sandbox, args)
    except (SandboxError, ValueError) as e:
        print(f"sandbox: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sandbox: error: interrupted", file=sys.stderr)
        return 130
