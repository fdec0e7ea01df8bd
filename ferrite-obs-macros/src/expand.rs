//! Expanding `#[probe]` on a function.
//!
//! The function keeps its attributes, visibility, signature, generics and
//! where-clause; only its body changes. A synchronous body runs inside a
//! [`SyncGuard`] (and the span's entered guard); an `async fn` body becomes an
//! `async move` block wrapped in `Instrumented` and the span's `Instrument`.
//! Generated locals are `__ferrite_*`, paths are absolute.
//!
//! [`SyncGuard`]: https://docs.rs/ferrite-obs

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Signature, Type};

use crate::args::{Args, Errors, Level};

/// Expands `#[probe(args)] item`. On error, the item is still emitted as
/// written, so that the only errors a user sees are the attribute's own.
pub(crate) fn probe(args: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => return not_a_function(item),
    };
    let parsed = syn::parse2::<Args>(args);
    let checked = parsed.and_then(|args| check(&args, &function.sig).map(|()| args));
    match checked {
        Ok(args) if cfg!(feature = "off") => {
            let _ = args;
            quote!(#function)
        }
        Ok(args) => instrument(&args, function),
        Err(error) => {
            let error = error.into_compile_error();
            quote!(#error #function)
        }
    }
}

fn not_a_function(item: TokenStream) -> TokenStream {
    let (span_of, what) = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Struct(s)) => (s.struct_token.span, "a struct"),
        Ok(syn::Item::Enum(e)) => (e.enum_token.span, "an enum"),
        Ok(syn::Item::Impl(i)) => (
            i.impl_token.span,
            "an impl block (put it on the methods inside)",
        ),
        Ok(syn::Item::Trait(t)) => (t.trait_token.span, "a trait"),
        Ok(syn::Item::Mod(m)) => (m.mod_token.span, "a module"),
        Ok(syn::Item::Const(c)) => (c.const_token.span, "a constant"),
        Ok(syn::Item::Static(s)) => (s.static_token.span, "a static"),
        Ok(other) => (other.span(), "this item"),
        Err(_) => match syn::parse2::<syn::TraitItemFn>(item.clone()) {
            Ok(f) => (
                f.sig.fn_token.span,
                "a function without a body (put it on the implementations)",
            ),
            Err(_) => (item.span(), "this item"),
        },
    };
    let message =
        format!("`#[probe]` instruments functions, not {what}: put it on a `fn` with a body");
    let error = syn::Error::new(span_of, message).into_compile_error();
    quote!(#error #item)
}

/// Checks the options against the function.
fn check(args: &Args, sig: &Signature) -> syn::Result<()> {
    let mut errors = Errors::default();
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new(
            constness.span,
            "`#[probe]` cannot instrument a `const fn`: it times calls at run time; remove `const` or the attribute",
        ));
    }
    let params = param_names(sig);
    for skip in &args.skips {
        if !params.iter().any(|p| p == skip) {
            errors.push(syn::Error::new(
                skip.span(),
                format!("`skip({skip})`: this function has no argument named `{skip}`"),
            ));
        }
    }
    if args.err && matches!(sig.output, ReturnType::Default) {
        errors.push(syn::Error::new(
            sig.ident.span(),
            "`#[probe(err)]` needs a function returning `Result`; this one returns `()`",
        ));
    }
    errors.finish()
}

/// The identifiers bound by the function's parameters, `self` included.
fn param_names(sig: &Signature) -> Vec<Ident> {
    let mut names = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => names.push(Ident::new("self", receiver.self_token.span)),
            FnArg::Typed(typed) => bindings(&typed.pat, &mut names),
        }
    }
    names
}

