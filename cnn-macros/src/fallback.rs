//! What a network with errors expands to: a stub with the same name and methods, so the user sees
//! the `cnn!` error and not a cascade of "cannot find type" errors.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::Network;

pub fn stub(net: &Network) -> TokenStream {
    let Network {
        attrs, vis, ident, ..
    } = net;
    let name = ident.to_string();
    quote! {
        #(#attrs)*
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #ident;

        const _: () = {
            use ::cnn::__private as __cnn;

            #[allow(dead_code, unused_variables, clippy::all)]
            impl #ident {
                pub const EMBEDDED: &'static Self = &#ident;
                pub const INPUT_LEN: usize = 0;
                pub const OUTPUT_LEN: usize = 0;
                pub const WORKSPACE_LEN: usize = 0;
                pub const RAM_BYTES: usize = 0;
                pub const FLASH_BYTES: usize = 0;
                pub fn forward_in(&self, input: &[f32], out: &mut [f32], workspace: &mut [f32]) -> ::core::result::Result<(), __cnn::SliceError> {
                    ::core::unreachable!()
                }
                pub fn embedded() -> &'static Self {
                    ::core::unreachable!()
                }
            }

            #[automatically_derived]
            #[allow(unused_variables)]
            impl __cnn::SliceModel for #ident {
                const INPUT_LEN: usize = 0;
                const OUTPUT_LEN: usize = 0;
                const WORKSPACE_LEN: usize = 0;
                fn forward_in(&self, input: &[f32], out: &mut [f32], workspace: &mut [f32]) -> ::core::result::Result<(), __cnn::SliceError> {
                    ::core::unreachable!()
                }
            }

            __cnn::if_std! {
            #[allow(dead_code, unused_variables, clippy::all)]
            impl #ident {
                pub fn from_safetensors(bytes: &[u8]) -> ::core::result::Result<Self, __cnn::Error> {
                    ::core::unreachable!()
                }
                pub fn to_safetensors(&self) -> ::std::vec::Vec<u8> {
                    ::core::unreachable!()
                }
                pub fn seeded(seed: u64) -> Self {
                    ::core::unreachable!()
                }
                pub fn forward_batch<D: __cnn::ndarray::Dimension>(&self, x: __cnn::ndarray::ArrayView4<'_, f32>) -> ::core::result::Result<__cnn::ndarray::Array<f32, D>, __cnn::Error> {
                    ::core::unreachable!()
                }
                pub fn forward<I: ?::core::marker::Sized, O>(&self, x: &I) -> O {
                    ::core::unreachable!()
                }
                pub fn summary(&self) -> __cnn::Summary {
                    ::core::unreachable!()
                }
            }

            #[automatically_derived]
            #[allow(unused_variables)]
            impl __cnn::Model for #ident {
                type Input = [[[f32; 0]; 0]; 0];
                type Output = [f32; 0];
                type Dim = __cnn::ndarray::Ix2;
                const NAME: &'static str = #name;
                const INPUT_SHAPE: [usize; 3] = [0; 3];
                const OUTPUT_SHAPE: &'static [usize] = &[];
                const PARAMS: usize = 0;
                const MACS: usize = 0;
                const LAYERS: &'static [__cnn::LayerInfo] = &[];
                const TORCH: &'static str = "";
                const WORKSPACE: __cnn::WorkspaceLayout = __cnn::WorkspaceLayout { activations: 0, scratch: 0, channels: 0, stack: &[] };
                fn from_safetensors(bytes: &[u8]) -> ::core::result::Result<Self, __cnn::Error> {
                    ::core::unreachable!()
                }
                fn to_safetensors(&self) -> ::std::vec::Vec<u8> {
                    ::core::unreachable!()
                }
                fn seeded(seed: u64) -> Self {
                    ::core::unreachable!()
                }
                fn forward_batch(&self, x: __cnn::ndarray::ArrayView4<'_, f32>) -> ::core::result::Result<__cnn::ndarray::Array2<f32>, __cnn::Error> {
                    ::core::unreachable!()
                }
                fn forward_into(
                    &self,
                    x: __cnn::ndarray::ArrayView4<'_, f32>,
                    out: __cnn::ndarray::ArrayViewMut<'_, f32, __cnn::ndarray::Ix2>,
                    workspace: &mut __cnn::Workspace,
                ) -> ::core::result::Result<(), __cnn::Error> {
                    ::core::unreachable!()
                }
                fn forward(&self, x: &Self::Input) -> Self::Output {
                    ::core::unreachable!()
                }
                fn set_precision(&mut self, precision: __cnn::Precision) {
                    ::core::unreachable!()
                }
                fn precision(&self) -> __cnn::Precision {
                    ::core::unreachable!()
                }
            }

            #[automatically_derived]
            #[allow(unused_variables)]
            impl __cnn::Parameters for #ident {
                fn visit_params_mut(
                    &mut self,
                    f: &mut __cnn::ParamVisitor<'_>,
                ) -> ::core::result::Result<(), __cnn::Error> {
                    ::core::unreachable!()
                }
            }

            #[automatically_derived]
            #[allow(unused_variables)]
            impl __cnn::Train for #ident {
                const PARAM_SPECS: &'static [__cnn::ParamSpec] = &[];
                const TRAIN_LAYOUT: __cnn::TrainLayout = __cnn::TrainLayout {
                    slots: &[], batch_norms: &[], dropouts: &[], params: 0, param_tensors: 0,
                    largest_weight: 0, largest_bias: 0, forward_scratch: 0, backward_scratch: 0,
                    backward_scratch_per_sample: 0, output: 0,
                };
                fn __forward_train(
                    &mut self,
                    x: __cnn::ndarray::ArrayView4<'_, f32>,
                    dropout: bool,
                    rng: &mut __cnn::Rng,
                    cache: &mut __cnn::TrainCache,
                ) -> ::core::result::Result<(), __cnn::Error> {
                    ::core::unreachable!()
                }
                fn __backward(
                    &self,
                    cache: &__cnn::TrainCache,
                    work: &mut __cnn::BackWork,
                    grads: &mut __cnn::Grads,
                    frozen: &dyn ::core::ops::Fn(usize) -> bool,
                    lowest: usize,
                ) {
                    ::core::unreachable!()
                }
                fn __train_state(&self) -> &__cnn::TrainState {
                    ::core::unreachable!()
                }
                fn __train_state_mut(&mut self) -> &mut __cnn::TrainState {
                    ::core::unreachable!()
                }
            }
            }
        };
    }
}
