//! Host bindings generated from `wit/` (the only source of the contract). Private: the
//! crate re-exports only the types callers need.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "hl7-transform",
    imports: { default: trappable },
    with: {
        "plexus:transform/message.message": crate::host::message::MessageState,
    },
});
