//! Collects semantic errors so that one compile reports every mistake.

use proc_macro2::Span;
use quote::ToTokens;

/// A rule broken by one layer (`check.rs`), before the shape walk reports it with the shapes
/// that led there.
#[derive(Debug)]
pub struct Violation {
    /// The token to point at; `None` points at the whole layer.
    pub span: Option<Span>,
    pub msg: String,
}

impl Violation {
    pub fn at(span: Span, msg: String) -> Self {
        Violation {
            span: Some(span),
            msg,
        }
    }

    pub fn layer(msg: String) -> Self {
        Violation { span: None, msg }
    }
}

#[must_use = "call `check` to turn the collected errors into a result"]
#[derive(Default)]
pub struct Ctxt {
    errors: Vec<syn::Error>,
}

impl Ctxt {
    pub fn new() -> Self {
        Ctxt::default()
    }

    pub fn error_at(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.errors.push(syn::Error::new(span, msg));
    }

    pub fn error_spanned(&mut self, tokens: impl ToTokens, msg: impl std::fmt::Display) {
        self.errors.push(syn::Error::new_spanned(tokens, msg));
    }

    pub fn push(&mut self, err: syn::Error) {
        self.errors.push(err);
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn check(self) -> syn::Result<()> {
        let mut errors = self.errors.into_iter();
        let Some(mut first) = errors.next() else {
            return Ok(());
        };
        for e in errors {
            first.combine(e);
        }
        Err(first)
    }
}
