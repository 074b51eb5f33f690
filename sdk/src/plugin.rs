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

/// Asks the host to keep one instance of this plug-in across messages instead of a fresh
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
