//! Code generation from a checked plan; cannot fail.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};

use crate::args::{Activation, LayerKind, PoolKind};
use crate::ast::Network;
use crate::budget::Figures;
use crate::embed::Embedded;
use crate::names::{activation, desc_ident, f32_lit, field_ident, lit};
use crate::shape::{Block, Plan, Planned};
use crate::tensor::Shape;

/// The user's struct, and inside `const _: () = { … };` the layer descriptors, `embedded()`
/// (with the statics `prepare` made), the forward pass and the `Model` impl; the workspace
/// and the `RAM_BYTES` / `FLASH_BYTES` figures come from `budget`.
pub fn network(
    net: &Network,
    plan: &Plan,
    embedded: Option<(&Embedded, &TokenStream)>,
    figures: &Figures,
) -> TokenStream {
    let all: Vec<Parts> = plan.all().into_iter().map(parts).collect();
    let strukt = strukt(net, &all);
    let params = all.iter().filter_map(|p| p.params.as_ref());
    let embedded = embedded.map(|(file, statics)| embedded_fn(net, file, statics));
    let run = run_fn(net, plan, figures);
    let model = model_impl(net, plan, &all, figures);
    let train = crate::train::train_impls(net, plan);
    let workspace = workspace(figures);
    let ws_len = lit(figures.workspace);
    quote! {
        #strukt

        const _: () = {
            use ::cnn::__private as __cnn;

            #(#params)*

            const __WORKSPACE: __cnn::WorkspaceLayout = #workspace;
            const _: () = ::core::assert!(
                __WORKSPACE.stack.len() <= __cnn::MAX_STACK,
                "cnn!: blocks nested too deeply (more than 64 saved tensors at once)"
            );
            const _: () = ::core::assert!(
                __WORKSPACE.sample_len() == #ws_len,
                "cnn!: the macro's workspace figure disagrees with WorkspaceLayout::sample_len"
            );

            #embedded

            #run

            __cnn::if_std! {
                #model

                #train
            }
        };
    }
}

/// `struct Net { layer_0: Conv2d, … }`, one field per layer with weights.
fn strukt(net: &Network, all: &[Parts]) -> TokenStream {
    let Network {
        attrs, vis, ident, ..
    } = net;
    let fields = all
        .iter()
        .filter_map(|p| p.field.as_ref())
        .map(|(f, ty, doc)| quote!(#[doc = #doc] pub #f: #ty,));
    quote! {
        #(#attrs)*
        #[derive(::core::clone::Clone, ::core::fmt::Debug, ::core::cmp::PartialEq)]
        #vis struct #ident {
            #(#fields)*
            /// Frozen layers, the dropout generator and a training step's buffers (nothing
            /// without `std`).
            __train: ::cnn::__private::TrainSlot,
        }
    }
}

/// `Net::EMBEDDED` and `Net::embedded()`: the `#[weights]` file laid out at compile time as
/// static data ([`crate::prepare`]); `include_bytes!` of the file makes an edit to it rebuild
/// the crate.
fn embedded_fn(net: &Network, file: &Embedded, statics: &TokenStream) -> TokenStream {
    let ident = &net.ident;
    let path = &file.path;
    let doc = format!(
        "The network with the weights of `{}`, embedded in the binary and checked against the layers at compile time: [`Self::EMBEDDED`].",
        net.weights.as_ref().map_or(String::new(), |(_, lit)| lit.value())
    );
    quote! {
        const _: &[u8] = ::core::include_bytes!(#path);

        #statics

        impl #ident {
            #[doc = #doc]
            pub fn embedded() -> &'static Self {
                Self::EMBEDDED
            }
        }
    }
}