fn bindings(pat: &Pat, out: &mut Vec<Ident>) {
    match pat {
        Pat::Ident(p) => {
            out.push(p.ident.clone());
            if let Some((_, sub)) = &p.subpat {
                bindings(sub, out);
            }
        }
        Pat::Reference(p) => bindings(&p.pat, out),
        Pat::Tuple(p) => p.elems.iter().for_each(|e| bindings(e, out)),
        Pat::TupleStruct(p) => p.elems.iter().for_each(|e| bindings(e, out)),
        Pat::Struct(p) => p.fields.iter().for_each(|f| bindings(&f.pat, out)),
        Pat::Slice(p) => p.elems.iter().for_each(|e| bindings(e, out)),
        Pat::Type(p) => bindings(&p.pat, out),
        Pat::Paren(p) => bindings(&p.pat, out),
        _ => {}
    }
}

/// Names of the fields given in `fields(...)`, to leave out same-named
/// arguments (the user's field wins, as with `#[tracing::instrument]`).
fn field_names(fields: Option<&TokenStream>) -> Vec<String> {
    let Some(fields) = fields else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut at_start = true;
    for tt in fields.clone() {
        match tt {
            proc_macro2::TokenTree::Punct(p) if p.as_char() == ',' => at_start = true,
            proc_macro2::TokenTree::Ident(ident) if at_start => {
                names.push(ident.to_string());
                at_start = false;
            }
            proc_macro2::TokenTree::Punct(p) if at_start && matches!(p.as_char(), '?' | '%') => {}
            _ => at_start = false,
        }
    }
    names
}

