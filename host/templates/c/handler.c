// `{{name}}`: a busbar service. It replies `hello, <payload>`; an empty
// payload is refused as `invalid` (never retried).
//
// Build:  make                    (clang + wasi-libc, bindings by busbar; writes {{name}}.wasm)
// Deploy: cp {{name}}.wasm HANDLERS/
//
// A failure is returned as `false` with `err->tag` set to a
// BUSBAR_HANDLER_TYPES_FAILURE_* code: INVALID, DENIED and UNAUTHORIZED are
// never retried; RETRY and FAILED are. The strings you hand back are freed by
// the bindings after the call, so they must come from malloc (string_dup).

#include <stdlib.h>
#include <string.h>

#include "service_handler.h"

static bool fail(exports_busbar_handler_service_failure_t *err, uint8_t class, const char *message) {
    err->tag = class;
    service_handler_string_dup(&err->val.invalid, message); // every case carries a string
    return false;
}

bool exports_busbar_handler_service_handle(exports_busbar_handler_service_context_t *ctx,
                                           service_handler_list_u8_t *payload,
                                           service_handler_list_u8_t *ret,
                                           exports_busbar_handler_service_failure_t *err) {
    exports_busbar_handler_service_context_free(ctx);
    if (payload->len == 0) {
        service_handler_list_u8_free(payload);
        return fail(err, BUSBAR_HANDLER_TYPES_FAILURE_INVALID, "send a name to greet");
    }
    // Another handler is one call away: busbar_handler_bus_call(&name, payload, NULL, &reply, &bus_err).
    static const char hello[] = "hello, ";
    size_t len = strlen(hello) + payload->len;
    uint8_t *reply = malloc(len);
    memcpy(reply, hello, strlen(hello));
    memcpy(reply + strlen(hello), payload->ptr, payload->len);
    service_handler_list_u8_free(payload);
    ret->ptr = reply;
    ret->len = len;
    return true;
}