/// `__cnn_run`, the forward pass over one `Exec`: one call per layer, fused where it can.
fn run_fn(net: &Network, plan: &Plan, figures: &Figures) -> TokenStream {
    let ident = &net.ident;
    let run = run_list(&plan.layers);
    let ws_len = lit(figures.workspace);
    let (ram, flash) = (lit(figures.ram), lit(figures.flash));
    let [c, h, w] = plan.input;
    let input_len = lit(c * h * w);
    let output_len = lit(plan.output().len());
    let docs = [
        "Values of one input sample for [`Self::forward_in`]: `C·H·W`.",
        "Values of one result of [`Self::forward_in`].",
        "`f32` elements of the workspace [`Self::forward_in`] needs, computed at compile time from the planned shapes: two activation buffers, the largest layer's scratch, the batch-norm coefficients and the tensors saved by blocks, for one sample.",
        "Inference on one sample in the caller's buffers, without allocation, without `std` and without panicking: `input` holds `INPUT_LEN` values (`[C, H, W]` row-major), `out` receives `OUTPUT_LEN` values, and `workspace` holds at least `WORKSPACE_LEN` values (its contents on entry do not matter).\n\n# Errors\n[`SliceError`](cnn::SliceError) for a slice of the wrong length, or for a `bn(track_running_stats=false)` that sees one value per channel.",
        "Bytes of RAM [`Self::forward_in`] needs: `4 × (WORKSPACE_LEN + INPUT_LEN + OUTPUT_LEN)`, the workspace, input and output as `f32`, exactly (the figure `#[budget(ram = …)]` limits).",
        "Bytes of flash this network takes, about: its weights (with `#[weights]`, the static data `EMBEDDED` reads, laid out for the kernels; else 4 bytes per parameter) plus an estimate of the code of the kernels it uses, measured for x86-64 release `no_std` builds (other targets differ). The figure `#[budget(flash = …)]` limits.",
    ];
    let [d_in, d_out, d_ws, d_fwd, d_ram, d_flash] = docs;
    quote! {
        impl #ident {
            #[doc = #d_in]
            pub const INPUT_LEN: usize = #input_len;
            #[doc = #d_out]
            pub const OUTPUT_LEN: usize = #output_len;
            #[doc = #d_ws]
            pub const WORKSPACE_LEN: usize = #ws_len;
            #[doc = #d_ram]
            pub const RAM_BYTES: usize = #ram;
            #[doc = #d_flash]
            pub const FLASH_BYTES: usize = #flash;

            #[doc = #d_fwd]
            pub fn forward_in(
                &self,
                input: &[f32],
                out: &mut [f32],
                workspace: &mut [f32],
            ) -> ::core::result::Result<(), __cnn::SliceError> {
                __cnn::Bare::forward_in(
                    &__WORKSPACE,
                    input,
                    out,
                    workspace,
                    [Self::INPUT_LEN, Self::OUTPUT_LEN],
                    |__exec| self.__cnn_run(__exec),
                )
            }

            fn __cnn_run<__E: __cnn::Run>(&self, __exec: &mut __E) -> ::core::result::Result<(), __E::Error> {
                #(#run)*
                ::core::result::Result::Ok(())
            }
        }

        #[automatically_derived]
        impl __cnn::SliceModel for #ident {
            const INPUT_LEN: usize = #input_len;
            const OUTPUT_LEN: usize = #output_len;
            const WORKSPACE_LEN: usize = #ws_len;

            fn forward_in(
                &self,
                input: &[f32],
                out: &mut [f32],
                workspace: &mut [f32],
            ) -> ::core::result::Result<(), __cnn::SliceError> {
                #ident::forward_in(self, input, out, workspace)
            }
        }
    }
}

