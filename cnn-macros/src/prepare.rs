//! `Net::EMBEDDED`: an embedded network's weights laid out at compile time as static data, in
//! the layouts the kernels read (Winograd's `U`, the direct kernel's packing, the eval-mode
//! batch norm folded into a scale and a shift per channel), by the runtime's own functions, so
//! that the run-time path has nothing left to prepare.
//!
//! The tensors go into two 64-byte aligned byte strings: `__CORE`, what inference reads, and
//! `__STD`, PyTorch's layout of the convolution weights that a kernel reads in its own layout
//! (needed with `std` only, for `to_safetensors` and training). Without `std` the second one is
//! not emitted at all, and the flash holds only what `forward_in` reads.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use cnn_runtime::__private::{
    bf16_weight_into, bf16_weight_len, bf16_weights_into, bf16_weights_len, prepare_into,
    scale_shift, BatchNormParams, Conv2dParams, LinearParams,
};

use crate::args::LayerKind;
use crate::embed::Embedded;
use crate::names::{desc_ident, field_ident, lit};
use crate::shape::{Plan, Planned};
use crate::tensor::Shape;

/// The bytes of one aligned blob, and where each tensor starts.
#[derive(Default)]
struct Blob {
    bytes: Vec<u8>,
}

impl Blob {
    /// Appends `values` at the next 64-byte boundary; returns `(start byte, length)`.
    fn push(&mut self, values: &[f32]) -> (usize, usize) {
        self.push_words(values.iter().map(|v| v.to_bits()), values.len())
    }

    /// Appends `len` 32-bit `words` (little-endian) at the next 64-byte boundary; returns
    /// `(start byte, length)`.
    fn push_words(&mut self, words: impl Iterator<Item = u32>, len: usize) -> (usize, usize) {
        self.bytes.resize(self.bytes.len().next_multiple_of(64), 0);
        let start = self.bytes.len();
        self.bytes.extend(words.flat_map(u32::to_le_bytes));
        (start, len)
    }
}

/// Both blobs.
#[derive(Default)]
struct Blobs {
    core: Blob,
    std: Blob,
}

