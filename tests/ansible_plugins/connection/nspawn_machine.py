"""An Ansible connection plugin that reaches a systemd-nspawn machine booted by tests/nspawn.py.

The two-host test (tests/test_two_hosts.py) runs the example playbook against two containers on
this machine: there is no SSH server inside them, so each task's command is run through
``nsenter -t LEADER -a`` (every namespace of the container's init, as tests/nspawn.py's
``Machine.run`` does) and files are copied through ``/proc/LEADER/root``.  The leader's PID is the
inventory variable ``ansible_nspawn_leader``.  Test code: a site uses SSH (examples/).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
    name: nspawn_machine
    short_description: run tasks inside a systemd-nspawn container through nsenter (tests only)
    description:
        - Enters every namespace of the container's init process with nsenter; copies files through
          /proc/PID/root. Needs root on the controller.
    author: galaxyctl tests
    options:
        leader:
            description: PID of the container's init (systemd) as seen from the controller.
            type: int
            vars:
                - name: ansible_nspawn_leader
"""

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Connection(ConnectionBase):
    transport = "nspawn_machine"
    has_pipelining = False

    def _leader(self):
        leader = self.get_option("leader")
        if not leader or not os.path.isdir(f"/proc/{int(leader)}/root"):
            raise AnsibleConnectionFailure(f"no container with the leader PID {leader!r}")
        return int(leader)

    def _connect(self):
        self._leader()
        self._connected = True
        return self

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        argv = ["nsenter", "-t", str(self._leader()), "-a", "--", "/bin/sh", "-c", cmd]
        process = subprocess.run(
            argv,
            input=in_data,
            stdin=None if in_data is not None else subprocess.DEVNULL,
            capture_output=True,
            env={"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root"},
            timeout=3600,
        )
        return process.returncode, process.stdout, process.stderr

    def _inside(self, path):
        if not os.path.isabs(path):
            raise AnsibleError(f"nspawn_machine: {path!r} is not an absolute path inside the container")
        return f"/proc/{self._leader()}/root{path}"

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        shutil.copyfile(in_path, self._inside(out_path))

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        shutil.copyfile(self._inside(in_path), out_path)

    def close(self):
        self._connected = False
