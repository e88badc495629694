"""supervisord as a galaxyctl backend: backends.base.Backend over render.py and client.py."""

from galaxyctl_libs.backends.base import Backend, reconcile
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

    def persistent_paths(self, paths, log_dirs):
        """Its own log beside the services' (persistent), when those are elsewhere."""
        return render.with_persistent_log(paths, log_dirs)

    def write(self, paths, files, run_as=(None, None)):
        """Its files are the Galaxy user's: written and removed with that user's ids."""
        from galaxyctl_libs.rootpolicy import as_user

        with as_user(*run_as):
            return reconcile(paths.root, self.managed_dir(paths), files)


SUPERVISOR = SupervisorBackend()
