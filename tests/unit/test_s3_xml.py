"""Parsing S3 request bodies (``aisync.s3.xml.parse_xml``): defusedxml refuses every DTD,
whatever the encoding, so no entity is expanded or fetched; every refusal is MalformedXML."""

from __future__ import annotations

import pytest

from aisync.s3.xml import S3Error, parse_xml

DELETE = "<Delete><Object><Key>{key}</Key></Object></Delete>"
NAMESPACED = ('<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>'
              "<Object><Key>a/b.txt</Key></Object></Delete>")

INTERNAL_ENTITY = ('<!DOCTYPE Delete [<!ENTITY name "expanded">]>'
                   + DELETE.format(key="&name;"))
EXTERNAL_ENTITY = ('<!DOCTYPE Delete [<!ENTITY file SYSTEM "file:///etc/passwd">]>'
                   + DELETE.format(key="&file;"))
EXTERNAL_DTD = '<!DOCTYPE Delete SYSTEM "http://127.0.0.1:9/evil.dtd">' + DELETE.format(key="k")
PARAMETER_ENTITY = ('<!DOCTYPE Delete [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/x">'
                    "%remote;]>" + DELETE.format(key="k"))
BILLION_LAUGHS = ("<!DOCTYPE Delete [<!ENTITY lol \"lol\">"
                  + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 or "")) * 10}">'
                            for i in range(1, 10))
                  + "]>" + DELETE.format(key="&lol9;"))
EMPTY_DTD = "<!DOCTYPE Delete>" + DELETE.format(key="k")
HOSTILE = {"internal entity": INTERNAL_ENTITY, "external entity": EXTERNAL_ENTITY,
           "external DTD": EXTERNAL_DTD, "parameter entity": PARAMETER_ENTITY,
           "billion laughs": BILLION_LAUGHS, "empty DTD": EMPTY_DTD}


def encodings(document: str) -> dict[str, bytes]:
    """The document as UTF-8 (with and without a declaration) and as UTF-16 (BOM, declaration,
    both byte orders): a byte search for ``<!DOCTYPE`` finds it only in the first two."""
    return {
        "utf-8": document.encode(),
        "utf-8 declared": ('<?xml version="1.0" encoding="UTF-8"?>' + document).encode(),
        "utf-16": ('<?xml version="1.0" encoding="UTF-16"?>' + document).encode("utf-16"),
        "utf-16-le": ('<?xml version="1.0" encoding="UTF-16"?>' + document).encode("utf-16-le"),
        "utf-16-be": "\ufeff".encode("utf-16-be")
                     + ('<?xml version="1.0" encoding="UTF-16"?>' + document).encode("utf-16-be"),
    }


def malformed(body: bytes) -> S3Error:
    with pytest.raises(S3Error) as exc:
        parse_xml(body)
    assert exc.value.code == "MalformedXML" and exc.value.status == 400
    return exc.value


@pytest.mark.parametrize("encoding", list(encodings("")))
def test_well_formed_bodies_parse_in_every_encoding(encoding):
    root = parse_xml(encodings(NAMESPACED)[encoding])
    assert root.tag == "Delete"  # the S3 namespace is stripped
    assert root.findtext("Quiet") == "true"
    assert [o.findtext("Key") for o in root.findall("Object")] == ["a/b.txt"]


@pytest.mark.parametrize("encoding", list(encodings("")))
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_dtds_are_refused_in_every_encoding(kind, encoding):
    body = encodings(HOSTILE[kind])[encoding]
    if encoding.startswith("utf-16"):
        assert b"<!DOCTYPE" not in body and b"<!ENTITY" not in body
    error = malformed(body)
    assert "expanded" not in error.message and "lol" not in error.message


@pytest.mark.parametrize("body", [
    b"", b"not xml", b"<Delete>", b"<Delete></Object>", b"<Delete>&undefined;</Delete>",
    '<Delete/>'.encode("utf-32"),
    b'<?xml version="1.0" encoding="no-such-codec"?><Delete/>',
    b'<?xml version="1.0" encoding="shift_jis"?><Delete/>',
    b'<?xml version="1.0" encoding="cp500"?><Delete/>',
    b"<Delete>\xff\xfe</Delete>",
    b"\x00" * 64,
])
def test_bodies_that_are_not_xml_are_malformed(body):
    malformed(body)


def test_deep_nesting_parses_without_recursion():
    depth = 200_000
    root = parse_xml(b"<a>" * depth + b"</a>" * depth)
    assert root.tag == "a" and sum(1 for _ in root.iter()) == depth
