//! Token-level parsing. Grammar:
//!
//! ```text
//! networks := network*
//! network  := attribute* visibility   // `#[weights = "file"]` is ours, the rest pass through
//!              "struct" IDENT "{" items "}"
//! items    := (item ","?)*
//! item     := IDENT ( "(" (arg ("," arg)* ","?)? ")" )? ( "{" items "}" )?
//!                                       // a block: residual { … }, concat { branch { … } }
//! arg      := value "->" value          // conv(3 -> 16), fc(4096 -> 10)
//!           | IDENT "{" items "}"       // residual(shortcut { … })
//!           | IDENT "=" value           // stride=2, kernel_size=(3, 5), bias=false
//!           | IDENT "(" value "," value ")"   // k(3, 5)
//!           | IDENT                     // k3, p1, nobias, ceil
//!           | value                     // 2, 0.2, (3, 5)
//! value    := LITERAL | "-" LITERAL | "(" value ("," value)* ","? ")" | IDENT
//! ```
//!
//! Only token structure is checked here; names and values are decoded in `args`.

use proc_macro2::Group;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::{
    braced, parenthesized, token, Attribute, Expr, ExprLit, Ident, Lit, LitStr, Meta,
    MetaNameValue, Token, Visibility,
};

use crate::ast::{Arg, Braced, Item, Network, Networks, Value};

impl Parse for Networks {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut networks = Vec::new();
        while !input.is_empty() {
            networks.push(input.parse()?);
        }
        Ok(Networks {
            networks,
            source_file: None,
        })
    }
}

impl Parse for Network {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut attrs = Vec::new();
        let mut weights = None;
        for attr in input.call(Attribute::parse_outer)? {
            if !attr.path().is_ident("weights") {
                attrs.push(attr);
                continue;
            }
            let tokens = attr.to_token_stream();
            if weights.is_some() {
                return Err(syn::Error::new_spanned(
                    tokens,
                    "duplicate `#[weights]` attribute",
                ));
            }
            let path = match &attr.meta {
                Meta::NameValue(MetaNameValue {
                    value: Expr::Lit(ExprLit { lit: Lit::Str(path), .. }),
                    ..
                }) => LitStr::new(&path.value(), path.span()),
                _ => {
                    return Err(syn::Error::new_spanned(
                        tokens,
                        "expected `#[weights = \"path/to/file.safetensors\"]`, relative to the crate's Cargo.toml",
                    ))
                }
            };
            weights = Some((tokens, path));
        }
        let vis: Visibility = input.parse()?;
        input.parse::<Token![struct]>()?;
        let ident: Ident = input.parse()?;
        let content;
        braced!(content in input);
        let body = parse_items.parse2(content.parse()?);
        Ok(Network {
            attrs,
            weights,
            vis,
            ident,
            body,
        })
    }
}

fn parse_items(input: ParseStream) -> syn::Result<Vec<Item>> {
    let mut items = Vec::new();
    while !input.is_empty() {
        items.push(input.parse()?);
        if input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
        }
    }
    Ok(items)
}

impl Parse for Item {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if !input.peek(Ident::peek_any) {
            return Err(input.error("expected a layer name such as `conv`, `relu` or `fc`"));
        }
        let name = input.call(Ident::parse_any)?;
        let mut tokens = name.to_token_stream();
        let mut args = Vec::new();
        if input.peek(token::Paren) {
            let group: Group = input.fork().parse()?;
            group.to_tokens(&mut tokens);
            let content;
            parenthesized!(content in input);
            while !content.is_empty() {
                args.push(content.parse()?);
                if content.is_empty() {
                    break;
                }
                content.parse::<Token![,]>()?;
            }
        }
        let body = if input.peek(token::Brace) {
            Some(parse_braced(input)?)
        } else {
            None
        };
        Ok(Item {
            name,
            args,
            body,
            tokens,
        })
    }
}

/// `{ items }`.
fn parse_braced(input: ParseStream) -> syn::Result<Braced> {
    let content;
    let brace = braced!(content in input);
    let items = parse_items(&content)?;
    Ok(Braced {
        span: brace.span.join(),
        items,
    })
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Ident::peek_any) && !input.peek(Lit) {
            let key = input.call(Ident::parse_any)?;
            if input.peek(Token![=]) {
                input.parse::<Token![=]>()?;
                let value = input.parse()?;
                return Ok(Arg::Keyword { key, value });
            }
            if input.peek(token::Paren) {
                let value = parse_tuple(input)?;
                return Ok(Arg::Call { key, value });
            }
            if input.peek(token::Brace) {
                let body = parse_braced(input)?;
                return Ok(Arg::Block { key, body });
            }
            if input.peek(Token![->]) {
                let from = Value::Ident(key);
                input.parse::<Token![->]>()?;
                let to = input.parse()?;
                return Ok(Arg::Arrow { from, to });
            }
            return Ok(Arg::Bare(key));
        }
        let value: Value = input.parse()?;
        if input.peek(Token![->]) {
            input.parse::<Token![->]>()?;
            let to = input.parse()?;
            return Ok(Arg::Arrow { from: value, to });
        }
        Ok(Arg::Positional(value))
    }
}

impl Parse for Value {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(token::Paren) {
            return parse_tuple(input);
        }
        if input.peek(Token![-]) {
            let minus = input.parse()?;
            if !input.peek(Lit) {
                return Err(input.error("expected a number after `-`"));
            }
            return Ok(Value::Neg(minus, input.parse()?));
        }
        if input.peek(Lit) {
            return Ok(Value::Lit(input.parse()?));
        }
        if input.peek(Ident::peek_any) {
            return Ok(Value::Ident(input.call(Ident::parse_any)?));
        }
        Err(input.error("expected a value: a number, `true`/`false` or a pair `(h, w)`"))
    }
}

fn parse_tuple(input: ParseStream) -> syn::Result<Value> {
    let group: Group = input.fork().parse()?;
    let tokens = group.to_token_stream();
    let content;
    parenthesized!(content in input);
    let mut elems = Vec::new();
    while !content.is_empty() {
        elems.push(content.parse()?);
        if content.is_empty() {
            break;
        }
        content.parse::<Token![,]>()?;
    }
    Ok(Value::Tuple { elems, tokens })
}