impl Blobs {
    /// `values` in `__CORE`, as a `&'static [f32]` expression.
    fn core(&mut self, values: &[f32]) -> TokenStream {
        let (start, len) = self.core.push(values);
        let (start, len) = (lit(start), lit(len));
        quote!(__cnn::f32s(&__CORE, #start, #len))
    }

    /// `values` in `__STD` with `std`, an empty slice without.
    fn std_only(&mut self, values: &[f32]) -> TokenStream {
        let (start, len) = self.std.push(values);
        let (start, len) = (lit(start), lit(len));
        quote!(__cnn::std_or!({ __cnn::f32s(&__STD, #start, #len) } { &[] }))
    }

    /// bf16 weights (pairs) in `__STD` with `std` (bf16 runs only with it), an empty slice
    /// without: `.with_bf16_weights(…)` for the layer's constructor.
    fn bf16(&mut self, pairs: &[u32]) -> TokenStream {
        let (start, len) = self.std.push_words(pairs.iter().copied(), pairs.len());
        let (start, len) = (lit(start), lit(len));
        quote!(.with_bf16_weights(__cnn::std_or!({ __cnn::u32s(&__STD, #start, #len) } { &[] })))
    }
}

/// `[H, W]` of a planned layer's input and output (`[1, 1]` for a flat tensor).
fn hw(s: Shape) -> [usize; 2] {
    match s {
        Shape::Chw { h, w, .. } => [h, w],
        Shape::Flat(_) => [1, 1],
    }
}

/// The statics, and `impl Net { pub const EMBEDDED: &'static Self = … }`; and the bytes of
/// `__CORE`, what a `no_std` build keeps in flash (the weight part of `#[budget(flash)]`).
pub fn embedded(
    ident: &syn::Ident,
    plan: &Plan,
    file: &Embedded,
    bf16: bool,
) -> (TokenStream, usize) {
    let precision = if bf16 {
        quote!(__cnn::Precision::Bf16)
    } else {
        quote!(__cnn::Precision::F32)
    };
    let mut blobs = Blobs::default();
    let floats = |key: &str| -> &[f32] { file.floats.get(key).map_or(&[], Vec::as_slice) };
    let mut fields = Vec::new();
    for l in plan.all() {
        let Some(field) = field_of(l) else { continue };
        let key = &l.key;
        let desc = desc_ident(l);
        let t = |name: &str| floats(&format!("{key}.{name}"));
        let value = match &l.layer.kind {
            LayerKind::Conv(a) => {
                let p = Conv2dParams {
                    c_in: a.c_in.v,
                    c_out: a.c_out.v,
                    groups: a.groups.v,
                    kernel: a.kernel.v,
                    stride: a.stride.v,
                    padding: a.padding.v,
                    dilation: a.dilation.v,
                    in_hw: hw(l.input),
                    out_hw: hw(l.output),
                };
                let mut prepared = vec![0.0; p.prepared_len()];
                let made = prepare_into(&p, t("weight"), &mut prepared);
                // In bf16, the GEMM's copy of the weights too (none where the layer stays f32).
                let w16 = (bf16 && p.multiplies_in_bf16()).then(|| {
                    let mut w16 = vec![0; bf16_weights_len(&p)];
                    bf16_weights_into(&p, t("weight"), &prepared, &mut w16);
                    blobs.bf16(&w16)
                });
                let (weight, prepared) = if made {
                    let prepared = blobs.core(&prepared);
                    (
                        blobs.std_only(t("weight")),
                        quote!(::core::option::Option::Some(#prepared)),
                    )
                } else {
                    (
                        blobs.core(t("weight")),
                        quote!(::core::option::Option::None),
                    )
                };
                let bias = optional(a.bias.then(|| blobs.core(t("bias"))));
                quote!(__cnn::Conv2d::embedded(#key, #desc, #weight, #bias, #prepared).with_precision(#precision) #w16)
            }
            LayerKind::ConvTranspose(a, _) => {
                let weight = blobs.core(t("weight"));
                let bias = optional(a.bias.then(|| blobs.core(t("bias"))));
                quote!(__cnn::ConvTranspose2d::embedded(#key, #desc, #weight, #bias))
            }
            LayerKind::Linear(a) => {
                let w16 = bf16.then(|| {
                    let p = LinearParams {
                        in_features: l.input.len(),
                        out_features: a.out_features.v,
                    };
                    let mut w16 = vec![0; bf16_weight_len(&p)];
                    bf16_weight_into(&p, t("weight"), &mut w16);
                    blobs.bf16(&w16)
                });
                let weight = blobs.core(t("weight"));
                let bias = optional(a.bias.then(|| blobs.core(t("bias"))));
                quote!(__cnn::Linear::embedded(#key, #desc, #weight, #bias).with_precision(#precision) #w16)
            }
            LayerKind::BatchNorm(a) => {
                let c = l.input.dims()[0];
                let [h, w] = hw(l.input);
                let p = BatchNormParams {
                    channels: c,
                    hw: h * w,
                    eps: a.eps as f32,
                    momentum: a.momentum as f32,
                    affine: a.affine,
                    track_running_stats: a.track_running_stats,
                };
                let affine = a.affine.then(|| (t("weight"), t("bias")));
                let running = a
                    .track_running_stats
                    .then(|| (t("running_mean"), t("running_var")));
                let folded = running.map(|(mean, var)| {
                    let (mut scale, mut shift) = (vec![0.0; c], vec![0.0; c]);
                    scale_shift(
                        &p,
                        affine.map(|a| a.0),
                        affine.map(|a| a.1),
                        (mean, var),
                        &mut scale,
                        &mut shift,
                    );
                    let (scale, shift) = (blobs.core(&scale), blobs.core(&shift));
                    quote!((#scale, #shift))
                });
                let tensors = [
                    affine.map(|a| a.0),
                    affine.map(|a| a.1),
                    running.map(|r| r.0),
                    running.map(|r| r.1),
                ]
                .map(|t| optional(t.map(|t| blobs.core(t))));
                let tracked = optional(a.track_running_stats.then(|| {
                    let n = file
                        .ints
                        .get(&format!("{key}.num_batches_tracked"))
                        .copied()
                        .unwrap_or(0);
                    let n = Literal::i64_suffixed(n);
                    quote!(#n)
                }));
                let folded = optional(folded);
                quote!(__cnn::BatchNorm2d::embedded(#key, #desc, [#(#tensors),*], #tracked, #folded))
            }
            _ => continue,
        };
        fields.push(quote!(#field: #value,));
    }
    let blob = |b: &Blob, name: &str| {
        let name = quote::format_ident!("{}", name);
        let n = lit(b.bytes.len());
        let bytes = Literal::byte_string(&b.bytes);
        quote!(static #name: __cnn::Aligned<#n> = __cnn::Aligned(*#bytes);)
    };
    let core_bytes = blobs.core.bytes.len();
    let (core, std) = (blob(&blobs.core, "__CORE"), blob(&blobs.std, "__STD"));
    let doc = "The network with its embedded weights as static read-only data, laid out at compile time as the kernels read them: no decoding, no allocation, no first-use cost. Usable without `std` (`forward_in`).";
    let tokens = quote! {
        #core
        __cnn::if_std! { #std }

        impl #ident {
            #[doc = #doc]
            pub const EMBEDDED: &'static Self = &#ident {
                #(#fields)*
                __train: __cnn::TrainSlot::empty(),
            };
        }
    };
    (tokens, core_bytes)
}

/// `Some(x)` / `None` as tokens.
fn optional(x: Option<TokenStream>) -> TokenStream {
    match x {
        Some(x) => quote!(::core::option::Option::Some(#x)),
        None => quote!(::core::option::Option::None),
    }
}

/// The struct field of a weighted layer (the layers `expand::strukt` gives a field).
fn field_of(l: &Planned) -> Option<syn::Ident> {
    matches!(
        l.layer.kind,
        LayerKind::Conv(_)
            | LayerKind::ConvTranspose(..)
            | LayerKind::Linear(_)
            | LayerKind::BatchNorm(_)
    )
    .then(|| field_ident(l))
}
