//! Small pieces of generated code that `expand` and `train` share: literals, the activation
//! variants, the names of fields and descriptor constants.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use crate::args::Activation;
use crate::shape::Planned;

/// `__PARAMS_3_body_0`, the descriptor constant of the layer with key `3.body.0`.
pub(crate) fn desc_ident(l: &Planned) -> syn::Ident {
    format_ident!("__PARAMS_{}", l.key.replace('.', "_"))
}

/// `layer_3_body_0` for key `3.body.0`.
pub(crate) fn field_ident(l: &Planned) -> syn::Ident {
    format_ident!("layer_{}", l.key.replace('.', "_"))
}

/// `Activation::…` of `act`, for `__cnn::Activation::#act`.
pub(crate) fn activation(act: Activation) -> TokenStream {
    match act {
        Activation::Relu => quote!(Relu),
        Activation::LeakyRelu(s) => {
            let s = f32_lit(s);
            quote!(LeakyRelu(#s))
        }
        Activation::Sigmoid => quote!(Sigmoid),
        Activation::Tanh => quote!(Tanh),
        Activation::Silu => quote!(Silu),
        Activation::Gelu => quote!(Gelu),
        Activation::Relu6 => quote!(Relu6),
        Activation::Hardswish => quote!(Hardswish),
        Activation::Hardsigmoid => quote!(Hardsigmoid),
    }
}

/// `n` as an unsuffixed literal.
pub(crate) fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

/// `v` as an `f32` literal.
pub(crate) fn f32_lit(v: f64) -> Literal {
    // `args` rejected values that are not finite as f32.
    Literal::f32_suffixed(v as f32)
}
