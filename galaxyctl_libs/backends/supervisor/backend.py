"""supervisord as a galaxyctl backend: backends.base.Backend over render.py and client.py."""

from galaxyctl_libs.backends.base import Backend
from galaxyctl_libs.backends.supervisor import render
from galaxyctl_libs.backends.supervisor.client import SupervisorClient


class SupervisorBackend(Backend):
    name = "supervisor"

    def paths(self, state_dir, run_dir=None):
        return render.Paths(state_dir, run_dir)

    def render(self, paths, instances_services, log_dirs):
        return render.render_files(paths, instances_services, log_dirs)

    def managed_dir(self, paths):
        return paths.conf_dir

    def target_name(self, service, grouped):
        return render.program_names(service, grouped)[1]

    def log_file(self, service, log_dir, grouped):
        return render.log_file(service, log_dir, grouped)

    def controller(self, paths, run_as=(None, None), **kwargs):
        return SupervisorClient(paths, run_as=run_as, **kwargs)


SUPERVISOR = SupervisorBackend()
