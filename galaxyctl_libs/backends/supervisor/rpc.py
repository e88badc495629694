"""A small XML-RPC client for supervisord's unix socket.

``xmlrpc.client`` drags in ``http.client``, ``email`` and ``ssl`` (about 30 ms and several MB on every
``galaxyctl status`` run from cron).  supervisord's API needs only strings, integers, booleans,
arrays and structs, over HTTP/1.0 on a local socket: this module speaks exactly that, parsing
replies with the C expat parser (getAllProcessInfo's with one regular expression).
"""

import re
import time

from galaxyctl_libs.backends.base import Refusal
from galaxyctl_libs.probes import netio

MAX_REPLY_BYTES = 64 << 20  # getAllProcessInfo is about 1 KB a process: room for tens of thousands


def escape(text):
    """XML-escape text (xml.sax.saxutils would import urllib and http.client)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Fault(Refusal):
    """An XML-RPC fault from supervisord (``faultString`` is e.g. ``'BAD_NAME: gunicorn'``)."""

    def __init__(self, code, string):
        super().__init__(f"{code}: {string}")
        self.faultCode = code
        self.faultString = string


class ProtocolError(OSError):
    """The reply was not an XML-RPC response we understand."""


def _param(value):
    if isinstance(value, bool):
        return f"<boolean>{int(value)}</boolean>"
    if isinstance(value, int):
        return f"<int>{value}</int>"
    if isinstance(value, str):
        return f"<string>{escape(value)}</string>"
    if isinstance(value, (list, tuple)):
        return "<array><data>" + "".join(f"<value>{_param(v)}</value>" for v in value) + "</data></array>"
    if isinstance(value, dict):
        members = "".join(
            f"<member><name>{escape(k)}</name><value>{_param(v)}</value></member>" for k, v in value.items()
        )
        return f"<struct>{members}</struct>"
    raise TypeError(f"unsupported XML-RPC parameter {value!r}")


def request_body(method, params):
    values = "".join(f"<param><value>{_param(p)}</value></param>" for p in params)
    return (
        f"<?xml version='1.0'?><methodCall><methodName>{escape(method)}</methodName>"
        f"<params>{values}</params></methodCall>"
    ).encode("utf-8")


class _Struct:
    __slots__ = ("items", "key")

    def __init__(self):
        self.items, self.key = {}, None


_SCALARS = {
    "int": int,
    "i4": int,
    "i8": int,
    "double": float,
    "string": str,
    "boolean": lambda text: text.strip() == "1",
    "nil": lambda text: None,
}


class _Reader:
    """Expat's handlers for a methodResponse: builds its values (lists, dicts, scalars) as they close."""

    def __init__(self):
        self.stack = [[]]  # the open containers: a list for params/arrays, a _Struct for structs
        self.text = []
        self.typed = True  # False while inside a <value> that has no type element yet (a bare string)
        self.fault = False

    def put(self, value):
        top = self.stack[-1]
        if isinstance(top, _Struct):
            top.items[top.key] = value
        else:
            top.append(value)

    def start(self, tag, _attrs):
        self.text.clear()
        if tag == "value":
            self.typed = False
        elif tag == "array":
            self.stack.append([])
            self.typed = True
        elif tag == "struct":
            self.stack.append(_Struct())
            self.typed = True
        elif tag in _SCALARS:
            self.typed = True
        elif tag == "fault":
            self.fault = True

    def end(self, tag):
        content = "".join(self.text)
        self.text.clear()
        if tag in _SCALARS:
            self.put(_SCALARS[tag](content))
        elif tag == "name":
            self.stack[-1].key = content
        elif tag == "array":
            self.put(self.stack.pop())
        elif tag == "struct":
            self.put(self.stack.pop().items)
        elif tag == "value" and not self.typed:
            self.put(content)
            self.typed = True


