// `greet-c`: calls `echo-c` through the bus with its payload and replies
// `hello, <echo's reply>`. An empty or non-UTF-8 payload is `invalid`; a bus
// error becomes this handler's failure with the same retry behaviour.
//
// Build (in examples/c): make greet-c.wasm
//   busbar guest c-bindings --world service-handler build
//   clang-19 --target=wasm32-wasi -mexec-model=reactor -Os -Ibuild -Wl,--strip-all \
//       -o build/greet-c.core.wasm greet.c build/service_handler.c build/service_handler_component_type.o
//   busbar guest componentize build/greet-c.core.wasm -o greet-c.wasm

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service_handler.h"

typedef exports_busbar_handler_service_failure_t failure_t;
typedef busbar_handler_bus_bus_error_t bus_error_t;

// A failure of class `tag` (BUSBAR_HANDLER_TYPES_FAILURE_*). Every case
// carries a string; the bindings free it after the call, so it is copied.
static bool fail(failure_t *err, uint8_t tag, const char *message) {
    err->tag = tag;
    service_handler_string_dup(&err->val.invalid, message);
    return false;
}

// The WIT names of the bus error classes, indexed by BUSBAR_HANDLER_TYPES_ERROR_CLASS_*.
static const char *const ERROR_CLASS[] = {
    "invalid", "denied", "unauthorized", "not-found", "retry", "overloaded", "timeout", "failed", "trapped",
};

// A bus error as a failure of this handler: the five handler classes pass
// through with their message; `overloaded` and `timeout` become `retry`,
// `not-found` and `trapped` become `failed`, with the original class in the
// message (the same mapping as the Rust SDK's `From<BusError> for Failure`).
static bool fail_from_bus(failure_t *err, bus_error_t *bus_err) {
    static const int8_t same_class[] = {
        [BUSBAR_HANDLER_TYPES_ERROR_CLASS_INVALID] = BUSBAR_HANDLER_TYPES_FAILURE_INVALID,
        [BUSBAR_HANDLER_TYPES_ERROR_CLASS_DENIED] = BUSBAR_HANDLER_TYPES_FAILURE_DENIED,
        [BUSBAR_HANDLER_TYPES_ERROR_CLASS_UNAUTHORIZED] = BUSBAR_HANDLER_TYPES_FAILURE_UNAUTHORIZED,
        [BUSBAR_HANDLER_TYPES_ERROR_CLASS_NOT_FOUND] = -1,
        [BUSBAR_HANDLER_TYPES_ERROR_CLASS_RETRY] = BUSBAR_HANDLER_TYPES_FAILURE_RETRY,
        [BUSBAR_HANDLER_TYPES_ERROR_CLASS_OVERLOADED] = -1,
        [BUSBAR_HANDLER_TYPES_ERROR_CLASS_TIMEOUT] = -1,
        [BUSBAR_HANDLER_TYPES_ERROR_CLASS_FAILED] = BUSBAR_HANDLER_TYPES_FAILURE_FAILED,
        [BUSBAR_HANDLER_TYPES_ERROR_CLASS_TRAPPED] = -1,
    };
    uint8_t class_ = bus_err->class_;
    const service_handler_string_t *message = &bus_err->message;
    if (class_ < sizeof same_class && same_class[class_] >= 0) {
        err->tag = (uint8_t)same_class[class_];
        err->val.invalid = *message; // hand the message over: freed after the call
        return false;
    }
    bool retry = class_ == BUSBAR_HANDLER_TYPES_ERROR_CLASS_OVERLOADED || class_ == BUSBAR_HANDLER_TYPES_ERROR_CLASS_TIMEOUT;
    const char *name = class_ < sizeof ERROR_CLASS / sizeof *ERROR_CLASS ? ERROR_CLASS[class_] : "unknown";
    size_t len = strlen(name) + 2 + message->len;
    char *text = malloc(len + 1);
    snprintf(text, len + 1, "%s: %.*s", name, (int)message->len, (const char *)message->ptr);
    busbar_handler_bus_bus_error_free(bus_err);
    err->tag = retry ? BUSBAR_HANDLER_TYPES_FAILURE_RETRY : BUSBAR_HANDLER_TYPES_FAILURE_FAILED;
    err->val.failed = (service_handler_string_t){.ptr = (uint8_t *)text, .len = len};
    return false;
}

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code
// points past U+10FFFF).
static bool is_utf8(const uint8_t *s, size_t len) {
    static const uint32_t least[] = {0, 0x80, 0x800, 0x10000}; // by continuation bytes
    size_t i = 0;
    while (i < len) {
        uint8_t b = s[i];
        size_t extra;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xE0) == 0xC0) {
            extra = 1, cp = b & 0x1F;
        } else if ((b & 0xF0) == 0xE0) {
            extra = 2, cp = b & 0x0F;
        } else if ((b & 0xF8) == 0xF0) {
            extra = 3, cp = b & 0x07;
        } else {
            return false;
        }
        if (len - i <= extra) return false;
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < least[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += extra + 1;
    }
    return true;
}

bool exports_busbar_handler_service_handle(exports_busbar_handler_service_context_t *ctx,
                                           service_handler_list_u8_t *payload,
                                           service_handler_list_u8_t *ret,
                                           failure_t *err) {
    exports_busbar_handler_service_context_free(ctx);
    if (payload->len == 0) {
        service_handler_list_u8_free(payload);
        return fail(err, BUSBAR_HANDLER_TYPES_FAILURE_INVALID, "greet needs a name");
    }
    if (!is_utf8(payload->ptr, payload->len)) {
        service_handler_list_u8_free(payload);
        return fail(err, BUSBAR_HANDLER_TYPES_FAILURE_INVALID, "the name is not UTF-8");
    }

    service_handler_string_t name;
    service_handler_string_set(&name, "echo-c"); // borrowed: a constant, never freed
    service_handler_list_u8_t reply;
    bus_error_t bus_err;
    bool ok = busbar_handler_bus_call(&name, payload, NULL, &reply, &bus_err);
    service_handler_list_u8_free(payload);
    if (!ok) {
        return fail_from_bus(err, &bus_err);
    }

    static const char hello[] = "hello, ";
    size_t len = sizeof hello - 1 + reply.len;
    uint8_t *out = malloc(len);
    memcpy(out, hello, sizeof hello - 1);
    memcpy(out + sizeof hello - 1, reply.ptr, reply.len);
    service_handler_list_u8_free(&reply);
    *ret = (service_handler_list_u8_t){.ptr = out, .len = len};
    return true;
}
