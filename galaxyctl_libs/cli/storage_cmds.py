"""Storage commands: the LUKS volume and Onedata spaces (root actions: see rootpolicy).

Each subcommand is ``cmd_x(args) -> int`` beside ``add_x(subparsers)``; heavy modules are imported
inside the commands that need them, so ``status`` and ``--help`` start fast.
"""

import sys

from galaxyctl_libs import exitcodes
from galaxyctl_libs.cli.args import state_dir
from galaxyctl_libs.errors import GalaxyctlError


def add_luks(sub):
    p = sub.add_parser(
        "luks",
        help="the encrypted LUKS volume of gravity.luks: status, open, close",
        description="open: cryptsetup luksOpen + mount (the passphrase is asked on the terminal, "
        "or read from --key-file; never an argument). close: umount + luksClose, refused while "
        "Galaxy is running.",
    )
    p.add_argument("action", choices=("status", "open", "close"))
    p.add_argument("--key-file", help="read the passphrase from this file instead of the terminal")
    p.add_argument("--instance", help="instance whose config holds gravity.luks (default: the only one)")
    p.set_defaults(func=cmd_luks)


def cmd_luks(args):
    from galaxyctl_libs.actions import views
    from galaxyctl_libs.storage import volumes

    storage, instance = views.storage_of(state_dir(args), args.instance)
    if storage.luks is None:
        raise GalaxyctlError(f"{instance.config_path}: no gravity.luks section")
    if args.action == "open":
        passphrase = None
        if not (args.key_file or storage.luks.key_file):
            if not sys.stdin.isatty():
                raise GalaxyctlError("no terminal to ask the passphrase on: use --key-file (or gravity.luks.key_file)")
            import getpass

            passphrase = getpass.getpass(f"Passphrase for {storage.luks.device_path}: ")
        result = volumes.luks_open(storage.luks, passphrase=passphrase, key_file=args.key_file)
    elif args.action == "close":
        result = volumes.luks_close(storage.luks, galaxy_running=views.galaxy_running(state_dir(args)))
    else:
        result = volumes.luks_status(storage.luks)
    state = "open" if result.open else "closed"
    mounted = f"mounted on {result.mount_point}" if result.mounted else f"not mounted ({result.mount_point})"
    print(f"{result.name}: {state}, {mounted}")
    return exitcodes.SUCCESS if args.action != "status" or result.ok else exitcodes.LSB_NOT_RUNNING


def add_onedata(sub):
    p = sub.add_parser(
        "onedata",
        help="Onedata spaces of gravity.onedata: status, mount, umount",
        description="Mount with oneclient; the access token goes to oneclient's environment only.",
    )
    p.add_argument("action", choices=("status", "mount", "umount"))
    p.add_argument("space", nargs="?", help="space name (default for status: every space)")
    p.add_argument("--instance", help="instance whose config holds gravity.onedata (default: the only one)")
    p.set_defaults(func=cmd_onedata)


def cmd_onedata(args):
    from galaxyctl_libs.actions import views
    from galaxyctl_libs.storage import volumes

    storage, _ = views.storage_of(state_dir(args), args.instance)
    if args.action != "status" and not args.space:
        raise GalaxyctlError(f"name the space to {args.action}")
    names = [args.space] if args.space else [space.name for space in storage.onedata.spaces]
    if args.action == "mount":
        volumes.onedata_mount(storage.onedata, args.space)
    elif args.action == "umount":
        volumes.onedata_umount(storage.onedata, args.space)
    code = exitcodes.SUCCESS
    for name in names:
        status = volumes.onedata_status(storage.onedata, name)
        print(f"{name}: {'mounted' if status.mounted else 'not mounted'} on {status.mount_point}")
        if not status.mounted and args.action == "status":
            code = exitcodes.LSB_NOT_RUNNING
    return code
