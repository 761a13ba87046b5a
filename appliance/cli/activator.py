"""`appliance activator`: the privileged dm-verity activation service (loader.activator.service).

Runs as root in its own unit (image/systemd/appliance-activator.service), without network, and
activates models for the unprivileged appliance (`appliance serve --model-access activator`),
which it recognises by uid. It resolves names and reads trusted records in its own directories;
the appliance can only name a model and the digest it expects. On SIGTERM or SIGINT it stops
serving, then deactivates what is still active (see loader/activator/service.py for why).
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import signal
import socket
import sys
from pathlib import Path

from appliance.logs import configure_json_logging
from loader.activator.dm_verity import DmVerityActivator
from loader.activator.service import ActivatorServer, ActivatorService, ActivatorSettings
from loader.errors import ActivatorError

EXIT_CONFIG = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "activator",
        help="privileged dm-verity activation service for `serve --model-access activator`",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--socket", type=Path, required=True, metavar="PATH", help="Unix socket to listen on")
    add("--models-dir", type=Path, required=True, metavar="DIR",
        help="model images (<name>.img + <name>.verity)")
    add("--roothash-dir", type=Path, required=True, metavar="DIR",
        help="trusted records (<name>.roothash)")
    add("--mount-dir", type=Path, required=True, metavar="DIR",
        help="where active models are mounted (created 0755), e.g. /run/appliance-models")
    add("--allow-uid", required=True, metavar="UID",
        help="the only uid served (number or user name): the appliance's")
    add("--group", metavar="NAME", help="group of the 0660 socket: the appliance's")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_json_logging(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    try:
        settings = ActivatorSettings(
            socket_path=args.socket, models_dir=args.models_dir, roothash_dir=args.roothash_dir,
            mount_dir=args.mount_dir, allowed_uid=_uid(args.allow_uid), group=args.group,
        )
        service = ActivatorService(settings, DmVerityActivator())
        server = ActivatorServer(settings, service)
    except (ValueError, OSError) as error:
        print(f"appliance activator: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except ActivatorError as error:  # start-up reconciliation failed (e.g. unreadable mount table)
        print(f"appliance activator: {error}", file=sys.stderr)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop())
    notify_ready()
    server.serve_forever()
    service.deactivate_all()
    return 0


def notify_ready() -> None:
    """Type=notify: the socket and the mount dir exist, so the appliance unit may start."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(b"READY=1")


def _uid(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise ValueError(f"--allow-uid: no such user {value!r}") from None
