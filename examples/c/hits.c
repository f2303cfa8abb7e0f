// `hits-c`: a handler that does real work. It GETs the URL in its payload
// (http://HOST[:PORT]/PATH) over wasi:http and counts the request in
// key-value bucket `counter` (key `hits`), replying `STATUS BODY COUNT`; with
// an empty payload it only counts, replying `COUNT`. Its sidecar grants both:
//
//   http = ["http://127.0.0.1:8080"]
//   keyvalue = ["counter"]
//
// Built for the world `service-handler-http` (see the Makefile):
//   busbar guest c-bindings --world service-handler-http build-http

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service_handler_http.h"

typedef exports_busbar_handler_service_failure_t failure_t;
typedef service_handler_http_list_u8_t bytes_t;

static bool fail(failure_t *err, uint8_t tag, const char *message) {
    err->tag = tag;
    service_handler_http_string_dup(&err->val.retry, message); // same layout for every case
    return false;
}

// Blocking GET of http://AUTHORITY/PATH. Returns the status (0 on error, with
// `why` set) and appends the body to *body (malloc'd).
static uint16_t http_get(const char *authority, const char *path, bytes_t *body, const char **why) {
    wasi_http_types_own_outgoing_request_t req =
        wasi_http_types_constructor_outgoing_request(wasi_http_types_constructor_fields());
    wasi_http_types_borrow_outgoing_request_t r = wasi_http_types_borrow_outgoing_request(req);
    wasi_http_types_method_t method = {.tag = WASI_HTTP_TYPES_METHOD_GET};
    wasi_http_types_scheme_t scheme = {.tag = WASI_HTTP_TYPES_SCHEME_HTTP};
    service_handler_http_string_t auth, pq;
    service_handler_http_string_set(&auth, authority);
    service_handler_http_string_set(&pq, path);
    if (!wasi_http_types_method_outgoing_request_set_method(r, &method) ||
        !wasi_http_types_method_outgoing_request_set_scheme(r, &scheme) ||
        !wasi_http_types_method_outgoing_request_set_authority(r, &auth) ||
        !wasi_http_types_method_outgoing_request_set_path_with_query(r, &pq)) {
        wasi_http_types_outgoing_request_drop_own(req);
        *why = "bad request";
        return 0;
    }
    // No body for a GET: never taking `body()` sends an empty one.

    wasi_http_outgoing_handler_own_future_incoming_response_t fut;
    wasi_http_outgoing_handler_error_code_t code;
    if (!wasi_http_outgoing_handler_handle(req, NULL, &fut, &code)) { // consumes req
        wasi_http_types_error_code_free(&code);
        *why = "request refused";
        return 0;
    }
    wasi_http_types_borrow_future_incoming_response_t f = wasi_http_types_borrow_future_incoming_response(fut);
    wasi_http_types_result_result_own_incoming_response_error_code_void_t res;
    while (!wasi_http_types_method_future_incoming_response_get(f, &res)) { // false: not ready
        wasi_http_types_own_pollable_t p = wasi_http_types_method_future_incoming_response_subscribe(f);
        wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(p));
        wasi_io_poll_pollable_drop_own(p);
    }
    wasi_http_types_future_incoming_response_drop_own(fut);
    if (res.is_err) { *why = "response taken twice"; return 0; }
    if (res.val.ok.is_err) {
        wasi_http_types_error_code_free(&res.val.ok.val.err);
        *why = "request failed";
        return 0;
    }
    wasi_http_types_own_incoming_response_t resp = res.val.ok.val.ok;
    wasi_http_types_borrow_incoming_response_t rb = wasi_http_types_borrow_incoming_response(resp);
    uint16_t status = wasi_http_types_method_incoming_response_status(rb);

    wasi_http_types_own_incoming_body_t ib;
    wasi_http_types_own_input_stream_t in;
    if (!wasi_http_types_method_incoming_response_consume(rb, &ib)) { *why = "no body"; return 0; }
    if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(ib), &in)) {
        *why = "no stream";
        return 0;
    }
    body->ptr = NULL;
    body->len = 0;
    for (;;) {
        bytes_t chunk;
        wasi_io_streams_stream_error_t serr;
        if (!wasi_io_streams_method_input_stream_blocking_read(wasi_io_streams_borrow_input_stream(in), 65536, &chunk, &serr)) {
            if (serr.tag != WASI_IO_STREAMS_STREAM_ERROR_CLOSED) {
                wasi_io_error_error_drop_own(serr.val.last_operation_failed);
                *why = "body read failed";
                status = 0;
            }
            break;
        }
        body->ptr = realloc(body->ptr, body->len + chunk.len);
        memcpy(body->ptr + body->len, chunk.ptr, chunk.len);
        body->len += chunk.len;
        service_handler_http_list_u8_free(&chunk);
    }
    wasi_io_streams_input_stream_drop_own(in); // child first
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(ib));
    wasi_http_types_incoming_response_drop_own(resp);
    return status;
}

