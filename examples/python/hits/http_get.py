"""Blocking `wasi:http` GET for a synchronous busbar handler (componentize-py).

componentize-py binds only what the world imports, so the handler must be
built for a world that imports `wasi:http/outgoing-handler` (busbar's
`service-handler-http`). Its `poll_loop.py` is asyncio-based and imports
`wit_world.imports.types`, which in busbar's worlds is renamed
`wasi_http_types` (busbar:handler has a `types` interface too), so it is not
usable here: this helper blocks on pollables instead.
"""

from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world.imports import outgoing_handler
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.wasi_http_types import (
    Fields,
    IncomingBody,
    Method_Get,
    OutgoingRequest,
    Scheme_Http,
    Scheme_Https,
)

READ_SIZE = 64 * 1024


class HttpError(Exception):
    """The request could not be sent or the response could not be read."""


def get(url: str, headers: list[tuple[str, bytes]] | None = None) -> tuple[int, bytes]:
    """GET `url` (http:// or https://) and return (status, body)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HttpError(f"not an http(s) URL: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query

    request = OutgoingRequest(Fields.from_list(headers or []))
    request.set_method(Method_Get())
    request.set_scheme(Scheme_Https() if parts.scheme == "https" else Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query(path)
    # A GET has no body: never calling `request.body()` sends an empty one.

    try:
        future = outgoing_handler.handle(request, None)  # takes ownership of `request`
    except Err as e:
        raise HttpError(f"request refused: {e.value}")

    with future:
        result = future.get()
        if result is None:
            with future.subscribe() as pollable:
                pollable.block()
            result = future.get()
    # result: Ok(Ok(incoming-response)) | Ok(Err(error-code)) | Err(())
    # (componentize-py raises Err for error results of functions, but a
    # `result` nested inside an option is returned as a value.)
    if result is None:
        raise HttpError("response future not ready after block()")
    outer = result.value
    if isinstance(result, Err):
        raise HttpError("response already taken")
    if isinstance(outer, Err):
        raise HttpError(f"request failed: {outer.value}")
    response = outer.value

    with response:
        status = response.status()
        body = response.consume()
        chunks = []
        stream = body.stream()
        with stream:
            while True:
                try:
                    chunk = stream.blocking_read(READ_SIZE)
                except Err as e:
                    if isinstance(e.value, StreamError_Closed):
                        break
                    raise HttpError(f"reading the body failed: {e.value}")
                chunks.append(chunk)
        # The stream (a child) is dropped before the body is finished.
        with IncomingBody.finish(body):
            pass
    return status, b"".join(chunks)
