"""supervisord as galaxyctl runs it: ``python -m galaxyctl_libs.backends.supervisor.launch -c CONF``.

supervisor's XML-RPC channel sends at most 4 KiB of a reply per turn of supervisord's event loop,
and each turn polls every process's pipes: a ``getAllProcessInfo`` of 2,000 processes (about
2.4 MB) took some 600 turns, each costing O(processes), so ``status`` grew with the square of
the site's size.  The channel's send size is a documented class attribute of supervisor's
(``ac_out_buffer_size``, asynchat's); set larger here, before supervisord's own ``main``, a reply
leaves in a few turns.  Nothing else of supervisord changes: same options, same config file.
"""

REPLY_CHUNK_BYTES = 1 << 20  # per turn of the event loop; the socket takes what its buffer holds


def main():
    from supervisor import http, supervisord

    http.deferring_http_channel.ac_out_buffer_size = REPLY_CHUNK_BYTES
    supervisord.main()


if __name__ == "__main__":
    main()
