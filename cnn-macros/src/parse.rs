//! Token-level parsing. Grammar:
//!
//! ```text
//! networks := network*
//! network  := attribute* visibility   // `#[weights]`, `#[budget]`, `#[precision]` are ours,
//!                                       // the rest pass through
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
//! budget   := "#" "[" "budget" "(" (IDENT "=" LITERAL ","?)* ")" "]"
//! precision := "#" "[" "precision" "(" ("bf16" | "f32") ")" "]"
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

use crate::ast::{Arg, Braced, Budget, Item, Limit, Network, Networks, Value};
use crate::budget::{parse_count, parse_size};
use crate::suggest;

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
        let mut budgets = Vec::new();
        let mut precisions = Vec::new();
        for attr in input.call(Attribute::parse_outer)? {
            if attr.path().is_ident("budget") {
                budgets.push(attr);
                continue;
            }
            if attr.path().is_ident("precision") {
                precisions.push(attr);
                continue;
            }
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
        let budget = budget(&budgets);
        let bf16 = precision(&precisions);
        let vis: Visibility = input.parse()?;
        input.parse::<Token![struct]>()?;
        let ident: Ident = input.parse()?;
        let content;
        braced!(content in input);
        let body = parse_items.parse2(content.parse()?);
        Ok(Network {
            attrs,
            weights,
            budget,
            bf16,
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

/// The limit keys of `#[budget(...)]`.
const BUDGET_KEYS: [&str; 3] = ["ram", "flash", "macs"];

const BUDGET_USAGE: &str =
    "expected `#[budget(ram = \"64K\", flash = \"256K\", macs = 5_000_000)]` (any of the three keys)";

/// Decodes the `#[budget]` attributes of one network (at most one is allowed), collecting
/// every error: a second attribute, a malformed value, an unknown or repeated key.
/// What `#[precision(…)]` accepts.
const PRECISION_USAGE: &str = "expected `#[precision(bf16)]` or `#[precision(f32)]` (the default)";

/// `#[precision(bf16)]` → `true`, `#[precision(f32)]` or none → `false`; a second attribute,
/// another form or another name is an error on the attribute (or the name).
fn precision(attrs: &[Attribute]) -> syn::Result<bool> {
    let Some(first) = attrs.first() else {
        return Ok(false);
    };
    let mut errors: Vec<syn::Error> = attrs[1..]
        .iter()
        .map(|a| syn::Error::new_spanned(a, "duplicate `#[precision]` attribute"))
        .collect();
    let mut bf16 = false;
    match &first.meta {
        Meta::List(list) if matches!(list.delimiter, syn::MacroDelimiter::Paren(_)) => {
            match syn::parse2::<Ident>(list.tokens.clone()) {
                Ok(name) if name == "bf16" => bf16 = true,
                Ok(name) if name == "f32" => {}
                Ok(name) => {
                    let hint = match suggest::hint(&name.to_string(), ["bf16", "f32"]) {
                        h if h.is_empty() => "; the precisions are `bf16` and `f32`".into(),
                        h => h,
                    };
                    errors.push(syn::Error::new(
                        name.span(),
                        format!("unknown precision `{name}`{hint}"),
                    ));
                }
                Err(_) => errors.push(syn::Error::new_spanned(first, PRECISION_USAGE)),
            }
        }
        _ => errors.push(syn::Error::new_spanned(first, PRECISION_USAGE)),
    }
    match errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        Some(e) => Err(e),
        None => Ok(bf16),
    }
}

fn budget(attrs: &[Attribute]) -> syn::Result<Option<Budget>> {
    let Some(first) = attrs.first() else {
        return Ok(None);
    };
    let mut errors: Vec<syn::Error> = attrs[1..]
        .iter()
        .map(|a| {
            syn::Error::new_spanned(
                a,
                "duplicate `#[budget]` attribute: put every limit in one `#[budget(...)]`",
            )
        })
        .collect();
    let mut out = Budget {
        ram: None,
        flash: None,
        macs: None,
    };
    match budget_entries(first) {
        Err(e) => errors.push(e),
        Ok(entries) if entries.is_empty() => errors.push(syn::Error::new_spanned(
            first,
            format!("`#[budget]` sets no limit; {BUDGET_USAGE}"),
        )),
        Ok(entries) => {
            let mut seen: Vec<String> = Vec::new();
            for (key, lit) in entries {
                let name = key.to_string();
                if !BUDGET_KEYS.contains(&name.as_str()) {
                    let hint = match suggest::hint(&name, BUDGET_KEYS) {
                        h if h.is_empty() => "; the keys are `ram`, `flash` and `macs`".into(),
                        h => h,
                    };
                    errors.push(syn::Error::new(
                        key.span(),
                        format!("unknown `#[budget]` key `{name}`{hint}"),
                    ));
                    continue;
                }
                if seen.contains(&name) {
                    errors.push(syn::Error::new(
                        key.span(),
                        format!("duplicate `{name}` in `#[budget]`"),
                    ));
                    continue;
                }
                seen.push(name.clone());
                let value = if name == "macs" {
                    parse_count(&lit)
                } else {
                    parse_size(&lit)
                };
                let value = match value {
                    Ok(value) => value,
                    Err(msg) => {
                        errors.push(syn::Error::new(
                            lit.span(),
                            format!("`{name}` in `#[budget]`: {msg}"),
                        ));
                        continue;
                    }
                };
                let limit = Some(Limit {
                    value,
                    text: format!("{name} = {}", lit.to_token_stream()),
                    tokens: quote::quote!(#key = #lit),
                });
                match name.as_str() {
                    "ram" => out.ram = limit,
                    "flash" => out.flash = limit,
                    _ => out.macs = limit,
                }
            }
        }
    }
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(Some(out)),
        Some(mut first) => {
            first.extend(errors);
            Err(first)
        }
    }
}

/// The `key = literal` pairs inside `#[budget(...)]`, in order.
fn budget_entries(attr: &Attribute) -> syn::Result<Vec<(Ident, Lit)>> {
    let Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(attr, BUDGET_USAGE));
    };
    if !matches!(list.delimiter, syn::MacroDelimiter::Paren(_)) {
        return Err(syn::Error::new_spanned(attr, BUDGET_USAGE));
    }
    let parser = |input: ParseStream| -> syn::Result<Vec<(Ident, Lit)>> {
        let mut entries = Vec::new();
        while !input.is_empty() {
            if !input.peek(Ident::peek_any) {
                return Err(input.error(BUDGET_USAGE));
            }
            let key = input.call(Ident::parse_any)?;
            if !input.peek(Token![=]) {
                return Err(input.error(format!(
                    "expected `=` and a value after `{key}`, as in `{key} = {}`",
                    if key == "macs" {
                        "5_000_000"
                    } else {
                        "\"64K\""
                    }
                )));
            }
            input.parse::<Token![=]>()?;
            if !input.peek(Lit) {
                return Err(input.error(
                    "expected a literal: a size such as `\"64K\"` or `65536`, or a count such as `5_000_000`",
                ));
            }
            entries.push((key, input.parse()?));
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(entries)
    };
    parser.parse2(list.tokens.clone())
}
