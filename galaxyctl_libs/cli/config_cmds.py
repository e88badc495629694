"""Commands on registered configs: register, deregister, rename, list, instances, show, update.

Each subcommand is ``cmd_x(args) -> int`` beside ``add_x(subparsers)``; heavy modules are imported
inside the commands that need them, so ``status`` and ``--help`` start fast.
"""

from galaxyctl_libs import exitcodes
from galaxyctl_libs.cli.args import state_dir, warn
from galaxyctl_libs.errors import GalaxyctlError, NothingConfigured


def add_register(sub):
    p = sub.add_parser(
        "register",
        help="register Galaxy config files (galaxy.yml) with galaxyctl",
        description="Register config files; does not update or start. Run 'galaxyctl update' after.",
    )
    p.add_argument("config", nargs="+", help="path to galaxy.yml (or a gravity-only file naming galaxy_config_file)")
    p.set_defaults(func=cmd_register)


def cmd_register(args):
    from galaxyctl_libs.core import registration as operations

    for result in operations.register(state_dir(args), args.config):
        warn(result.warnings)
        if result.already:
            print(f"Already registered: {result.path}")
        else:
            print(f"Registered galaxy config: {result.path}")
    return exitcodes.SUCCESS


def add_deregister(sub):
    p = sub.add_parser(
        "deregister",
        help="stop managing config files",
        description="Deregister config files. Run 'galaxyctl update' after to remove their services.",
    )
    p.add_argument("config", nargs="+", help="registered path (or instance name)")
    p.set_defaults(func=cmd_deregister)


def cmd_deregister(args):
    from galaxyctl_libs.core import registration as operations

    for path in operations.deregister(state_dir(args), args.config):
        print(f"Deregistered config: {path}")
    return exitcodes.SUCCESS


def add_rename(sub):
    p = sub.add_parser("rename", help="update the path of a registered config file that has moved")
    p.add_argument("old", help="registered path")
    p.add_argument("new", help="new path")
    p.set_defaults(func=cmd_rename)


def cmd_rename(args):
    from galaxyctl_libs.core import registration as operations

    old, new = operations.rename(state_dir(args), args.old, args.new)
    print(f"Renamed {old} to {new}")
    return exitcodes.SUCCESS


def add_list(sub):
    p = sub.add_parser("list", help="list registered config files")
    p.set_defaults(func=cmd_list)


def cmd_list(args):
    from galaxyctl_libs.core import state

    records = state.load_state(state_dir(args)).config_files
    if not records:
        print("No config files registered")
    for record in records.values():
        print(f"{record.instance_name:<20} {record.path}")
    return exitcodes.SUCCESS


def add_instances(sub):
    p = sub.add_parser("instances", help="list known instances and their services")
    p.set_defaults(func=cmd_instances)


def cmd_instances(args):
    from galaxyctl_libs.core import state

    records = state.load_state(state_dir(args)).config_files
    if not records:
        print("No config files registered")
    for record in records.values():
        services = ", ".join(s.service_name for s in record.services) or "(none yet: run 'galaxyctl update')"
        print(f"{record.instance_name:<20} {record.path}\n{'':<20} services: {services}")
    return exitcodes.SUCCESS


def add_show(sub):
    p = sub.add_parser("show", help="show stored and effective settings of a registered config")
    p.add_argument("config", nargs="?", help="registered path or instance name (default: the only one)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)


def cmd_show(args):
    import json
    from dataclasses import asdict

    from galaxyctl_libs.core import registration as operations
    from galaxyctl_libs.core import state

    current = state.load_state(state_dir(args))
    if not current.config_files:
        raise NothingConfigured()
    if args.config:
        path = operations.registered_path(current, args.config)
    elif len(current.config_files) == 1:
        path = next(iter(current.config_files))
    else:
        raise GalaxyctlError("name the config to show (several or none are registered; see 'galaxyctl list')")
    record = current.config_files[path]
    resolved = operations.resolve_record(record, current.state_dir)
    named = [entry for entry in resolved if entry[0].name == args.config]  # one instance of a gravity: list
    effective = []
    for instance, _, warnings in named or resolved:
        warn(warnings)
        effective.append(
            {
                "instance_name": instance.name,
                "galaxy_config_file": instance.galaxy_config_file,
                "galaxy_root": instance.galaxy_root,
                "log_dir": instance.log_dir,
                "run_as": instance.run_as[0],
                "gravity": asdict(instance.settings),
            }
        )
    # a file holding a gravity: list shows each of its instances
    data = {
        "config_file": path,
        "stored": record.as_dict(),
        "effective": effective[0] if len(effective) == 1 else effective,
    }
    if args.json:
        print(json.dumps(data, indent=2, default=list))
    else:
        import yaml

        print(
            yaml.safe_dump(json.loads(json.dumps(data, default=list)), default_flow_style=False, sort_keys=False),
            end="",
        )
    return exitcodes.SUCCESS


def add_update(sub):
    p = sub.add_parser(
        "update",
        help="apply config changes to the process manager's files (supervisord's, or systemd units) and to the "
        "running manager",
    )
    p.add_argument(
        "--ignore-jobs",
        action="store_true",
        help="remove job handlers even though unfinished jobs are assigned to them (they then wait for a handler "
        "of that name; by default update refuses, naming the jobs)",
    )
    p.set_defaults(func=cmd_update)


def cmd_update(args):
    from galaxyctl_libs.backends.update import update

    result = update(state_dir(args), ignore_jobs=args.ignore_jobs)
    warn(result.warnings)
    for path in result.changes.written:
        print(f"Wrote {path}")
    for path in result.changes.removed:
        print(f"Removed {path}")
    added, changed, removed = result.applied
    for label, groups in (("added", added), ("updated", changed), ("removed", removed)):
        for group in groups:
            print(f"{group}: {label} process group")
    if not result.instances:  # what the last configs left is removed above; nothing runs now
        raise NothingConfigured()
    if not result.changes:
        print("No changes")
    return exitcodes.SUCCESS
