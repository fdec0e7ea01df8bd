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

/// Expands to this crate's "did you mean" helper, `nearest`, so that
/// `ferrite-obs` suggests configuration keys as `#[probe]` suggests option
/// names. Not a public API.
#[doc(hidden)]
#[proc_macro]
pub fn __suggest(_input: TokenStream) -> TokenStream {
    match include_str!("suggest.rs").parse() {
        Ok(items) => items,
        Err(error) => format!("compile_error!({:?});", error.to_string())
            .parse()
            .unwrap_or_default(),
    }
}
