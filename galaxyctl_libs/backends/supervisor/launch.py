"""supervisord as galaxyctl runs it: ``python -m galaxyctl_libs.backends.supervisor.launch -c CONF``.

supervisor's XML-RPC channel sends at most 4 KiB of a reply per turn of supervisord's event loop,
and each turn polls every process's pipes: a ``getAllProcessInfo`` of 2,000 processes (about
2.4 MB) took some 600 turns, each costing O(processes), so ``status`` grew with the square of
the site's size.  The channel's send size is a documented class attribute of supervisor's
(``ac_out_buffer_size``, asynchat's); set larger here, before supervisord's own ``main``, a reply
leaves in a few turns.

A big site's supervisord.conf says how many files supervisord must be able to open (render.py's
``; galaxyctl: open files = N`` line, see render.supervisord_limits): the launcher raises its soft
limit to that (up to the hard one; above it, it refuses to start, as supervisord does for
``minfds``), so that ``minfds``, which costs every spawn a close per descriptor below it, keeps
its default.  Nothing else of supervisord changes: same options, same config file.
"""

import sys

REPLY_CHUNK_BYTES = 1 << 20  # per turn of the event loop; the socket takes what its buffer holds
MAX_CONF_BYTES = 1 << 20


def open_files_wanted(conf_text):
    """The number of the ``; galaxyctl: open files = N`` line of supervisord.conf, else 0."""
    from galaxyctl_libs.backends.supervisor.render import OPEN_FILES_LINE

    for line in conf_text.splitlines():
        if line.startswith(OPEN_FILES_LINE) and line[len(OPEN_FILES_LINE) :].strip().isdigit():
            return int(line[len(OPEN_FILES_LINE) :])
    return 0


def raise_open_files(wanted):
    """Raise the soft limit of open files to ``wanted``; an error line when the hard one is lower."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted <= soft:
        return None
    if hard != resource.RLIM_INFINITY and wanted > hard:
        return (
            f"supervisord needs {wanted} open files for this site's processes, and the hard limit is {hard}: "
            "raise it (ulimit -Hn, or LimitNOFILE= of the unit that runs galaxyctl)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return None


def main(argv=None):
    from supervisor import http, supervisord

    argv = sys.argv[1:] if argv is None else argv
    conf = argv[argv.index("-c") + 1] if "-c" in argv[:-1] else None
    if conf is not None:
        with open(conf, encoding="utf-8", errors="replace") as handle:  # run as the Galaxy user: its own file
            problem = raise_open_files(open_files_wanted(handle.read(MAX_CONF_BYTES)))
        if problem:
            sys.exit(f"Error: {problem}")
    http.deferring_http_channel.ac_out_buffer_size = REPLY_CHUNK_BYTES
    supervisord.main(argv)


if __name__ == "__main__":
    main()
