//! The `#[probe]` attribute of [ferrite-obs](https://docs.rs/ferrite-obs).
//!
//! Use it through `ferrite_obs::probe`; the documentation lives there.

mod args;
mod expand;
mod suggest;

use proc_macro::TokenStream;

/// Instruments a function: USDT enter/exit probes, a `tracing` span, and
/// always-on counters and a latency histogram for the call site.
///
/// See the `ferrite_obs` crate documentation for the options.
#[proc_macro_attribute]
pub fn probe(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::probe(args.into(), item.into()).into()
}
