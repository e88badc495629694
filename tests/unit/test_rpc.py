"""The XML-RPC reply parser that talks to supervisord (pure: bytes in, values out)."""

import pytest

from galaxyctl_libs.backends.supervisor import rpc


def reply(value_xml):
    return (
        f"<?xml version='1.0'?><methodResponse><params><param><value>{value_xml}</value></param></params>"
        "</methodResponse>"
    ).encode()


def test_scalars_arrays_and_structs():
    body = reply(
        "<array><data><value><struct><member><name>name</name><value><string>gunicorn</string></value>"
        "</member><member><name>pid</name><value><int>12</int></value></member><member><name>ok</name>"
        "<value><boolean>1</boolean></value></member><member><name>bare</name><value>text &amp; more</value>"
        "</member></struct></value></data></array>"
    )
    assert rpc.parse_response(body) == [{"name": "gunicorn", "pid": 12, "ok": True, "bare": "text & more"}]


def test_fault_is_raised_with_its_string():
    body = (
        b"<?xml version='1.0'?><methodResponse><fault><value><struct><member><name>faultCode</name><value><int>10"
        b"</int></value></member><member><name>faultString</name><value><string>BAD_NAME: x</string></value>"
        b"</member></struct></value></fault></methodResponse>"
    )
    with pytest.raises(rpc.Fault) as caught:
        rpc.parse_response(body)
    assert caught.value.faultString == "BAD_NAME: x" and caught.value.faultCode == 10


@pytest.mark.parametrize("body", [b"", b"<not xml", b"<?xml version='1.0'?><methodResponse></methodResponse>"])
def test_garbage_is_a_protocol_error_not_a_traceback(body):
    with pytest.raises(rpc.ProtocolError):
        rpc.parse_response(body)


def test_request_body_escapes_text():
    assert b"<string>a&lt;b&amp;c</string>" in rpc.request_body("supervisor.x", ["a<b&c"])
    with pytest.raises(TypeError):
        rpc.request_body("supervisor.x", [1.5])


def test_request_body_of_a_multicall_is_what_xmlrpc_client_writes():
    """system.multicall's parameter (an array of structs holding arrays) reads back as xmlrpc.client
    reads it: what supervisord's own parser gets."""
    import xmlrpc.client

    calls = [{"methodName": "supervisor.startProcess", "params": ["handler:handler_0", False]}, {"params": [1]}]
    params, method = xmlrpc.client.loads(rpc.request_body("system.multicall", [calls]))
    assert method == "system.multicall" and params == (calls,)


def _answer(value):
    import xmlrpc.client

    return xmlrpc.client.dumps((value,), methodresponse=True).encode("utf-8")


@pytest.mark.parametrize(
    "value",
    [
        [],
        [{}],
        [{"name": "handler_0", "pid": 12, "ok": True, "no": False, "spawnerr": "", "big": 2**31 - 1}],
        [{"description": "a <b> & c &amp; d", "name": "é ✓ 日本"}, {"name": "second", "stop": -1}],
        [{"nested": {"a": 1}}],  # not flat: expat reads it
        [{"ratio": 1.5}, {"list": [1, "x"]}],  # doubles and arrays: expat
        "not an array",
        [1, "x"],  # an array of scalars: expat
    ],
)
def test_the_fast_reading_of_getallprocessinfo_reads_what_expat_and_xmlrpc_client_read(value):
    """getAllProcessInfo's reply (an array of flat structs) is read by splitting on its markup;
    whatever it holds, the answer is xmlrpc.client's, and anything else falls back to expat."""
    import xmlrpc.client

    body = _answer(value)
    assert rpc.parse_response(body) == xmlrpc.client.loads(body)[0][0]
    flat = isinstance(value, list) and all(
        isinstance(row, dict) and all(isinstance(v, (str, int)) for v in row.values()) for row in value
    )
    assert (rpc._array_of_structs(body) == value) if flat else (rpc._array_of_structs(body) is None)


def test_a_character_reference_or_a_changed_layout_falls_back_to_expat():
    body = _answer([{"name": "x", "d": "a"}]).replace(b"<string>a</string>", b"<string>&#65;&lt;</string>")
    assert rpc._array_of_structs(body) is None and rpc.parse_response(body) == [{"name": "x", "d": "A<"}]
    spaced = _answer([{"name": "x"}]).replace(b"<member>\n", b"<member>  ")
    assert rpc._array_of_structs(spaced) is None and rpc.parse_response(spaced) == [{"name": "x"}]
    assert rpc._array_of_structs(_answer([{"name": "x", "pid": 3}])) == [{"name": "x", "pid": 3}]
    for damaged in (b"&", b"&lt", b"&quot;", b"<", b"</string>"):  # what xmlrpc.client never writes in a value
        body = _answer([{"name": "x", "d": "a"}]).replace(b"<string>a</string>", b"<string>" + damaged + b"</string>")
        assert rpc._array_of_structs(body) is None
    flat = _answer([{"name": "x", "pid": 3}])
    for a, b in ((b"<int>3</int>", b"<int>3</string>"), (b"<int>3</int>", b"<int>3</i4>"),
                 (b"<string>x</string>", b"x</string>"), (b"<string>x</string>", b"<string>x")):  # fmt: skip
        assert rpc._array_of_structs(flat.replace(a, b)) is None, b  # expat refuses them
    for text in ("a\rb", "a\x0bb", "a\x00b", "a\ufffeb"):  # expat reads \r as \n and refuses the rest
        assert rpc._array_of_structs(_answer([{"name": text}])) is None, text
    control = _answer([{"name": "x", "d": "a"}]).replace(b">a<", b">\x02s<")
    assert rpc._array_of_structs(control) is None
    cut = _answer([{"name": "x"}, {"name": "y"}]).replace(b"</struct></value>\n<value><struct>", b"")
    assert rpc._array_of_structs(cut) is None
