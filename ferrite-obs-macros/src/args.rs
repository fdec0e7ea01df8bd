//! Parsing `#[probe(...)]` options.
//!
//! Every problem is reported, not just the first: unknown options (with the
//! nearest valid name), duplicates, and malformed values are combined into one
//! error, each spanned on the offending tokens.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, LitInt, LitStr, Token};

use crate::suggest::nearest;

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(level);
    syn::custom_keyword!(fields);
    syn::custom_keyword!(skip);
    syn::custom_keyword!(skip_all);
    syn::custom_keyword!(err);
    syn::custom_keyword!(command);
}

/// Every option `#[probe]` accepts, for messages.
pub(crate) const OPTIONS: [&str; 7] = [
    "name", "level", "fields", "skip", "skip_all", "err", "command",
];

const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// Parsed `#[probe(...)]` options.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) name: Option<LitStr>,
    pub(crate) level: Option<Level>,
    /// The tokens inside `fields(...)`, passed to `tracing::span!` as written.
    pub(crate) fields: Option<TokenStream>,
    pub(crate) skips: Vec<Ident>,
    pub(crate) skip_all: bool,
    pub(crate) err: bool,
    pub(crate) command: bool,
}

/// A span level, resolved to one of tracing's five.
pub(crate) struct Level(&'static str);

impl Level {
    pub(crate) const DEFAULT: Level = Level("DEBUG");
}

impl ToTokens for Level {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let level = Ident::new(self.0, Span::call_site());
        tokens.extend(quote!(::ferrite_obs::__private::tracing::Level::#level));
    }
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        let mut errors = Errors::default();
        let mut seen: Vec<&'static str> = Vec::new();
        while !input.is_empty() {
            let start = input.span();
            match parse_option(input, &mut args) {
                Ok(Some(option)) if seen.contains(&option) => errors.push(syn::Error::new(
                    start,
                    format!("duplicate option `{option}`: give each option once"),
                )),
                Ok(Some(option)) => seen.push(option),
                Ok(None) => {}
                Err(error) => {
                    errors.push(error);
                    skip_to_comma(input);
                }
            }
            if input.is_empty() {
                break;
            }
            if let Err(error) = input.parse::<Token![,]>() {
                errors.push(syn::Error::new(
                    error.span(),
                    "expected `,` between `#[probe]` options",
                ));
                skip_to_comma(input);
                let _ = input.parse::<Option<Token![,]>>();
            }
        }
        if args.skip_all && !args.skips.is_empty() {
            errors.push(syn::Error::new(
                args.skips[0].span(),
                "`skip(...)` is redundant with `skip_all`: use one or the other",
            ));
        }
        errors.finish()?;
        Ok(args)
    }
}

/// Parses one option into `args`; returns its name.
fn parse_option(input: ParseStream<'_>, args: &mut Args) -> syn::Result<Option<&'static str>> {
    let lookahead = input.lookahead1();
    if lookahead.peek(kw::name) {
        input.parse::<kw::name>()?;
        input.parse::<Token![=]>()?;
        let name: LitStr = input.parse()?;
        validate_name(&name)?;
        args.name = Some(name);
        Ok(Some("name"))
    } else if lookahead.peek(kw::level) {
        input.parse::<kw::level>()?;
        input.parse::<Token![=]>()?;
        args.level = Some(parse_level(input)?);
        Ok(Some("level"))
    } else if lookahead.peek(kw::fields) {
        input.parse::<kw::fields>()?;
        let content;
        syn::parenthesized!(content in input);
        args.fields = Some(content.parse()?);
        Ok(Some("fields"))
    } else if lookahead.peek(kw::skip_all) {
        input.parse::<kw::skip_all>()?;
        args.skip_all = true;
        Ok(Some("skip_all"))
    } else if lookahead.peek(kw::skip) {
        input.parse::<kw::skip>()?;
        let content;
        syn::parenthesized!(content in input);
        let names =
            Punctuated::<Ident, Token![,]>::parse_terminated_with(&content, Ident::parse_any)?;
        args.skips.extend(names);
        Ok(Some("skip"))
    } else if lookahead.peek(kw::err) {
        input.parse::<kw::err>()?;
        args.err = true;
        Ok(Some("err"))
    } else if lookahead.peek(kw::command) {
        input.parse::<kw::command>()?;
        args.command = true;
        Ok(Some("command"))
    } else if input.peek(Ident::peek_any) {
        let unknown = Ident::parse_any(input)?;
        Err(unknown_option(&unknown))
    } else {
        Err(lookahead.error())
    }
}

fn unknown_option(unknown: &Ident) -> syn::Error {
    let given = unknown.to_string();
    let hint = match nearest(&given, &OPTIONS) {
        Some(near) => format!("did you mean `{near}`? "),
        None => String::new(),
    };
    syn::Error::new(
        unknown.span(),
        format!(
            "unknown `#[probe]` option `{given}`: {hint}expected one of `{}`",
            OPTIONS.join("`, `")
        ),
    )
}

fn validate_name(name: &LitStr) -> syn::Result<()> {
    let value = name.value();
    if value.is_empty() {
        return Err(syn::Error::new(
            name.span(),
            "probe name is empty: give a name such as `name = \"storage_read\"`",
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || *c == '"')
    {
        return Err(syn::Error::new(
            name.span(),
            format!(
                "probe name {value:?} contains {bad:?}: use letters, digits and `_ . : -` so tracers and metric labels can carry it"
            ),
        ));
    }
    Ok(())
}

fn parse_level(input: ParseStream<'_>) -> syn::Result<Level> {
    let invalid = |span: Span, given: &str| {
        syn::Error::new(
            span,
            format!(
                "unknown level `{given}`: expected one of `{}` (or `Level::DEBUG` etc., or 1 to 5)",
                LEVELS.join("`, `")
            ),
        )
    };
    let from_name = |given: &str, span: Span| {
        let lower = given.to_ascii_lowercase();
        LEVELS
            .iter()
            .position(|level| *level == lower)
            .map(|i| Level(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"][i]))
            .ok_or_else(|| invalid(span, given))
    };
    if input.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        return from_name(&lit.value(), lit.span());
    }
    if input.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        let n: usize = lit.base10_parse()?;
        // tracing's numbering: 1 is trace, 5 is error.
        return match n {
            1..=5 => Ok(Level(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"][n - 1])),
            _ => Err(invalid(lit.span(), &n.to_string())),
        };
    }
    let path: syn::Path = input.parse()?;
    let last = path
        .segments
        .last()
        .map(|s| s.ident.clone())
        .ok_or_else(|| invalid(Span::call_site(), ""))?;
    from_name(&last.to_string(), last.span())
}

/// Skips the rest of a malformed option, so the next one is still checked.
fn skip_to_comma(input: ParseStream<'_>) {
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tt, next)) = rest.token_tree() {
            if matches!(&tt, TokenTree::Punct(p) if p.as_char() == ',') {
                return Ok(((), rest));
            }
            rest = next;
        }
        Ok(((), rest))
    });
}

/// Accumulates errors so that all of them are reported at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tokens: TokenStream) -> syn::Result<Args> {
        syn::parse2(tokens)
    }

    #[test]
    fn parses_every_option() {
        let args = parse(quote!(
            name = "get",
            level = "trace",
            fields(a = 1, b),
            skip(x, y),
            err,
            command
        ))
        .unwrap();
        assert_eq!(args.name.unwrap().value(), "get");
        assert_eq!(args.level.unwrap().0, "TRACE");
        assert_eq!(args.fields.unwrap().to_string(), "a = 1 , b");
        assert_eq!(args.skips.len(), 2);
        assert!(args.err && args.command && !args.skip_all);
    }

    #[test]
    fn levels_in_every_spelling() {
        for (tokens, want) in [
            (quote!(level = "INFO"), "INFO"),
            (quote!(level = warn), "WARN"),
            (quote!(level = tracing::Level::ERROR), "ERROR"),
            (quote!(level = 2), "DEBUG"),
        ] {
            assert_eq!(parse(tokens).unwrap().level.unwrap().0, want);
        }
    }

    #[test]
    fn reports_every_problem_at_once() {
        let error = match parse(quote!(nmae = "x", err, err, level = "loud")) {
            Ok(_) => panic!("invalid options must not parse"),
            Err(error) => error,
        };
        let messages: Vec<String> = error.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].contains("unknown `#[probe]` option `nmae`: did you mean `name`?"));
        assert!(messages[1].contains("duplicate option `err`"));
        assert!(messages[2].contains("unknown level `loud`"));
    }

    #[test]
    fn nearest_only_suggests_likely_typos() {
        assert_eq!(nearest("skipall", &OPTIONS), Some("skip_all"));
        assert_eq!(nearest("commnd", &OPTIONS), Some("command"));
        assert_eq!(nearest("frobnicate", &OPTIONS), None);
    }
}
