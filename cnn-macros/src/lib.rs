//! The `cnn!` macro. Use it through the `cnn` crate, which documents it.

#![forbid(unsafe_code)]

mod args;
mod ast;
mod budget;
#[cfg(test)]
mod budget_tests;
mod check;
mod ctxt;
mod embed;
mod expand;
mod fallback;
mod json;
mod names;
mod parse;
mod prepare;
#[cfg(test)]
mod proptests;
mod shape;
mod suggest;
mod symbol;
mod tensor;
#[cfg(test)]
mod tests;
mod train;

use proc_macro::TokenStream;

/// Declares convolutional networks whose shapes are checked at compile time.
///
/// See the `cnn` crate for the layer language and the generated API.
#[proc_macro]
pub fn cnn(input: TokenStream) -> TokenStream {
    match syn::parse::<ast::Networks>(input) {
        Ok(mut networks) => {
            networks.source_file = proc_macro::Span::call_site().local_file();
            pipeline::expand(&networks).into()
        }
        Err(err) => err.to_compile_error().into(),
    }
}

mod pipeline;
