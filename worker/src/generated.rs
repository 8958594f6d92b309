//! WIT bindings for every capability revision the host implements and every handler it
//! calls, generated once from `wit/` (world `stratus:platform/host`). Modules carry the
//! version in their name, e.g. `wasi::keyvalue0_2_0_draft2::store`, because several
//! revisions live side by side.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "stratus:platform/host",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:keyvalue/store.bucket": crate::capabilities::keyvalue::host::Bucket,
        "wasi:keyvalue/atomics.cas": crate::capabilities::keyvalue::host::Cas,
        "wasi:messaging/types.message": crate::capabilities::messaging::Message,
        "wasi:messaging/types.client": crate::capabilities::messaging::Client,
    },
});
