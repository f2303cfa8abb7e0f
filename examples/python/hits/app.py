"""`hits-py`: a handler that does real work. It GETs the URL in its payload
over `wasi:http` and counts the request in key-value bucket `counter` (key
`hits`), replying `STATUS BODY COUNT`; with an empty payload it only counts,
replying `COUNT`. Its sidecar grants both:

    http = ["http://127.0.0.1:8080"]
    keyvalue = ["counter"]

Build (in examples/python/hits; the world imports wasi:http/outgoing-handler):
    componentize-py -d ../../../wit -w service-handler-http componentize app -o hits-py.wasm
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import atomics, store

# busbar's own `types` interface is `busbar_handler_types` in this world,
# because wasi:http has an interface called `types` too.
from wit_world.imports.busbar_handler_types import Failure_Invalid, Failure_Retry

import http_get


class Service(exports.Service):
    def handle(self, ctx, payload: bytes) -> bytes:
        try:
            url = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise Err(Failure_Invalid("the URL is not UTF-8"))
        fetched = None
        if url:
            try:
                fetched = http_get.get(url)
            except http_get.HttpError as e:
                raise Err(Failure_Retry(f"GET {url}: {e}"))
        try:
            with store.open("counter") as bucket:
                count = atomics.increment(bucket, "hits", 1)
        except Err as e:  # e.value: Error_NoSuchStore, Error_AccessDenied or Error_Other
            raise Err(Failure_Retry(f"counting in bucket `counter`: {e.value}"))
        if fetched is None:
            return str(count).encode()
        status, body = fetched
        return f"{status} {body.decode('utf-8', 'replace')} {count}".encode()
