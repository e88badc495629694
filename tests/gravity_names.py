"""Run by gravity 1.2.4's own Python (its venv, never galaxyctl's): the names gravity gives the
services of the config files named on the command line, as JSON on stdout.

For each instance and each of gravity's services: its service name, the process count, the names
supervisorctl knows its processes by (SupervisorProgram.program_names) and systemd's unit names
(SystemdService.unit_names), with gravity's own rule for when names carry the instance name.
Nothing is written and no process manager is asked.
"""

import json
import sys

from gravity.config_manager import ConfigManager
from gravity.process_manager.supervisor import SupervisorProgram
from gravity.process_manager.systemd import SystemdService
from gravity.settings import DEFAULT_INSTANCE_NAME


def main(config_files):
    manager = ConfigManager(config_file=config_files, state_dir=None)
    configs = manager.get_configs()
    use_instance_name = len(configs) > 1 or configs[0].instance_name != DEFAULT_INSTANCE_NAME
    result = []
    for config in configs:
        for service in config.services:
            result.append(
                {
                    "instance": config.instance_name,
                    "service": service.service_name,
                    "count": service.count,
                    "supervisor": SupervisorProgram(config, service, use_instance_name).program_names,
                    "systemd": SystemdService(config, service, use_instance_name).unit_names,
                }
            )
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
