//! A plug-in that tries to open a TCP connection. Its component imports `wasi:sockets`,
//! which no site can grant, so the sandbox must refuse to load it.

#![allow(
    unsafe_code,
    reason = "the export glue wit-bindgen generates is unsafe by nature"
)]
#![allow(
    clippy::too_many_arguments,
    reason = "the generated export glue takes the flattened context"
)]

wit_bindgen::generate!({ path: "../../../wit", world: "hl7-transform" });

struct NetProbe;

impl Guest for NetProbe {
    fn transform(_msg: &Message, _ctx: Context) -> Outcome {
        match std::net::TcpStream::connect("10.0.0.1:2575") {
            Ok(_) => Outcome::Filter("connected".to_owned()),
            Err(_) => Outcome::Forward,
        }
    }
}

export!(NetProbe);
