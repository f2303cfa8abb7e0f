"""`greet-py`: calls `echo-py` through the bus with its payload and replies
`hello, <echo's reply>`. An empty or non-UTF-8 payload is `invalid`; a bus
error becomes this handler's failure with the same retry behaviour.

Build (in examples/python/greet; componentize-py from ../requirements.txt):
    componentize-py -d ../../../wit -w service-handler componentize app -o greet-py.wasm
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import bus
from wit_world.imports.types import (
    BusError,
    ErrorClass,
    Failure_Denied,
    Failure_Failed,
    Failure_Invalid,
    Failure_Retry,
    Failure_Unauthorized,
)

# The five classes a handler can answer keep their class and message.
SAME_CLASS = {
    ErrorClass.INVALID: Failure_Invalid,
    ErrorClass.DENIED: Failure_Denied,
    ErrorClass.UNAUTHORIZED: Failure_Unauthorized,
    ErrorClass.RETRY: Failure_Retry,
    ErrorClass.FAILED: Failure_Failed,
}


def failure(err: BusError):
    """A bus error as a failure of this handler: the handler classes pass
    through; `overloaded` and `timeout` become `retry`, `not-found` and
    `trapped` become `failed`, with the original class in the message (the
    same mapping as the Rust SDK's `From<BusError> for Failure`)."""
    if err.class_ in SAME_CLASS:
        return SAME_CLASS[err.class_](err.message)
    message = f"{err.class_.name.lower().replace('_', '-')}: {err.message}"
    if err.class_ in (ErrorClass.OVERLOADED, ErrorClass.TIMEOUT):
        return Failure_Retry(message)
    return Failure_Failed(message)


class Service(exports.Service):
    def handle(self, ctx, payload: bytes) -> bytes:
        if not payload:
            raise Err(Failure_Invalid("greet needs a name"))
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise Err(Failure_Invalid("the name is not UTF-8"))
        try:
            reply = bus.call("echo-py", payload, None)
        except Err as e:
            raise Err(failure(e.value))
        return b"hello, " + reply