fn instrument(args: &Args, function: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let name = args
        .name
        .as_ref()
        .map_or_else(|| sig.ident.to_string(), |lit| lit.value());
    let is_async = sig.asyncness.is_some();
    let is_command = args.command;
    let level = args.level.as_ref().unwrap_or(&Level::DEFAULT);

    let user_fields = field_names(args.fields.as_ref());
    let arg_fields: Vec<TokenStream> = if args.skip_all {
        Vec::new()
    } else {
        param_names(&sig)
            .into_iter()
            .filter(|p| !args.skips.contains(p))
            .filter(|p| !user_fields.contains(&p.to_string()))
            .map(|p| quote_spanned!(p.span()=> #p = ::ferrite_obs::__private::tracing::field::debug(&#p)))
            .collect()
    };
    let extra_fields = args.fields.iter();
    let span = quote! {
        ::ferrite_obs::__private::tracing::span!(
            target: ::core::module_path!(),
            #level,
            #name,
            #(#arg_fields,)*
            #(#extra_fields)*
        )
    };
    let site = quote! {
        static __FERRITE_META: ::ferrite_obs::__private::SiteMeta = ::ferrite_obs::__private::SiteMeta {
            name: #name,
            c_name: ::core::concat!(#name, "\0"),
            module: ::core::module_path!(),
            file: ::core::file!(),
            line: ::core::line!(),
            is_async: #is_async,
            is_command: #is_command,
        };
        static __FERRITE_SITE: ::ferrite_obs::__private::Site =
            ::ferrite_obs::__private::Site::new(&__FERRITE_META);
    };
    // Spanned on the return type: that is where a non-`Result` is reported.
    let ret_span = match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => sig.ident.span(),
    };
    let classify = if args.err {
        quote_spanned!(ret_span=> ::ferrite_obs::__private::ErrOnResult)
    } else {
        quote!(::ferrite_obs::__private::NeverErr)
    };

    let fake_return = fake_return(&sig.output);
    let body = if is_async {
        quote! {
            #site
            let __ferrite_span = #span;
            let __ferrite_body = async move {
                #fake_return
                #block
            };
            ::ferrite_obs::__private::tracing::Instrument::instrument(
                ::ferrite_obs::__private::Instrumented::<_, #classify>::new(&__FERRITE_SITE, __ferrite_body),
                __ferrite_span,
            )
            .await
        }
    } else {
        // The body is compiled once, as a closure: called directly when the
        // site is inactive (the function stays a leaf with the bare frame),
        // through the out-of-line `run` otherwise.
        quote! {
            #site
            let __ferrite_active = ::ferrite_obs::__private::active(#is_command);
            let __ferrite_span_on = ::ferrite_obs::__private::tracing::level_enabled!(#level);
            let __ferrite_span = if __ferrite_span_on {
                ::core::option::Option::Some(#span)
            } else {
                ::core::option::Option::None
            };
            let __ferrite_body = move || {
                #fake_return
                #block
            };
            match __ferrite_span {
                ::core::option::Option::None if !__ferrite_active => {
                    ::ferrite_obs::__private::call_once(__ferrite_body)
                }
                ::core::option::Option::None => {
                    // Lays the inactive call out as the straight path.
                    ::core::hint::cold_path();
                    ::ferrite_obs::__private::run::<_, #classify, #is_command>(
                        &__FERRITE_SITE,
                        __ferrite_body,
                    )
                }
                ::core::option::Option::Some(__ferrite_span) => {
                    ::core::hint::cold_path();
                    ::ferrite_obs::__private::run_spanned::<_, #classify, #is_command>(
                        &__FERRITE_SITE,
                        __ferrite_span,
                        __ferrite_body,
                    )
                }
            }
        }
    };

    quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    }
}

/// A never-taken `return` of the declared type, so that `?` and `return`
/// inside the `async move` block infer the function's return type.
fn fake_return(output: &ReturnType) -> TokenStream {
    let ty: Box<Type> = match output {
        ReturnType::Default => Box::new(syn::parse_quote!(())),
        ReturnType::Type(_, ty) if contains_impl_trait(ty) => return TokenStream::new(),
        ReturnType::Type(_, ty) => ty.clone(),
    };
    quote! {
        #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::needless_return)]
        if false {
            let __ferrite_fake_return: #ty = loop {};
            return __ferrite_fake_return;
        }
    }
}

fn contains_impl_trait(ty: &Type) -> bool {
    quote!(#ty).to_string().contains("impl ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        probe(args, item).to_string()
    }

    #[test]
    fn keeps_the_signature_and_attributes() {
        let out = expand(
            quote!(),
            quote!(
                #[inline]
                #[must_use]
                pub(crate) fn f<T: Clone>(x: T) -> T
                where
                    T: Send,
                {
                    x
                }
            ),
        );
        assert!(
            out.starts_with(
                "# [inline] # [must_use] pub (crate) fn f < T : Clone > (x : T) -> T where T : Send"
            ),
            "{out}"
        );
        assert!(out.contains(":: ferrite_obs :: __private :: run :: < _ , :: ferrite_obs :: __private :: NeverErr , false >"), "{out}");
        assert!(
            out.contains("x = :: ferrite_obs :: __private :: tracing :: field :: debug (& x)"),
            "{out}"
        );
    }

    #[test]
    fn async_functions_are_wrapped_in_instrumented() {
        let out = expand(
            quote!(err),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(out.contains("async fn f () -> Result < () , E >"), "{out}");
        assert!(
            out.contains("Instrumented :: < _ , :: ferrite_obs :: __private :: ErrOnResult >"),
            "{out}"
        );
        assert!(
            out.contains("let __ferrite_fake_return : Result < () , E > = loop { }"),
            "{out}"
        );
        assert!(out.contains("is_async : true"), "{out}");
    }

    #[test]
    fn skip_and_user_fields_remove_arguments_from_the_span() {
        let out = expand(
            quote!(skip(b), fields(a = 7)),
            quote!(
                fn f(a: u32, b: u32, c: u32) {}
            ),
        );
        assert!(
            !out.contains("debug (& a)") && !out.contains("debug (& b)"),
            "{out}"
        );
        assert!(
            out.contains("c = :: ferrite_obs :: __private :: tracing :: field :: debug (& c)"),
            "{out}"
        );
        assert!(out.contains("a = 7"), "{out}");
    }

    #[test]
    fn command_and_name_reach_the_site() {
        let out = expand(
            quote!(command, name = "GET"),
            quote!(
                fn get() {}
            ),
        );
        assert!(out.contains("name : \"GET\""), "{out}");
        assert!(out.contains("is_command : true"), "{out}");
    }

    #[test]
    fn errors_keep_the_item() {
        let out = expand(
            quote!(bogus),
            quote!(
                fn f() {}
            ),
        );
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.ends_with("fn f () { }"), "{out}");
    }
}
