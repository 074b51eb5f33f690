//! placeholder
#![allow(missing_docs, unsafe_code)]
pub mod bindings {
wit_bindgen::generate!({
    path: "../wit",
    world: "hl7-transform",
    pub_export_macro: true,
    export_macro_name: "__export_hl7_transform",
    default_bindings_module: "plexus_sdk::bindings",
    debug: true,
});
}
