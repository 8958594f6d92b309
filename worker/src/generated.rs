//! WIT bindings for every capability revision the host implements, generated once from
//! `wit/` (world `stratus:platform/host`). Modules carry the version in their name, e.g.
//! `wasi::keyvalue0_2_0_draft2::store`, because several revisions live side by side.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "stratus:platform/host",
    imports: { default: async | trappable },
    with: {
        "wasi:keyvalue/store.bucket": crate::capabilities::keyvalue::host::Bucket,
        "wasi:keyvalue/atomics.cas": crate::capabilities::keyvalue::host::Cas,
    },
});
