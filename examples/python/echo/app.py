"""`echo-py`: a service that replies with its payload unchanged.

Build (in examples/python/echo; componentize-py from ../requirements.txt):
    componentize-py -d ../../../wit -w service-handler componentize app -o echo-py.wasm
"""

from wit_world import exports


class Service(exports.Service):
    def handle(self, ctx, payload: bytes) -> bytes:
        return payload
