//! The raw syntax of a `cnn!` invocation: every number a literal, every name an identifier, all
//! spans kept for error messages.

use proc_macro2::{Span, TokenStream};
use syn::{Attribute, Ident, Lit, LitStr, Token, Visibility};

/// Everything inside `cnn! { … }`.
pub struct Networks {
    pub networks: Vec<Network>,
    /// The file on disk that holds the `cnn!` call, when the compiler knows it: the second place
    /// a relative `#[weights]` path is looked up (after the crate root).
    pub source_file: Option<std::path::PathBuf>,
}

/// `#[attrs] vis struct Name { body }`. The body is parsed on its own so that a syntax error in
/// one network still lets the others, and this network's stub, be emitted.
pub struct Network {
    /// Attributes passed through to the struct.
    pub attrs: Vec<Attribute>,
    /// `#[weights = "file.safetensors"]`: the attribute's tokens and the path.
    pub weights: Option<(TokenStream, LitStr)>,
    /// `#[budget(ram = "64K", flash = "256K", macs = 5_000_000)]`, decoded; its errors (a
    /// malformed value, an unknown or repeated key, a second `#[budget]`) are kept here so that
    /// they are reported with this network's other errors and the network gets a stub.
    pub budget: syn::Result<Option<Budget>>,
    /// `#[precision(bf16)]` (`true`) or `#[precision(f32)]` / none (`false`), its errors kept
    /// as the budget's.
    pub bf16: syn::Result<bool>,
    pub vis: Visibility,
    pub ident: Ident,
    pub body: syn::Result<Vec<Item>>,
}

/// The limits of a `#[budget(...)]` attribute; at least one is set.
pub struct Budget {
    /// RAM in bytes: what `forward_in` needs (workspace, input and output).
    pub ram: Option<Limit>,
    /// Flash in bytes: the weights and the code estimate.
    pub flash: Option<Limit>,
    /// Multiply-accumulates per sample.
    pub macs: Option<Limit>,
}

/// One limit of a `#[budget]`.
pub struct Limit {
    pub value: usize,
    /// `ram = "64K"` as written, for messages.
    pub text: String,
    /// The `key = value` tokens, where an overrun points.
    pub tokens: TokenStream,
}

/// One entry of the layer list: `name`, `name(args)`, or a block `name(args) { items }`.
pub struct Item {
    pub name: Ident,
    pub args: Vec<Arg>,
    /// `{ items }` after the name and arguments: the body of `residual`, `concat` or `branch`.
    pub body: Option<Braced>,
    /// The whole entry, for errors that span a layer (for a block: its head, without the body).
    pub tokens: TokenStream,
}

/// A braced list of entries, with the span of its braces.
pub struct Braced {
    pub span: Span,
    pub items: Vec<Item>,
}

/// One argument inside a layer's parentheses.
pub enum Arg {
    /// `3 -> 16`
    Arrow { from: Value, to: Value },
    /// `stride = 2`, `kernel_size = (3, 5)`
    Keyword { key: Ident, value: Value },
    /// `k(3, 5)`
    Call { key: Ident, value: Value },
    /// `k3`, `nobias`, `ceil`
    Bare(Ident),
    /// `2`, `0.2`, `true`, `(3, 5)`
    Positional(Value),
    /// `shortcut { conv(64 -> 128, k1, s2) bn }`
    Block { key: Ident, body: Braced },
}

/// A value as written.
pub enum Value {
    Lit(Lit),
    Neg(Token![-], Lit),
    Tuple {
        elems: Vec<Value>,
        tokens: TokenStream,
    },
    Ident(Ident),
}

impl Value {
    pub fn span(&self) -> Span {
        match self {
            Value::Lit(l) => l.span(),
            Value::Neg(m, _) => m.span,
            Value::Tuple { tokens, .. } => tokens
                .clone()
                .into_iter()
                .next()
                .map_or_else(Span::call_site, |t| t.span()),
            Value::Ident(i) => i.span(),
        }
    }

    /// The value as the user wrote it, for messages.
    pub fn text(&self) -> String {
        match self {
            Value::Lit(l) => lit_text(l),
            Value::Neg(_, l) => format!("-{}", lit_text(l)),
            Value::Tuple { elems, .. } => {
                let parts: Vec<String> = elems.iter().map(Value::text).collect();
                format!("({})", parts.join(", "))
            }
            Value::Ident(i) => i.to_string(),
        }
    }
}

fn lit_text(l: &Lit) -> String {
    match l {
        Lit::Bool(b) => b.value().to_string(),
        other => quote::ToTokens::to_token_stream(other).to_string(),
    }
}