/// `impl Model for Net`.
fn model_impl(net: &Network, plan: &Plan, all: &[Parts], figures: &Figures) -> TokenStream {
    let ident = &net.ident;
    let (ram, weights, flash) = (lit(figures.ram), lit(figures.weights), lit(figures.flash));
    let name = ident.to_string();
    let [c, h, w] = plan.input.map(lit);
    let input_ty = quote!([[[f32; #w]; #h]; #c]);
    let Output {
        ty: output_ty,
        dim,
        into_batch,
        into_sample,
        dims: out_dims,
    } = output(plan.output());
    let out_len = lit(plan.output().len());
    let whole_batch = plan
        .all()
        .into_iter()
        .any(|l| matches!(&l.layer.kind, LayerKind::BatchNorm(a) if !a.track_running_stats));
    let batch_ty = quote!(__cnn::ndarray::Array<f32, __cnn::ndarray::#dim>);
    let load = all.iter().map(|p| &p.load);
    let seeded = all.iter().map(|p| &p.seeded);
    let save = all.iter().map(|p| &p.save);
    let params = lit(plan.layers.iter().map(|l| l.params).sum());
    let macs = lit(plan.layers.iter().map(|l| l.macs).sum());
    let infos = layer_infos(plan);
    let torch_seq = torch_source(plan);
    let call_site = Span::call_site();
    let model = quote::quote_spanned!(call_site=> __cnn::Model);
    let by_precision: Vec<&syn::Ident> = all.iter().filter_map(|p| p.precision.as_ref()).collect();
    let get_precision = match by_precision.first() {
        Some(f) => quote!(self.#f.precision()),
        None => quote!(__cnn::Precision::F32),
    };
    let declared = if net.bf16.as_ref().is_ok_and(|b| *b) {
        quote!(<Self as __cnn::Model>::set_precision(&mut __net, __cnn::Precision::Bf16);)
    } else {
        TokenStream::new()
    };
    quote! {
        #[automatically_derived]
        impl #model for #ident {
            type Input = #input_ty;
            type Output = #output_ty;
            type Dim = __cnn::ndarray::#dim;
            const NAME: &'static str = #name;
            const INPUT_SHAPE: [usize; 3] = [#c, #h, #w];
            const OUTPUT_SHAPE: &'static [usize] = #out_dims;
            const PARAMS: usize = #params;
            const MACS: usize = #macs;
            const LAYERS: &'static [__cnn::LayerInfo] = &[#(#infos),*];
            const TORCH: &'static str = #torch_seq;
            const WORKSPACE: __cnn::WorkspaceLayout = __WORKSPACE;
            const RAM_BYTES: usize = #ram;
            const WEIGHT_BYTES: usize = #weights;
            const FLASH_BYTES: usize = #flash;

            fn from_safetensors(bytes: &[u8]) -> ::core::result::Result<Self, __cnn::Error> {
                let __weights = __cnn::Weights::parse(bytes)?;
                #[allow(unused_mut)]
                let mut __net = #ident { #(#load)* __train: __cnn::TrainSlot::empty() };
                __weights.finish()?;
                #declared
                ::core::result::Result::Ok(__net)
            }

            fn to_safetensors(&self) -> ::std::vec::Vec<u8> {
                let mut __out = __cnn::TensorWriter::new();
                #(#save)*
                __out.finish()
            }

            fn seeded(seed: u64) -> Self {
                #[allow(unused_mut, unused_variables)]
                let mut __rng = __cnn::Rng::new(seed);
                #[allow(unused_mut)]
                let mut __net = #ident { #(#seeded)* __train: __cnn::TrainSlot::seeded(seed) };
                #declared
                __net
            }

            fn set_precision(&mut self, precision: __cnn::Precision) {
                let _ = precision;
                #(self.#by_precision.set_precision(precision);)*
            }

            fn precision(&self) -> __cnn::Precision {
                #get_precision
            }

            fn forward_batch(&self, x: __cnn::ndarray::ArrayView4<'_, f32>) -> ::core::result::Result<#batch_ty, __cnn::Error> {
                let __out = __cnn::run_batch(x, [#c, #h, #w], #out_len, #whole_batch, (<Self as __cnn::Model>::MACS, <Self as __cnn::Model>::WORKSPACE.activations), &|__exec| self.__cnn_run(__exec))?;
                ::core::result::Result::Ok(#into_batch)
            }

            fn forward_into(
                &self,
                x: __cnn::ndarray::ArrayView4<'_, f32>,
                out: __cnn::ndarray::ArrayViewMut<'_, f32, __cnn::ndarray::#dim>,
                workspace: &mut __cnn::Workspace,
            ) -> ::core::result::Result<(), __cnn::Error> {
                __cnn::run_into(x, [#c, #h, #w], out, #out_dims, #whole_batch, workspace, &|__exec| self.__cnn_run(__exec))
            }

            fn forward(&self, x: &#input_ty) -> #output_ty {
                let mut __exec = __cnn::Exec::from_sample(x.as_flattened().as_flattened());
                if let ::core::result::Result::Err(e) = self.__cnn_run(&mut __exec) {
                    ::core::panic!("{}", e);
                }
                #into_sample
            }
        }
    }
}

/// How the network's output is typed and built: a flat `[f32; K]` or a boxed `[C, H, W]` array.
struct Output {
    ty: TokenStream,
    dim: TokenStream,
    into_batch: TokenStream,
    into_sample: TokenStream,
    dims: TokenStream,
}

fn output(shape: Shape) -> Output {
    match shape {
        Shape::Flat(k) => {
            let k = lit(k);
            Output {
                ty: quote!([f32; #k]),
                dim: quote!(Ix2),
                into_batch: quote!(__out.into_array2(#k)),
                into_sample: quote!(__exec.to_array()),
                dims: quote!(&[#k]),
            }
        }
        Shape::Chw { c, h, w } => {
            let (c, h, w) = (lit(c), lit(h), lit(w));
            Output {
                ty: quote!(::std::boxed::Box<[[[f32; #w]; #h]; #c]>),
                dim: quote!(Ix4),
                into_batch: quote!(__out.into_array4([#c, #h, #w])),
                into_sample: quote!(__exec.to_boxed_chw()),
                dims: quote!(&[#c, #h, #w]),
            }
        }
    }
}

/// `Model::LAYERS`, one `LayerInfo` per planned layer.
fn layer_infos(plan: &Plan) -> Vec<TokenStream> {
    plan.all()
        .into_iter()
        .map(|l| {
            let (index, key, depth) = (lit(l.index), &l.key, lit(l.depth));
            let dsl = &l.layer.dsl;
            let torch = match &l.block {
                Some(b) => block_torch(b),
                None => torch(l),
            };
            let dims = l.output.dims().into_iter().map(lit);
            let (p, m) = (lit(l.params), lit(l.macs));
            quote! {
                __cnn::LayerInfo { index: #index, key: #key, depth: #depth, dsl: #dsl, torch: #torch, output: &[#(#dims),*], params: #p, macs: #m }
            }
        })
        .collect()
}

/// A block's PyTorch class and the size of its paths, for its row in `LAYERS` (the layers
/// follow as rows of their own).
fn block_torch(block: &Block) -> String {
    match block {
        Block::Residual {
            body,
            shortcut: None,
        } => format!("Residual(body: {} modules)", body.len()),
        Block::Residual {
            body,
            shortcut: Some(sc),
        } => format!(
            "Residual(body: {} modules, shortcut: {} modules)",
            body.len(),
            sc.len()
        ),
        Block::Concat(branches) => format!("Concat({} branches)", branches.len()),
    }
}

/// The two modules of `TORCH` for networks with blocks (`state_dict` keys `3.body.0.weight`,
/// `3.shortcut.1.running_mean`, `5.branches.1.0.weight`).
const TORCH_BLOCKS: &str = r#"class Residual(nn.Module):
    """`residual(shortcut { ... }) { ... }`: body(x) + shortcut(x), the identity without shortcut."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = body
        if shortcut is not None:
            self.shortcut = shortcut

    def forward(self, x):
        s = self.shortcut(x) if hasattr(self, "shortcut") else x
        return self.body(x) + s


class Concat(nn.Module):
    """`concat { branch { ... } ... }`: the branches' outputs along channels; `branch {}` is empty."""

    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], dim=1)


"#;

/// `Model::TORCH`: an `nn.Sequential` expression for a plain network; for one with blocks,
/// Python source defining `Residual` and `Concat` and then `model`.
fn torch_source(plan: &Plan) -> String {
    let seq = torch_list(&plan.layers, 1);
    if plan.layers.iter().all(|l| l.block.is_none()) {
        seq
    } else {
        format!("{TORCH_BLOCKS}model = {seq}\n")
    }
}

/// `nn.Sequential(…)` of one list, its modules indented `level` steps of four spaces.
fn torch_list(layers: &[Planned], level: usize) -> String {
    let pad = "    ".repeat(level);
    let close = "    ".repeat(level - 1);
    if layers.is_empty() {
        return "nn.Sequential()".into();
    }
    let body: Vec<String> = layers
        .iter()
        .map(|l| {
            let module = match &l.block {
                None => torch(l),
                Some(Block::Residual { body, shortcut }) => {
                    let inner = "    ".repeat(level + 1);
                    let mut s = format!("Residual(\n{inner}{}", torch_list(body, level + 2));
                    if let Some(sc) = shortcut {
                        s += &format!(",\n{inner}shortcut={}", torch_list(sc, level + 2));
                    }
                    s + &format!(",\n{pad})")
                }
                Some(Block::Concat(branches)) => {
                    let inner = "    ".repeat(level + 1);
                    let parts: Vec<String> = branches
                        .iter()
                        .map(|b| format!("{inner}{},\n", torch_list(b, level + 2)))
                        .collect();
                    format!("Concat([\n{}{pad}])", parts.concat())
                }
            };
            format!("{pad}{module},\n")
        })
        .collect();
    format!("nn.Sequential(\n{}{close})", body.concat())
}

/// `Model::WORKSPACE` as literals, from the layout `budget` computed with the runtime's own
/// `scratch_len` functions: the largest activation, scratch and conv output channel count, and
/// the block stack.
fn workspace(figures: &Figures) -> TokenStream {
    let l = &figures.layout;
    let (activations, scratch, channels) = (lit(l.activations), lit(l.scratch), lit(l.channels));
    let stack = l.stack.iter().map(|&s| lit(s));
    quote! {
        __cnn::WorkspaceLayout {
            activations: #activations,
            scratch: #scratch,
            channels: #channels,
            stack: &[#(#stack),*],
        }
    }
}

/// What one planned layer contributes to each generated item.
#[derive(Default)]
struct Parts {
    /// `const __PARAMS_{index}: …Params = …;`, the layer's descriptor, emitted once.
    params: Option<TokenStream>,
    field: Option<(syn::Ident, TokenStream, String)>,
    load: TokenStream,
    seeded: TokenStream,
    save: TokenStream,
    run: TokenStream,
    /// The field of a layer that can multiply in bf16 (a convolution or a linear layer).
    precision: Option<syn::Ident>,
}

fn parts(l: &Planned) -> Parts {
    let i = &l.key;
    let field = field_ident(l);
    let desc = desc_ident(l);
    let doc = format!("`{}`: `{}`", l.key, l.layer.dsl);
    let [c, h, w] = match l.input {
        Shape::Chw { c, h, w } => [c, h, w],
        Shape::Flat(k) => [k, 1, 1],
    };
    let out_hw = match l.output {
        Shape::Chw { h, w, .. } => [h, w],
        Shape::Flat(_) => [1, 1],
    };
    let mut p = Parts::default();
    match &l.layer.kind {
        LayerKind::Conv(a) => {
            let (c_in, c_out, groups) = (lit(a.c_in.v), lit(a.c_out.v), lit(a.groups.v));
            let (kernel, stride, padding, dilation) = (
                pair(a.kernel.v),
                pair(a.stride.v),
                pair(a.padding.v),
                pair(a.dilation.v),
            );
            let (in_hw, out_hw) = (pair([h, w]), pair(out_hw));
            p.params = Some(quote! {
                const #desc: __cnn::Conv2dParams = __cnn::Conv2dParams {
                    c_in: #c_in, c_out: #c_out, groups: #groups,
                    kernel: #kernel, stride: #stride, padding: #padding, dilation: #dilation,
                    in_hw: #in_hw, out_hw: #out_hw,
                };
            });
            let bias = a.bias;
            p.field = Some((field.clone(), quote!(::cnn::__private::Conv2d), doc));
            p.load = quote!(#field: __cnn::Conv2d::load(&__weights, #i, #desc, #bias)?,);
            p.seeded = quote!(#field: __cnn::Conv2d::seeded(#i, #desc, #bias, &mut __rng),);
            p.save = quote!(self.#field.save(&mut __out););
            p.run = quote!(__exec.conv2d(&self.#field););
            p.precision = Some(field.clone());
        }
        LayerKind::ConvTranspose(a, op) => {
            let (c_in, c_out, groups) = (lit(a.c_in.v), lit(a.c_out.v), lit(a.groups.v));
            let (kernel, stride, padding, output_padding, dilation) = (
                pair(a.kernel.v),
                pair(a.stride.v),
                pair(a.padding.v),
                pair(op.v),
                pair(a.dilation.v),
            );
            let (in_hw, out_hw) = (pair([h, w]), pair(out_hw));
            p.params = Some(quote! {
                const #desc: __cnn::ConvTranspose2dParams = __cnn::ConvTranspose2dParams {
                    c_in: #c_in, c_out: #c_out, groups: #groups,
                    kernel: #kernel, stride: #stride, padding: #padding,
                    output_padding: #output_padding, dilation: #dilation,
                    in_hw: #in_hw, out_hw: #out_hw,
                };
            });
            let bias = a.bias;
            p.field = Some((
                field.clone(),
                quote!(::cnn::__private::ConvTranspose2d),
                doc,
            ));
            p.load = quote!(#field: __cnn::ConvTranspose2d::load(&__weights, #i, #desc, #bias)?,);
            p.seeded =
                quote!(#field: __cnn::ConvTranspose2d::seeded(#i, #desc, #bias, &mut __rng),);
            p.save = quote!(self.#field.save(&mut __out););
            p.run = quote!(__exec.conv_transpose2d(&self.#field););
        }
        LayerKind::Upsample(a) => {
            let (channels, scale, in_hw, out_hw) =
                (lit(c), pair(a.scale.v), pair([h, w]), pair(out_hw));
            let mode = if a.bilinear {
                let ac = a.align_corners.is_some_and(|ac| ac.v);
                quote!(__cnn::UpsampleMode::Bilinear { align_corners: #ac })
            } else {
                quote!(__cnn::UpsampleMode::Nearest)
            };
            p.params = Some(quote! {
                const #desc: __cnn::Upsample2dParams = __cnn::Upsample2dParams {
                    channels: #channels, scale: #scale, mode: #mode, in_hw: #in_hw, out_hw: #out_hw,
                };
            });
            p.run = quote!(__exec.upsample2d(&#desc););
        }
        LayerKind::BatchNorm(a) => {
            let (channels, hw) = (lit(c), lit(h * w));
            let (eps, momentum) = (f32_lit(a.eps), f32_lit(a.momentum));
            let (affine, track) = (a.affine, a.track_running_stats);
            p.params = Some(quote! {
                const #desc: __cnn::BatchNormParams = __cnn::BatchNormParams {
                    channels: #channels, hw: #hw, eps: #eps, momentum: #momentum,
                    affine: #affine, track_running_stats: #track,
                };
            });
            p.field = Some((field.clone(), quote!(::cnn::__private::BatchNorm2d), doc));
            p.load = quote!(#field: __cnn::BatchNorm2d::load(&__weights, #i, #desc)?,);
            p.seeded = quote!(#field: __cnn::BatchNorm2d::seeded(#i, #desc, &mut __rng),);
            p.save = quote!(self.#field.save(&mut __out););
            p.run = quote!(__exec.batchnorm(&self.#field)?;);
        }
        LayerKind::Linear(a) => {
            let (fin, fout) = (lit(l.input.len()), lit(a.out_features.v));
            p.params = Some(quote! {
                const #desc: __cnn::LinearParams =
                    __cnn::LinearParams { in_features: #fin, out_features: #fout };
            });
            let bias = a.bias;
            p.field = Some((field.clone(), quote!(::cnn::__private::Linear), doc));
            p.load = quote!(#field: __cnn::Linear::load(&__weights, #i, #desc, #bias)?,);
            p.seeded = quote!(#field: __cnn::Linear::seeded(#i, #desc, #bias, &mut __rng),);
            p.save = quote!(self.#field.save(&mut __out););
            p.run = quote!(__exec.linear(&self.#field););
            p.precision = Some(field.clone());
        }
        LayerKind::Activation(act) => {
            let act = activation(*act);
            p.run = quote!(__exec.activation(__cnn::Activation::#act););
        }
        LayerKind::Softmax => {
            let (channels, spatial) = (lit(c), lit(h * w));
            p.run = quote!(__exec.softmax(#channels, #spatial););
        }
        LayerKind::Pool(a) => {
            p.params = Some(pool(
                &desc,
                a.kind,
                c,
                a.kernel.v,
                a.stride.v,
                a.padding.v,
                a.ceil_mode,
                [h, w],
                out_hw,
            ));
            p.run = quote!(__exec.pool2d(&#desc););
        }
        LayerKind::GlobalPool(kind) => {
            p.params = Some(pool(
                &desc,
                *kind,
                c,
                [h, w],
                [h, w],
                [0, 0],
                false,
                [h, w],
                [1, 1],
            ));
            p.run = quote!(__exec.pool2d(&#desc););
        }
        LayerKind::Flatten
        | LayerKind::Dropout(_)
        | LayerKind::Identity
        | LayerKind::Residual(_)
        | LayerKind::Concat(_) => {}
    }
    p
}

#[allow(clippy::too_many_arguments)] // mirrors Pool2dParams
fn pool(
    desc: &syn::Ident,
    kind: PoolKind,
    channels: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    ceil_mode: bool,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
) -> TokenStream {
    let kind = match kind {
        PoolKind::Max => quote!(__cnn::PoolKind::Max),
        PoolKind::Avg { count_include_pad } => {
            quote!(__cnn::PoolKind::Avg { count_include_pad: #count_include_pad })
        }
    };
    let channels = lit(channels);
    let (kernel, stride, padding, in_hw, out_hw) = (
        pair(kernel),
        pair(stride),
        pair(padding),
        pair(in_hw),
        pair(out_hw),
    );
    quote! {
        const #desc: __cnn::Pool2dParams = __cnn::Pool2dParams {
            kind: #kind, channels: #channels, kernel: #kernel, stride: #stride,
            padding: #padding, ceil_mode: #ceil_mode, in_hw: #in_hw, out_hw: #out_hw,
        };
    }
}

/// The forward calls of one list: each `conv` or `convtranspose` followed by a `bn` with
/// running statistics and/or an element-wise activation fused into one call (and a `conv`'s
/// chain followed by a `maxpool` or `avgpool` by the pool too), blocks expanded (`block`), an
/// activation right after a residual block fused into it.
fn run_list(layers: &[Planned]) -> Vec<TokenStream> {
    let mut out = Vec::with_capacity(layers.len());
    let mut i = 0;
    while i < layers.len() {
        let l = &layers[i];
        if let Some(block) = &l.block {
            let act = match (block, layers.get(i + 1).map(|n| &n.layer.kind)) {
                (Block::Residual { .. }, Some(LayerKind::Activation(a))) => Some(*a),
                _ => None,
            };
            out.extend(run_block(l, block, act));
            i += 1 + usize::from(act.is_some());
            continue;
        }
        let Some(fused) = conv_call(&l.layer.kind, "fused") else {
            out.push(parts(l).run);
            i += 1;
            continue;
        };
        let (bn, mut next) = folded_bn(layers, i + 1);
        let mut act = quote!(::core::option::Option::None);
        if let Some(LayerKind::Activation(a)) = layers.get(next).map(|l| &l.layer.kind) {
            let a = activation(*a);
            act = quote!(::core::option::Option::Some(__cnn::Activation::#a));
            next += 1;
        }
        let conv = field_ident(l);
        let pool = layers.get(next).filter(|p| {
            matches!(l.layer.kind, LayerKind::Conv(_)) && matches!(p.layer.kind, LayerKind::Pool(_))
        });
        if let Some(pool) = pool {
            // The runtime pools in the convolution's pass where it can, else runs both steps.
            let desc = desc_ident(pool);
            out.push(quote!(__exec.conv2d_pool(&self.#conv, #bn, #act, &#desc)?;));
            next += 1;
        } else if next == i + 1 {
            out.push(parts(l).run);
        } else {
            out.push(quote!(__exec.#fused(&self.#conv, #bn, #act)?;));
        }
        i = next;
    }
    out
}

/// `conv2d_{suffix}` / `conv_transpose2d_{suffix}` for a convolution, `None` for other layers.
fn conv_call(kind: &LayerKind, suffix: &str) -> Option<syn::Ident> {
    match kind {
        LayerKind::Conv(_) => Some(format_ident!("conv2d_{}", suffix)),
        LayerKind::ConvTranspose(..) => Some(format_ident!("conv_transpose2d_{}", suffix)),
        _ => None,
    }
}

/// `Some(&self.layer_k)` when `layers[at]` is a `bn` with running statistics (it folds into the
/// convolution before it), and the index after what was taken.
fn folded_bn(layers: &[Planned], at: usize) -> (TokenStream, usize) {
    match layers.get(at) {
        Some(l) if matches!(&l.layer.kind, LayerKind::BatchNorm(a) if a.track_running_stats) => {
            let field = field_ident(l);
            (quote!(::core::option::Option::Some(&self.#field)), at + 1)
        }
        _ => (quote!(::core::option::Option::None), at),
    }
}

/// When a branch ends in a layer that can write into its channels of the concat output: the
/// index of that layer and the call, given the offset and total channel count (`conv` or
/// `convtranspose`, then optionally a `bn` with running statistics and an activation; or
/// `upsample`).
fn concat_tail(branch: &[Planned]) -> Option<(usize, ConcatCall)> {
    let none = || quote!(::core::option::Option::None);
    if let Some(last) = branch.last() {
        if let LayerKind::Upsample(_) = last.layer.kind {
            let desc = desc_ident(last);
            return Some((branch.len() - 1, ConcatCall::Upsample(desc)));
        }
    }
    let (act, end) = match branch.last().map(|l| &l.layer.kind) {
        Some(LayerKind::Activation(a)) => {
            let a = activation(*a);
            (
                quote!(::core::option::Option::Some(__cnn::Activation::#a)),
                branch.len() - 1,
            )
        }
        _ => (none(), branch.len()),
    };
    (end.saturating_sub(2)..end).find_map(|c| {
        let call = conv_call(&branch[c].layer.kind, "concat")?;
        let (bn, after) = folded_bn(branch, c + 1);
        (after == end).then(|| {
            let conv = field_ident(&branch[c]);
            (
                c,
                ConcatCall::Conv {
                    call,
                    conv,
                    bn,
                    act: act.clone(),
                },
            )
        })
    })
}

/// The call that ends a concat branch inside its channel slice (see [`concat_tail`]).
enum ConcatCall {
    Conv {
        call: syn::Ident,
        conv: syn::Ident,
        bn: TokenStream,
        act: TokenStream,
    },
    Upsample(syn::Ident),
}

/// A block's calls. A residual saves its input, runs the shortcut (then swaps its result under
/// the input), runs the body and adds; when the body ends in a convolution (and a folded `bn`),
/// the add and `act` happen in that convolution's epilogue. A concat runs each branch from its
/// input and writes the result into its channels of the output.
fn run_block(l: &Planned, block: &Block, act: Option<Activation>) -> Vec<TokenStream> {
    let mut out = vec![quote!(__exec.block_enter();)];
    let act = match act {
        Some(a) => {
            let a = activation(a);
            quote!(::core::option::Option::Some(__cnn::Activation::#a))
        }
        None => quote!(::core::option::Option::None),
    };
    match block {
        Block::Residual { body, shortcut } => {
            if let Some(sc) = shortcut {
                out.extend(run_list(sc));
                out.push(quote!(__exec.swap_top();));
            }
            // The body's last convolution, when the body ends in it or in it and a folded bn.
            let tail = (0..body.len()).rev().take(2).find_map(|c| {
                let call = conv_call(&body[c].layer.kind, "residual")?;
                let (bn, end) = folded_bn(body, c + 1);
                (end == body.len()).then_some((c, call, bn))
            });
            match tail {
                Some((c, call, bn)) => {
                    out.extend(run_list(&body[..c]));
                    let conv = field_ident(&body[c]);
                    out.push(quote!(__exec.#call(&self.#conv, #bn, #act)?;));
                }
                None => {
                    out.extend(run_list(body));
                    out.push(quote!(__exec.residual_add(#act);));
                }
            }
        }
        Block::Concat(branches) => {
            out.clear();
            let (total, hw) = match l.output {
                Shape::Chw { c, h, w } => (c, h * w),
                Shape::Flat(k) => (k, 1),
            };
            let in_c = l.input.dims()[0];
            out.push({
                let len = lit(l.output.len());
                quote!(__exec.concat_enter(#len);)
            });
            let (mut offset, mut fresh) = (0, true);
            for b in branches {
                let c = b.last().map_or(in_c, |last| last.output.dims()[0]);
                let (off, cl, hwl, tl) = (lit(offset), lit(c), lit(hw), lit(total));
                if b.is_empty() {
                    out.push(quote!(__exec.concat_write_input(#off, #cl, #hwl, #tl);));
                } else {
                    if !fresh {
                        out.push(quote!(__exec.concat_restore();));
                    }
                    match concat_tail(b) {
                        // The branch's last layer writes into its channels directly.
                        Some((c, tail)) => {
                            out.extend(run_list(&b[..c]));
                            out.push(match tail {
                                ConcatCall::Conv {
                                    call,
                                    conv,
                                    bn,
                                    act,
                                } => quote!(__exec.#call(&self.#conv, #bn, #act, #off, #tl)?;),
                                ConcatCall::Upsample(desc) => {
                                    quote!(__exec.upsample2d_concat(&#desc, #off, #tl);)
                                }
                            });
                        }
                        None => {
                            out.extend(run_list(b));
                            out.push(quote!(__exec.concat_write(#off, #cl, #hwl, #tl);));
                        }
                    }
                    fresh = false;
                }
                offset += c;
            }
            out.push(quote!(__exec.concat_exit();));
        }
    }
    out
}

/// The equivalent PyTorch module, as a Python expression after `from torch import nn`.
fn torch(l: &Planned) -> String {
    let c = l.input.dims()[0];
    let tuple = |[a, b]: [usize; 2]| format!("({a}, {b})");
    let py_bool = |b: bool| if b { "True" } else { "False" };
    match &l.layer.kind {
        LayerKind::Conv(a) => {
            let mut s = format!(
                "nn.Conv2d({}, {}, kernel_size={}, stride={}",
                a.c_in.v,
                a.c_out.v,
                tuple(a.kernel.v),
                tuple(a.stride.v)
            );
            if a.padding.v != [0, 0] {
                s += &format!(", padding={}", tuple(a.padding.v));
            }
            if a.dilation.v != [1, 1] {
                s += &format!(", dilation={}", tuple(a.dilation.v));
            }
            if a.groups.v != 1 {
                s += &format!(", groups={}", a.groups.v);
            }
            if !a.bias {
                s += ", bias=False";
            }
            s + ")"
        }
        LayerKind::ConvTranspose(a, op) => {
            let mut s = format!(
                "nn.ConvTranspose2d({}, {}, kernel_size={}, stride={}",
                a.c_in.v,
                a.c_out.v,
                tuple(a.kernel.v),
                tuple(a.stride.v)
            );
            if a.padding.v != [0, 0] {
                s += &format!(", padding={}", tuple(a.padding.v));
            }
            if op.v != [0, 0] {
                s += &format!(", output_padding={}", tuple(op.v));
            }
            if a.groups.v != 1 {
                s += &format!(", groups={}", a.groups.v);
            }
            if !a.bias {
                s += ", bias=False";
            }
            if a.dilation.v != [1, 1] {
                s += &format!(", dilation={}", tuple(a.dilation.v));
            }
            s + ")"
        }
        LayerKind::Upsample(a) => {
            let [sh, sw] = a.scale.v;
            let scale = if sh == sw {
                format!("{:?}", sh as f64)
            } else {
                format!("({:?}, {:?})", sh as f64, sw as f64)
            };
            if a.bilinear {
                let ac = py_bool(a.align_corners.is_some_and(|ac| ac.v));
                format!("nn.Upsample(scale_factor={scale}, mode='bilinear', align_corners={ac})")
            } else {
                format!("nn.Upsample(scale_factor={scale}, mode='nearest')")
            }
        }
        LayerKind::BatchNorm(a) => format!(
            "nn.BatchNorm2d({c}, eps={:?}, momentum={:?}, affine={}, track_running_stats={})",
            a.eps,
            a.momentum,
            py_bool(a.affine),
            py_bool(a.track_running_stats)
        ),
        LayerKind::Activation(Activation::Relu) => "nn.ReLU()".into(),
        LayerKind::Activation(Activation::LeakyRelu(s)) => {
            format!("nn.LeakyReLU(negative_slope={s:?})")
        }
        LayerKind::Activation(Activation::Sigmoid) => "nn.Sigmoid()".into(),
        LayerKind::Activation(Activation::Tanh) => "nn.Tanh()".into(),
        LayerKind::Activation(Activation::Silu) => "nn.SiLU()".into(),
        LayerKind::Activation(Activation::Gelu) => "nn.GELU()".into(),
        LayerKind::Activation(Activation::Relu6) => "nn.ReLU6()".into(),
        LayerKind::Activation(Activation::Hardswish) => "nn.Hardswish()".into(),
        LayerKind::Activation(Activation::Hardsigmoid) => "nn.Hardsigmoid()".into(),
        LayerKind::Softmax => "nn.Softmax(dim=1)".into(),
        LayerKind::Pool(a) => {
            let head = match a.kind {
                PoolKind::Max => "nn.MaxPool2d",
                PoolKind::Avg { .. } => "nn.AvgPool2d",
            };
            let mut s = format!(
                "{head}(kernel_size={}, stride={}, padding={}, ceil_mode={}",
                tuple(a.kernel.v),
                tuple(a.stride.v),
                tuple(a.padding.v),
                py_bool(a.ceil_mode)
            );
            if let PoolKind::Avg { count_include_pad } = a.kind {
                s += &format!(", count_include_pad={}", py_bool(count_include_pad));
            }
            s + ")"
        }
        LayerKind::GlobalPool(PoolKind::Max) => "nn.AdaptiveMaxPool2d(1)".into(),
        LayerKind::GlobalPool(PoolKind::Avg { .. }) => "nn.AdaptiveAvgPool2d(1)".into(),
        LayerKind::Flatten => "nn.Flatten()".into(),
        LayerKind::Linear(a) => format!(
            "nn.Linear({}, {}{})",
            l.input.len(),
            a.out_features.v,
            if a.bias { "" } else { ", bias=False" }
        ),
        LayerKind::Dropout(p) => format!("nn.Dropout(p={p:?})"),
        LayerKind::Identity => "nn.Identity()".into(),
        // Blocks are written by `torch_list`, which knows their planned paths.
        LayerKind::Residual(_) => "Residual".into(),
        LayerKind::Concat(_) => "Concat".into(),
    }
}

fn pair([a, b]: [usize; 2]) -> TokenStream {
    let (a, b) = (lit(a), lit(b));
    quote!([#a, #b])
}