bool exports_busbar_handler_service_handle(exports_busbar_handler_service_context_t *ctx, bytes_t *payload,
                                           bytes_t *ret, failure_t *err) {
    exports_busbar_handler_service_context_free(ctx);
    // payload: "http://AUTHORITY/PATH"
    char url[1024];
    size_t n = payload->len < sizeof url - 1 ? payload->len : sizeof url - 1;
    memcpy(url, payload->ptr, n);
    url[n] = 0;
    service_handler_http_list_u8_free(payload);
    bytes_t body = {.ptr = NULL, .len = 0};
    uint16_t status = 0;
    if (n > 0) {
        if (strncmp(url, "http://", 7) != 0) return fail(err, BUSBAR_HANDLER_TYPES_FAILURE_INVALID, "expected http://HOST/PATH");
        char *authority = url + 7, *slash = strchr(authority, '/');
        char path[1024] = "/";
        if (slash) { snprintf(path, sizeof path, "%s", slash); *slash = 0; }
        const char *why = NULL;
        status = http_get(authority, path, &body, &why);
        if (!status) return fail(err, BUSBAR_HANDLER_TYPES_FAILURE_RETRY, why);
    }

    service_handler_http_string_t name, key;
    service_handler_http_string_set(&name, "counter");
    service_handler_http_string_set(&key, "hits");
    wasi_keyvalue_store_own_bucket_t bucket;
    wasi_keyvalue_store_error_t kerr;
    int64_t count;
    if (!wasi_keyvalue_store_open(&name, &bucket, &kerr)) {
        const char *what = kerr.tag == WASI_KEYVALUE_STORE_ERROR_ACCESS_DENIED ? "opening bucket `counter`: access-denied"
                                                                              : "opening bucket `counter` failed";
        wasi_keyvalue_store_error_free(&kerr);
        free(body.ptr);
        return fail(err, BUSBAR_HANDLER_TYPES_FAILURE_RETRY, what);
    }
    bool ok = wasi_keyvalue_atomics_increment(wasi_keyvalue_store_borrow_bucket(bucket), &key, 1, &count, &kerr);
    wasi_keyvalue_store_bucket_drop_own(bucket);
    if (!ok) {
        wasi_keyvalue_store_error_free(&kerr);
        free(body.ptr);
        return fail(err, BUSBAR_HANDLER_TYPES_FAILURE_RETRY, "keyvalue increment failed");
    }

    size_t cap = body.len + 64;
    char *out = malloc(cap);
    if (status == 0) { // counting only
        ret->len = snprintf(out, cap, "%" PRId64, count);
        ret->ptr = (uint8_t *)out;
        return true;
    }
    int head = snprintf(out, cap, "%u ", status);
    memcpy(out + head, body.ptr, body.len);
    int tail = snprintf(out + head + body.len, cap - head - body.len, " %" PRId64, count);
    free(body.ptr);
    ret->ptr = (uint8_t *)out;
    ret->len = head + body.len + tail;
    return true;
}
