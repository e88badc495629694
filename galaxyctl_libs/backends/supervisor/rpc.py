"""A small XML-RPC client for supervisord's unix socket.

``xmlrpc.client`` drags in ``http.client``, ``email`` and ``ssl`` (about 30 ms and several MB on every
``galaxyctl status`` run from cron).  supervisord's API needs only strings, integers, booleans,
arrays and structs, over HTTP/1.0 on a local socket: this module speaks exactly that, parsing
replies with the C expat parser (getAllProcessInfo's by splitting on its fixed markup).
"""

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
# structs of strings, integers and booleans.  Its fixed markup is replaced by control bytes (which
# XML text never holds) and the rest is split on them: a few passes in C over the whole reply, then
# a little work a member (2,000 processes, 2.3 MB: ~34 ms, as with a regular expression before;
# expat's callbacks take ~0.2 s).  Any other reply, or anything unexpected in this one, goes to expat.  No ``re``: its import (with
# ``enum``'s flags) and compiling would cost every cron ``status`` a few milliseconds.
_ARRAY_HEAD = b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><array><data>\n"
_ARRAY_TAIL = b"</data></array></value>\n</param>\n</params>\n</methodResponse>"
_OPEN, _CLOSE, _MEMBER, _STRUCT, _STRUCT_END = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"
_MARKUP = (  # in this order: typed values before bare ones; a value's kind opens and closes it
    (b"</name>\n<value><string>", _OPEN + b"s"),
    (b"</name>\n<value><int>", _OPEN + b"i"),
    (b"</name>\n<value><i4>", _OPEN + b"4"),
    (b"</name>\n<value><boolean>", _OPEN + b"b"),
    (b"</name>\n<value>", _OPEN + b"v"),
    (b"</string></value>\n</member>\n", _CLOSE + b"s"),
    (b"</int></value>\n</member>\n", _CLOSE + b"i"),
    (b"</i4></value>\n</member>\n", _CLOSE + b"4"),
    (b"</boolean></value>\n</member>\n", _CLOSE + b"b"),
    (b"</value>\n</member>\n", _CLOSE + b"v"),
    (b"<member>\n<name>", _MEMBER),
    (b"<value><struct>\n", _STRUCT),
    (b"</struct></value>\n", _STRUCT_END),
)
_CONVERT = {ord("i"): int, ord("4"): int, ord("b"): lambda text: text.strip() == b"1"}  # s, v: text
# Bytes the fast path leaves to expat: the control characters XML refuses and \r (which expat reads
# as \n), all below a space but tab and newline, and U+FFFE/U+FFFF (XML refuses them too)
_TEXT_CONTROLS = bytes(b for b in range(32) if b not in b"\t\n")
_NOT_CHARACTERS = (b"\xef\xbf\xbe", b"\xef\xbf\xbf")
_ENTITIES = ((b"amp;", b"&"), (b"lt;", b"<"), (b"gt;", b">"))


def _unescape(text):
    """``text`` with XML's three entities supervisord writes expanded; None for any other ``&``."""
    first, *rest = text.split(b"&")
    out = [first]
    for part in rest:
        for entity, char in _ENTITIES:
            if part.startswith(entity):
                out += (char, part[len(entity) :])
                break
        else:
            return None  # another entity or a character reference: expat knows them all
    return b"".join(out)


def _array_of_structs(body):
    """The list of dicts of an array-of-flat-structs reply in xmlrpc.client's layout, else None."""
    body = body.rstrip()
    if not body.startswith(_ARRAY_HEAD) or not body.endswith(_ARRAY_TAIL):
        return None
    inner = body[len(_ARRAY_HEAD) : len(body) - len(_ARRAY_TAIL)]
    if len(inner.translate(None, _TEXT_CONTROLS)) != len(inner) or any(c in inner for c in _NOT_CHARACTERS):
        return None  # expat refuses these (or reads \r as \n); our marks below are among them
    for markup, mark in _MARKUP:
        inner = inner.replace(markup, mark)
    if b"<" in inner:
        return None  # markup of another shape (a double, an array, a nested struct, spacing)
    structs = inner.split(_STRUCT_END)
    members = inner.count(_MEMBER)
    if structs.pop() != b"" or inner.count(_STRUCT) != len(structs):
        return None
    if inner.count(_OPEN) != members or inner.count(_CLOSE) != members:
        return None  # with the checks below: each member has exactly one value, opened and closed
    unescape = _unescape if b"&" in inner else None
    rows = []
    for struct in structs:
        parts = struct.split(_MEMBER)
        if parts[0] != _STRUCT:
            return None
        row = {}
        for member in parts[1:]:
            name, found, value = member.partition(_OPEN)  # value: KIND TEXT \x02 KIND
            if not found or value[-2:-1] != _CLOSE or value[0] != value[-1]:
                return None
            text = value[1:-2]
            if unescape is not None:
                name, text = unescape(name), unescape(text)
                if name is None or text is None:
                    return None
            convert = _CONVERT.get(value[0])
            row[name.decode("utf-8")] = convert(text) if convert else text.decode("utf-8")
        rows.append(row)
    return rows


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
