"""Fuzz: request bodies. JSON on every JSON route (clients with the token, members with the
cluster's signature): random documents, fields of the wrong type, deep nesting, truncated and
mis-encoded text. XML for S3's multi-object delete and complete-multipart: random documents,
DTDs and entities (internal, external, recursive) in UTF-8 and UTF-16, unknown encodings."""

from __future__ import annotations

import base64
import hashlib
import json
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import harness
from tests.fuzz.conftest import BUCKET, build, check, exchange, fuzz_settings, s3_headers, token

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)
#: Values that are never a string: what member routes get in their fields (a string id and
#: URL could join a rogue node to the map, which would be the test's doing, not a bug).
wrong_types = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.lists(json_scalars, max_size=3),
                        st.dictionaries(st.text(max_size=6), json_scalars, max_size=3))


def deep(depth: int, opener: str) -> bytes:
    """Arrays or objects nested ``depth`` levels."""
    if opener == "{":
        return ('{"a":' * depth + "{}" + "}" * depth).encode()
    return ("[" * depth + "]" * depth).encode()


raw_bodies = st.one_of(
    st.builds(deep, st.integers(60, 5_000), st.sampled_from(["[", "{"])),
    st.builds(lambda d: deep(d, "[").decode().encode("utf-16"), st.integers(60, 3_000)),
    st.sampled_from([b"", b"{", b'{"a": NaN}', b"[1e999]", b'{"a": ' + b"9" * 5_000 + b"}",
                     b"\xff\xfe\x00", b'{"a": "\xc3\x28"}', b"null", b"[]", b'"text"',
                     b'{"a": 1} {"b": 2}', b"\x00" * 10]),
    st.binary(max_size=200))
content_types = st.sampled_from(["application/json", "text/plain; charset=bogus",
                                 "application/json; charset=utf-16", None])


def fields_body(fields: list[str], values) -> st.SearchStrategy[bytes]:
    return st.dictionaries(st.sampled_from(fields), values, max_size=len(fields)).map(
        lambda doc: json.dumps(doc).encode())


CLIENT_ROUTES = {
    ("PUT", "/v1/buckets/fuzz-new"): ["profile", "settings", "source"],
    ("PATCH", "/v1/buckets/{fs}?provider=fs"): ["consistency", "max_staleness", "peers",
                                                "anonymous_read"],
    ("PATCH", f"/v1/buckets/{BUCKET}"): ["anonymous_read", "consistency"],
    ("POST", "/v1/jobs"): ["kind", "bucket", "destination", "prefix", "delete", "names",
                           "shrink_limit", "max_delete", "concurrency", "from"],
    ("POST", "/v1/schedules"): ["name", "spec", "every", "job", "enabled"],
    ("PUT", "/v1/remotes/fuzzremote"): ["urls", "token", "profile"],
    ("POST", "/v1/auth/keys"): ["access_key", "secret_key", "description", "name"],
}
MEMBER_ROUTES = {
    ("proxy", "POST", "/v1/cluster/join"): ["id", "role", "url", "host", "local_socket",
                                            "map_version"],
    ("proxy", "PUT", "/v1/metasync"): ["cluster_map", "bucket_map"],
    ("target", "PUT", "/v1/metasync"): ["cluster_map", "bucket_map"],
    ("target", "POST", "/v1/jobs/fuzz-job/batch"): ["spec", "targets", "actions"],
    ("target", "POST", f"/v1/uploads/{BUCKET}/obj?upload_id=nosuch&complete=1"): ["parts"],
}


@fuzz_settings(350)
@given(route=st.sampled_from(sorted(CLIENT_ROUTES)), data=st.data(),
       content_type=content_types)
def test_json_bodies_on_client_routes(fuzz, route, data, content_type):
    method, path = route
    path = path.replace("{fs}", fuzz.fs_bucket)
    body = data.draw(st.one_of(raw_bodies, json_values.map(lambda v: json.dumps(v).encode()),
                               fields_body(CLIENT_ROUTES[route], json_values)))
    headers = [("Content-Length", str(len(body)))]
    if token():
        headers.append(("Authorization", f"Bearer {token()}"))
    if content_type:
        headers.append(("Content-Type", content_type))
    status = exchange(fuzz.proxy, build(method, path, headers, body, host=fuzz.proxy.netloc))
    check(status, f"{method} {path} with {body[:300]!r}")


@fuzz_settings(250)
@given(route=st.sampled_from(sorted(MEMBER_ROUTES)), data=st.data())
def test_json_bodies_from_members(fuzz, route, data):
    role, method, path = route
    body = data.draw(st.one_of(raw_bodies, json_values.map(lambda v: json.dumps(v).encode()),
                               fields_body(MEMBER_ROUTES[route], wrong_types)))
    endpoint = fuzz.proxy if role == "proxy" else fuzz.targets[0]
    signed = harness.member_headers(fuzz.cluster.cluster_secret, method, path, body)
    headers = [("Content-Length", str(len(body))), ("Content-Type", "application/json"),
               *signed.items()]
    status = exchange(endpoint, build(method, path, headers, body, host=endpoint.netloc))
    check(status, f"{method} {path} at the {role} with {body[:300]!r}")


