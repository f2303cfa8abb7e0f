//! The one place that runs `bindgen!` over `wit/`. Everything else in the
//! host uses the items re-exported from `runtime`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:keyvalue/store.bucket": super::keyvalue::Bucket,
        "wasi:keyvalue/atomics.cas": super::keyvalue::Cas,
    },
});