# getAllProcessInfo's reply, as supervisord writes it (xmlrpc.client's layout): an array of flat
# structs of strings, integers and booleans.  Read with one regular expression, about twice as fast
# as expat's callbacks (2,000 processes: 2.3 MB, ~0.09 s instead of ~0.2 s); any other reply, or
# anything unexpected in this one, goes to expat.
_ARRAY_HEAD = b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><array><data>\n"
_ARRAY_TAIL = b"</data></array></value>\n</param>\n</params>\n</methodResponse>"
_STRUCT_HEAD, _STRUCT_TAIL = b"<value><struct>\n", b"</struct></value>\n"
_MEMBER = re.compile(
    rb"<member>\n<name>([^<&]*)</name>\n<value>(?:<(string|int|i4|boolean)>([^<]*)</\2>|([^<]*))</value>\n</member>\n"
)
_ENTITY = re.compile(rb"&(amp|lt|gt);")
_EXPANDED = {b"amp": b"&", b"lt": b"<", b"gt": b">"}
_CONVERT = {b"int": int, b"i4": int, b"boolean": lambda text: text.strip() == b"1"}


def _array_of_structs(body):
    """The list of dicts of an array-of-flat-structs reply in xmlrpc.client's layout, else None."""
    end = len(body.rstrip()) - len(_ARRAY_TAIL)
    if not body.startswith(_ARRAY_HEAD) or not body.startswith(_ARRAY_TAIL, end):
        return None
    rows, pos, match = [], len(_ARRAY_HEAD), _MEMBER.match
    while pos < end:
        if not body.startswith(_STRUCT_HEAD, pos):
            return None
        pos, row = pos + len(_STRUCT_HEAD), {}
        while not body.startswith(_STRUCT_TAIL, pos):
            found = match(body, pos)
            if found is None:
                return None
            name, kind, typed, bare = found.groups()
            text = typed if kind else bare
            if b"&" in text:
                text = _ENTITY.sub(lambda entity: _EXPANDED[entity.group(1)], text)
                if b"&" in _ENTITY.sub(b"", typed if kind else bare):
                    return None  # another entity or a character reference: expat knows them all
            convert = _CONVERT.get(kind)
            row[name.decode("utf-8")] = convert(text) if convert else text.decode("utf-8")
            pos = found.end()
        rows.append(row)
        pos += len(_STRUCT_TAIL)
    return rows if pos == end else None


def parse_response(body):
    """The value of a methodResponse, or raise Fault."""
    try:
        rows = _array_of_structs(body)
    except (ValueError, UnicodeDecodeError):
        rows = None
    if rows is not None:
        return rows
    from xml.parsers import expat  # only here: status's one reply (getAllProcessInfo) needs none of it

    reader = _Reader()
    parser = expat.ParserCreate("utf-8")
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.text.append
    try:
        parser.Parse(body, True)
    except (expat.ExpatError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"unreadable XML-RPC reply: {exc}") from None
    values = reader.stack[0]
    if reader.fault:
        detail = values[0] if values and isinstance(values[0], dict) else {}
        raise Fault(detail.get("faultCode"), detail.get("faultString", ""))
    if not values:
        raise ProtocolError("empty XML-RPC reply")
    return values[0]


def call(socket_path, method, params=(), timeout=30.0):
    """POST one call to the XML-RPC server on a unix socket and return its value."""
    body = request_body(method, params)
    head = (
        f"POST /RPC2 HTTP/1.0\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode("ascii")
    # bounded in time and size: the socket is in the Galaxy user's dir, and whoever answers on it
    # (its supervisord, or anything the user put there) must not hang or swell a cron status
    deadline = time.monotonic() + timeout
    reply = netio.exchange(netio.connect_unix(socket_path, timeout), head + body, deadline, MAX_REPLY_BYTES + 1)
    if len(reply) > MAX_REPLY_BYTES:
        raise ProtocolError(f"supervisord's reply to {method} is larger than {MAX_REPLY_BYTES >> 20} MiB")
    header, _, payload = reply.partition(b"\r\n\r\n")
    status = header.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        first_line = header.split(b"\r\n", 1)[0].decode("latin-1")
        raise ProtocolError(f"supervisord answered {first_line!r}")
    return parse_response(payload)
