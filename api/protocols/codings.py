"""Request bodies sent compressed (`Content-Encoding`, RFC 9110 section 8.4): gzip and deflate decoded in
bounded steps, with the body limit applied to the decoded size.

tritonclient compresses request bodies when asked (`request_compression_algorithm="gzip"` or
`"deflate"`), and so do other HTTP clients. The limit is what protects the worker: a gzip of a few
kilobytes can inflate to gigabytes, so the body is inflated at most `limit + 1` bytes at a time and
refused (413) as soon as it passes the limit, never inflated whole first. (Responses are compressed by
nginx, for clients that send `Accept-Encoding`; see nginx/site.conf.j2.)
"""
import zlib

from api.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

SUPPORTED = ("gzip", "deflate", "identity")
_STEP = 1 << 20  # bytes inflated per step: memory stays bounded whatever the ratio
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """`body` with its content codings undone, last applied first (`gzip, deflate` was deflated, then
    gzipped). UnsupportedMediaType (415) names a coding other than gzip, deflate (zlib, or raw deflate as
    some clients send it) and identity; InvalidInput (400) a body that is not valid in its coding;
    PayloadTooLarge (413) a decoded body over `limit` bytes."""
    if not content_encoding:
        return body
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in codings:
        if coding not in _WBITS and coding != "identity":
            raise UnsupportedMediaType(f"unsupported Content-Encoding {coding!r}; this server decodes "
                                       f"{', '.join(SUPPORTED)}")
    for coding in reversed(codings):
        if coding != "identity":
            body = _inflate(body, coding, limit)
    return body


def _inflate(data: bytes, coding: str, limit: int) -> bytes:
    try:
        return _inflate_with(data, _WBITS[coding], coding, limit)
    except zlib.error as exc:
        if coding == "deflate":  # RFC 9110's deflate is zlib-wrapped; some clients send raw deflate
            try:
                return _inflate_with(data, -zlib.MAX_WBITS, coding, limit)
            except zlib.error:
                pass
        raise InvalidInput(f"request body is not valid {coding} ({exc})") from None


def _inflate_with(data: bytes, wbits: int, coding: str, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    parts, size, pending = [], 0, data
    while pending:
        part = inflater.decompress(pending, _STEP)
        pending = inflater.unconsumed_tail
        size += len(part)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes once decoded ({coding})")
        parts.append(part)
        if not part and not pending:
            break
    tail = inflater.flush()
    if size + len(tail) > limit:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes once decoded ({coding})")
    if not inflater.eof:
        raise zlib.error("the compressed data ends early")
    if inflater.unused_data:
        raise zlib.error(f"{len(inflater.unused_data)} bytes follow the compressed data")
    return b"".join(parts) + tail
