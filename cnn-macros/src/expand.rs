//! Code generation from a checked plan; cannot fail.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote};

use crate::args::{Activation, LayerKind, PoolKind};
use crate::ast::Network;
use crate::shape::{Plan, Planned};
use crate::tensor::Shape;

/// The user's struct, and inside `const _: () = { … };` the layer descriptors, `embedded()`,
/// the forward pass and the `Model` impl.
pub fn network(net: &Network, plan: &Plan, embedded: Option<&str>) -> TokenStream {
    let all: Vec<Parts> = plan.layers.iter().map(parts).collect();
    let strukt = strukt(net, &all);
    let params = all.iter().filter_map(|p| p.params.as_ref());
    let embedded = embedded.map(|path| embedded_fn(net, path));
    let run = run_fn(net, plan, &all);
    let model = model_impl(net, plan, &all);
    quote! {
        #strukt

        const _: () = {
            use ::cnn::__private as __cnn;

            #(#params)*

            #embedded

            #run

            #model
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
        }
    }
}

/// `Net::embedded()`, decoding the `#[weights]` file once.
fn embedded_fn(net: &Network, path: &str) -> TokenStream {
    let ident = &net.ident;
    let doc = format!(
        "The network with the weights of `{}`, embedded in the binary and checked against the layers at compile time. The first call decodes them once; later calls return the same reference.",
        net.weights.as_ref().map_or(String::new(), |(_, lit)| lit.value())
    );
    quote! {
        impl #ident {
            #[doc = #doc]
            pub fn embedded() -> &'static Self {
                static __NET: ::std::sync::OnceLock<#ident> = ::std::sync::OnceLock::new();
                __NET.get_or_init(|| {
                    const __BYTES: &[u8] = ::core::include_bytes!(#path);
                    match <#ident as __cnn::Model>::from_safetensors(__BYTES) {
                        ::core::result::Result::Ok(net) => net,
                        ::core::result::Result::Err(e) => {
                            ::core::panic!("embedded weights passed the compile-time check, yet: {}", e)
                        }
                    }
                })
            }
        }
    }
}

/// `__cnn_run`, the forward pass over one `Exec`: one call per layer, fused where it can.
fn run_fn(net: &Network, plan: &Plan, all: &[Parts]) -> TokenStream {
    let ident = &net.ident;
    let run = fused_run(plan, all);
    quote! {
        impl #ident {
            fn __cnn_run(&self, __exec: &mut __cnn::Exec) -> ::core::result::Result<(), __cnn::Error> {
                #(#run)*
                ::core::result::Result::Ok(())
            }
        }
    }
}

