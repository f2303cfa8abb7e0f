"""`{{name}}`: a busbar service. It replies `hello, <payload>`; an empty or
non-UTF-8 payload is refused as `invalid` (never retried).

Build:  ./build.sh                (componentize-py; writes {{name}}.wasm)
Deploy: cp {{name}}.wasm HANDLERS/

A failure is raised as `Err(Failure_<Class>(message))`: Invalid, Denied and
Unauthorized are never retried; Retry and Failed are. Any other exception
traps the instance, which the caller sees as `trapped`.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import Failure_Invalid


class Service(exports.Service):
    def handle(self, ctx, payload: bytes) -> bytes:
        if not payload:
            raise Err(Failure_Invalid("send a name to greet"))
        try:
            name = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise Err(Failure_Invalid("the name is not UTF-8"))
        # Another handler is one call away (a bus error is raised as
        # Err(BusError)):
        #     from wit_world.imports import bus
        #     reply = bus.call("echo", payload, None)
        return f"hello, {name}".encode()