# -- XML --

keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def delete_doc(names: list[str], quiet: bool) -> str:
    objects = "".join(f"<Object><Key>{_escape(n)}</Key></Object>" for n in names)
    return f"<Delete><Quiet>{str(quiet).lower()}</Quiet>{objects}</Delete>"


def complete_doc(parts: list[tuple[str, str]]) -> str:
    body = "".join(f"<Part><PartNumber>{_escape(n)}</PartNumber><ETag>{_escape(e)}</ETag>"
                   f"</Part>" for n, e in parts)
    return f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>"


DTDS = [
    '<!DOCTYPE Delete [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>',
    '<!DOCTYPE Delete [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    '<!DOCTYPE Delete SYSTEM "http://127.0.0.1:1/evil.dtd">',
    '<!DOCTYPE Delete [<!ENTITY % p SYSTEM "http://127.0.0.1:1/p"> %p;]>',
    "<!DOCTYPE Delete>",
]
ENCODINGS = ["utf-8", "utf-16", "utf-16-le", "utf-16-be", "latin-1", "declared-mismatch",
             "unknown"]


@st.composite
def xml_bodies(draw, kind: str) -> bytes:
    if kind == "delete":
        doc = draw(st.builds(delete_doc, st.lists(keys, max_size=5), st.booleans()))
    else:
        doc = draw(st.builds(complete_doc, st.lists(st.tuples(
            st.sampled_from(["1", "2", "0", "-1", "10001", "9" * 5_000, "\u0663", "", "a"]),
            st.sampled_from(['"etag"', "", "x" * 100])), max_size=3)))
    shape = draw(st.sampled_from(["plain", "dtd", "entity-use", "deep", "truncated",
                                  "garbage", "huge-attribute"]))
    if shape == "dtd":
        doc = draw(st.sampled_from(DTDS)) + doc
    elif shape == "entity-use":
        doc = DTDS[0] + doc.replace("<Quiet>", "<Quiet>&c;")
    elif shape == "deep":
        depth = draw(st.integers(100, 20_000))
        doc = doc.replace("</", "<x>" * depth + "</x>" * depth + "</", 1)
    elif shape == "truncated":
        doc = doc[:draw(st.integers(0, max(0, len(doc) - 1)))]
    elif shape == "garbage":
        return draw(st.binary(max_size=300))
    elif shape == "huge-attribute":
        doc = doc.replace(">", ' a="' + "v" * 100_000 + '">', 1)
    encoding = draw(st.sampled_from(ENCODINGS))
    if encoding == "declared-mismatch":
        return ('<?xml version="1.0" encoding="UTF-16"?>' + doc).encode()
    if encoding == "unknown":
        return ('<?xml version="1.0" encoding="x-no-such"?>' + doc).encode()
    declaration = f'<?xml version="1.0" encoding="{encoding.upper()}"?>'
    try:
        return (declaration + doc).encode(encoding)
    except UnicodeEncodeError:
        return (declaration + doc).encode(encoding, "replace")


@pytest.fixture(scope="module")
def upload_id(fuzz_cluster):
    """A real multipart upload for the complete-multipart examples."""
    target = f"/{BUCKET}/fuzz-mpu?uploads"
    signed = s3_headers("POST", fuzz_cluster.proxy.netloc, target)
    request = build("POST", target, [*signed.items(), ("Content-Length", "0")],
                    host=fuzz_cluster.proxy.netloc)
    with socket.create_connection((fuzz_cluster.proxy.host, fuzz_cluster.proxy.port),
                                  10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert b" 200 " in answer.split(b"\r\n", 1)[0], answer[:500]
    return answer.split(b"<UploadId>")[1].split(b"</UploadId>")[0].decode()


@fuzz_settings(300)
@given(kind=st.sampled_from(["delete", "complete"]), data=st.data(),
       md5=st.sampled_from(["right", "wrong", "none"]))
def test_xml_bodies(fuzz, upload_id, kind, data, md5):
    body = data.draw(xml_bodies(kind))
    target = f"/{BUCKET}?delete" if kind == "delete" else \
        f"/{BUCKET}/fuzz-mpu?uploadId={upload_id}"
    extra = {}
    if md5 != "none":
        digest = hashlib.md5(body if md5 == "right" else body + b"x").digest()
        extra["Content-MD5"] = base64.b64encode(digest).decode()
    signed = s3_headers("POST", fuzz.proxy.netloc, target, body=body, extra=extra)
    headers = [*signed.items(), ("Content-Length", str(len(body)))]
    status = exchange(fuzz.proxy, build("POST", target, headers, body, host=fuzz.proxy.netloc))
    check(status, f"POST {target} with {body[:300]!r}")
