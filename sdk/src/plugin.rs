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
