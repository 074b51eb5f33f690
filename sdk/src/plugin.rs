//! The trait authors implement, and the macro that exports it.

use crate::bindings::Guest;
use crate::{Context, Message, Outcome, Result};

/// A mapping plug-in: what `transform` in the contract does for each message.
///
/// Return `Ok(Outcome::Forward)` to send the (edited) message on, `Ok(Outcome::filter(..))`
/// to drop it on purpose, and `Err(..)` (or `Ok(Outcome::Fail(..))`) to stop it and put it
/// in the error queue. Returning `Result` lets `?` carry a [`TransformError`] out of
/// helpers; an `Err` becomes [`Outcome::Fail`].
///
/// A bad message is an outcome, never a panic: a panic traps, and the host reports a trap
/// as a broken plug-in.
///
/// Export the type with [`export!`](crate::export).
///
/// [`TransformError`]: crate::TransformError
pub trait Plugin {
    /// Transforms one message in place. `ctx` says where and when it arrived.
    fn transform(msg: &Message, ctx: Context) -> Result<Outcome>;
}

impl<P: Plugin> Guest for P {
    fn transform(msg: &Message, ctx: Context) -> Outcome {
        P::transform(msg, ctx).into()
    }
}

/// Exports a [`Plugin`] as the component's `transform` function.
///
/// Use it once, in the plug-in crate (a `cdylib`), with the type that implements
/// [`Plugin`]:
///
/// ```
/// struct Passthrough;
///
/// impl plexus_sdk::Plugin for Passthrough {
///     fn transform(
///         _msg: &plexus_sdk::Message,
///         _ctx: plexus_sdk::Context,
///     ) -> plexus_sdk::Result<plexus_sdk::Outcome> {
///         Ok(plexus_sdk::Outcome::Forward)
///     }
/// }
///
/// plexus_sdk::export!(Passthrough);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export {
    ($plugin:ident) => {
        $crate::bindings::export_hl7_transform!($plugin with_types_in $crate::bindings);
    };
}

/// Names the site tables this plug-in reads, so the reviewer's sheet and the site's
/// grant check can name them: `plexus plugin inspect` lists them, and a site that does
/// not grant one of them is told the exact line to add (`"tables:visit-status"`) instead of
/// a generic `tables:<table-name>`. List the tables every message may need; leave out one
/// the plug-in only uses when a site grants it (an optional settings table).
///
/// The names are a custom section (`plexus:tables`), one per line; the macro may be used
/// more than once. Granting stays the site's decision: this only says what to ask for.
///
/// ```
/// plexus_sdk::reads_tables!("visit-status");
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! reads_tables {
    ($($table:literal),+ $(,)?) => {
        const _: () = {
            const TEXT: &str = concat!($($table, "\n"),+);
            const LEN: usize = TEXT.len();
            const fn bytes() -> [u8; LEN] {
                let text = TEXT.as_bytes();
                let mut out = [0u8; LEN];
                let mut i = 0;
                while i < LEN {
                    out[i] = text[i];
                    i += 1;
                }
                out
            }
            #[used]
            #[unsafe(link_section = "plexus:tables")]
            static TABLES: [u8; LEN] = bytes();
        };
    };
}

/// Asks the host to keep instances of this plug-in across messages instead of a fresh
/// one per message, which is faster.
///
/// Only ask if the plug-in keeps nothing from one message to the next: whatever it leaves
/// in memory (statics, caches) would reach the next message, and the next patient. The
/// request is a custom section (`plexus:reuse-instance`) that `plexus plugin inspect`
/// shows; the site must also grant `reuse-instance` before the host reuses anything.
///
/// ```
/// plexus_sdk::request_instance_reuse!();
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! request_instance_reuse {
    () => {
        #[used]
        #[unsafe(link_section = "plexus:reuse-instance")]
        static __PLEXUS_REQUEST_INSTANCE_REUSE: [u8; 1] = [1];
    };
}
