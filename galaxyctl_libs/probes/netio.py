"""One request, one reply, over a local stream socket: what the supervisord RPC and the HTTP probe share."""

import socket
import time

CHUNK = 65536


def _connect(family, address, timeout):
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def connect_unix(path, timeout):
    return _connect(socket.AF_UNIX, path, timeout)


def connect_tcp(host, port, timeout):
    """Try each address of ``host`` in turn (as ``socket.create_connection`` does).

    An ASCII host goes to getaddrinfo as bytes: given a str, it loads the idna codec (with a regex
    compile) every run.
    """
    last_error = OSError(f"no address for {host}")
    wire_host = host.encode("ascii") if host.isascii() else host
    for family, _, _, _, address in socket.getaddrinfo(wire_host, port, 0, socket.SOCK_STREAM):
        try:
            return _connect(family, address, timeout)
        except OSError as exc:
            last_error = exc
    raise last_error


def exchange(sock, payload, deadline=None, limit=None):
    """Send ``payload`` and read until the peer closes (HTTP/1.0), at most about ``limit`` bytes,
    each read bounded by ``deadline`` (a ``time.monotonic()`` value) when given.  Closes ``sock``."""
    try:
        sock.sendall(payload)
        chunks, size = [], 0
        while limit is None or size < limit:
            if deadline is not None:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        sock.close()
