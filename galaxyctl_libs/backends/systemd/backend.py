"""systemd as a galaxyctl backend: backends.base.Backend over render.py and client.py."""

from galaxyctl_libs.backends.base import Backend
from galaxyctl_libs.backends.systemd import render
from galaxyctl_libs.backends.systemd.client import SystemdController, write_units


class SystemdBackend(Backend):
    """Units in the unit dir (system or user manager), named as gravity names them: the processes
    of one gravity service (with ``use_service_instances``) are one template unit's instances."""

    name = "systemd"

    def __init__(self, user_mode=False, unit_dir=None):
        self.user_mode = user_mode
        self.unit_dir = unit_dir or render.default_unit_dir(user_mode)

    def paths(self, state_dir, run_dir=None):
        return render.Paths(state_dir, self.unit_dir, self.user_mode, run_dir)

    def render(self, paths, instances_services, log_dirs):
        """The units; ``log_dirs`` is unused (all None, see log_dir): the journal keeps the logs."""
        return render.render_units(paths, instances_services)

    def managed_dir(self, paths):
        """galaxyctl's own directory, never the unit dir: ``reconcile`` removes whatever it was not
        given there, and the unit dir holds every other unit of the machine.  Stale galaxy units
        are the controller's to remove, by the ``# galaxyctl-state=`` line each unit carries."""
        return paths.root

    def target_name(self, service, grouped):
        return render.unit_name(service, grouped)

    def log_dir(self, instance):
        """Never a directory: the journal keeps every service's output, as under gravity 1.x.  A
        file there would be opened by systemd as root, following links (render.py's module doc)."""
        return None

    def log_file(self, service, log_dir, grouped):
        return None

    def write(self, paths, files, run_as=(None, None)):
        """Write changed units, remove this state dir's stale ones (marked files only): Changes.
        Unit files are systemd's (root's, in system mode), whoever the units run as."""
        return write_units(paths, files, SystemdController(paths))

    def recorded(self, paths):
        return (self.name, paths)

    def unloaded(self, paths):
        """Units systemd has not loaded cannot be started: said, not left for 'start' to find out."""
        systemctl = "systemctl --user" if self.user_mode else "systemctl"
        return (
            f"the unit files in {paths.unit_dir} are written but not loaded: systemd cannot be reached "
            f"({systemctl} failed); run 'galaxyctl update' again where systemd runs (or '{systemctl} daemon-reload')"
        )

    def controller(self, paths, run_as=(None, None), **kwargs):
        return SystemdController(paths, run_as=run_as, **kwargs)


SYSTEMD = SystemdBackend()