/// `impl Model for Net`.
fn model_impl(net: &Network, plan: &Plan, all: &[Parts]) -> TokenStream {
    let ident = &net.ident;
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
        .layers
        .iter()
        .any(|l| matches!(&l.layer.kind, LayerKind::BatchNorm(a) if !a.track_running_stats));
    let batch_ty = quote!(__cnn::ndarray::Array<f32, __cnn::ndarray::#dim>);
    let load = all.iter().map(|p| &p.load);
    let seeded = all.iter().map(|p| &p.seeded);
    let save = all.iter().map(|p| &p.save);
    let params = lit(plan.layers.iter().map(|l| l.params).sum());
    let macs = lit(plan.layers.iter().map(|l| l.macs).sum());
    let infos = layer_infos(plan);
    let torch_seq = torch_sequential(plan);
    let workspace = workspace(plan, all);
    let call_site = Span::call_site();
    let model = quote::quote_spanned!(call_site=> __cnn::Model);
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
            const WORKSPACE: __cnn::WorkspaceLayout = #workspace;

            fn from_safetensors(bytes: &[u8]) -> ::core::result::Result<Self, __cnn::Error> {
                let __weights = __cnn::Weights::parse(bytes)?;
                let __net = #ident { #(#load)* };
                __weights.finish()?;
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
                #ident { #(#seeded)* }
            }

            fn forward_batch(&self, x: __cnn::ndarray::ArrayView4<'_, f32>) -> ::core::result::Result<#batch_ty, __cnn::Error> {
                let __out = __cnn::run_batch(x, [#c, #h, #w], #out_len, #whole_batch, <Self as __cnn::Model>::MACS, &|__exec| self.__cnn_run(__exec))?;
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
    plan.layers
        .iter()
        .map(|l| {
            let (index, dsl, torch) = (lit(l.index), &l.layer.dsl, torch(l));
            let dims = l.output.dims().into_iter().map(lit);
            let (p, m) = (lit(l.params), lit(l.macs));
            quote! {
                __cnn::LayerInfo { index: #index, dsl: #dsl, torch: #torch, output: &[#(#dims),*], params: #p, macs: #m }
            }
        })
        .collect()
}

/// `Model::TORCH`, the network as an `nn.Sequential`.
fn torch_sequential(plan: &Plan) -> String {
    let body: Vec<String> = plan
        .layers
        .iter()
        .map(|l| format!("    {},\n", torch(l)))
        .collect();
    format!("nn.Sequential(\n{})", body.concat())
}

/// `Model::WORKSPACE`: the largest activation, im2col scratch and conv output channel count.
fn workspace(plan: &Plan, all: &[Parts]) -> TokenStream {
    let activations = lit(plan
        .layers
        .iter()
        .map(|l| l.output.len())
        .fold(plan.input.iter().product(), usize::max));
    let scratch = all.iter().filter_map(|p| p.scratch.as_ref());
    let channels = lit(plan
        .layers
        .iter()
        .map(|l| match &l.layer.kind {
            LayerKind::Conv(a) | LayerKind::ConvTranspose(a, _) => a.c_out.v,
            _ => 0,
        })
        .max()
        .unwrap_or(0));
    quote! {
        __cnn::WorkspaceLayout {
            activations: #activations,
            scratch: __cnn::max_of(&[#(#scratch),*]),
            channels: #channels,
        }
    }
}

/// What one planned layer contributes to each generated item.
#[derive(Default)]
struct Parts {
    /// `const __PARAMS_{index}: …Params = …;`, the layer's descriptor, emitted once.
    params: Option<TokenStream>,
    /// A constant expression for the layer's im2col scratch, in elements.
    scratch: Option<TokenStream>,
    field: Option<(syn::Ident, TokenStream, String)>,
    load: TokenStream,
    seeded: TokenStream,
    save: TokenStream,
    run: TokenStream,
}

fn parts(l: &Planned) -> Parts {
    let i = lit(l.index);
    let field = format_ident!("layer_{}", l.index);
    let desc = format_ident!("__PARAMS_{}", l.index);
    let doc = format!("`{}`: `{}`", l.index, l.layer.dsl);
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
            p.scratch = Some(quote!(#desc.scratch_len()));
            p.field = Some((field.clone(), quote!(::cnn::__private::Conv2d), doc));
            p.load = quote!(#field: __cnn::Conv2d::load(&__weights, #i, #desc, #bias)?,);
            p.seeded = quote!(#field: __cnn::Conv2d::seeded(#i, #desc, #bias, &mut __rng),);
            p.save = quote!(self.#field.save(&mut __out););
            p.run = quote!(__exec.conv2d(&self.#field););
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
            p.scratch = Some(quote!(#desc.scratch_len()));
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
        LayerKind::Flatten | LayerKind::Dropout(_) | LayerKind::Identity => {}
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

/// The forward calls, with each `conv` or `convtranspose` followed by a `bn` with running statistics and/or an
/// element-wise activation fused into one `conv2d_fused` call.
fn fused_run(plan: &Plan, all: &[Parts]) -> Vec<TokenStream> {
    let layers = &plan.layers;
    let mut out = Vec::with_capacity(layers.len());
    let mut i = 0;
    while i < layers.len() {
        let fused = match layers[i].layer.kind {
            LayerKind::Conv(_) => format_ident!("conv2d_fused"),
            LayerKind::ConvTranspose(..) => format_ident!("conv_transpose2d_fused"),
            _ => {
                out.push(all[i].run.clone());
                i += 1;
                continue;
            }
        };
        let conv = format_ident!("layer_{}", layers[i].index);
        let mut next = i + 1;
        let mut bn = quote!(::core::option::Option::None);
        if let Some(LayerKind::BatchNorm(a)) = layers.get(next).map(|l| &l.layer.kind) {
            if a.track_running_stats {
                let field = format_ident!("layer_{}", layers[next].index);
                bn = quote!(::core::option::Option::Some(&self.#field));
                next += 1;
            }
        }
        let mut act = quote!(::core::option::Option::None);
        if let Some(LayerKind::Activation(a)) = layers.get(next).map(|l| &l.layer.kind) {
            let a = activation(*a);
            act = quote!(::core::option::Option::Some(__cnn::Activation::#a));
            next += 1;
        }
        if next == i + 1 {
            out.push(all[i].run.clone());
        } else {
            out.push(quote!(__exec.#fused(&self.#conv, #bn, #act)?;));
        }
        i = next;
    }
    out
}

fn activation(act: Activation) -> TokenStream {
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
    }
}

fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

fn f32_lit(v: f64) -> Literal {
    // `args` rejected values that are not finite as f32.
    Literal::f32_suffixed(v as f32)
}

fn pair([a, b]: [usize; 2]) -> TokenStream {
    let (a, b) = (lit(a), lit(b));
    quote!([#a, #b])
}
