// `echo-c`: a service that replies with its payload unchanged.
//
// Build (in examples/c): make echo-c.wasm
//   busbar guest c-bindings --world service-handler build
//   clang-19 --target=wasm32-wasi -mexec-model=reactor -Os -Ibuild -Wl,--strip-all \
//       -o build/echo-c.core.wasm echo.c build/service_handler.c build/service_handler_component_type.o
//   busbar guest componentize build/echo-c.core.wasm -o echo-c.wasm

#include "service_handler.h"

bool exports_busbar_handler_service_handle(exports_busbar_handler_service_context_t *ctx,
                                           service_handler_list_u8_t *payload,
                                           service_handler_list_u8_t *ret,
                                           exports_busbar_handler_service_failure_t *err) {
    (void)err;
    exports_busbar_handler_service_context_free(ctx);
    // The handler owns its arguments and the bindings free the reply after
    // the call: hand the payload's buffer back as the reply.
    *ret = *payload;
    return true;
}
