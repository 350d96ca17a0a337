//! Code generation for training: `impl Parameters` and `impl Train` of a checked plan.
//!
//! Every tensor of the graph gets a slot number at compile time: 0 is the input, each layer's
//! output the next number, `flatten` and `identity` keep their input's slot. The forward pass
//! is one call per layer with its slots; the backward pass is the same layers' calls in
//! reverse, each reading the gradient of its output slot and writing (or adding to) its input
//! slot's. Before each top-level layer's backward calls stands a check that ends the pass when
//! no layer at or below it is trained (everything below is frozen).

use std::collections::HashMap;

use proc_macro2::TokenStream;
use quote::quote;

use crate::args::LayerKind;
use crate::ast::Network;
use crate::names::{activation, desc_ident, f32_lit, field_ident, lit};
use crate::shape::{Block, Plan, Planned};
use crate::tensor::Shape;

/// `impl Parameters` and `impl Train` for the network.
pub fn train_impls(net: &Network, plan: &Plan) -> TokenStream {
    let ident = &net.ident;
    let name = ident.to_string();
    let mut g = Gen::new(plan);
    let out = g.list(&plan.layers, 0, None);
    let [c, h, w] = plan.input.map(lit);
    let (slots, bns, drops, out) = (lit(g.slots), lit(g.bns), lit(g.drops), lit(out));
    let fwd = &g.fwd;
    let bwd = g.bwd.iter().rev();
    let (specs, visits) = (&g.specs, &g.visits);
    let layout = {
        let slots = g.slot_lens.iter().map(|&v| lit(v));
        let bns = g.bn_channels.iter().map(|&v| lit(v));
        let drops = g.dropout_lens.iter().map(|&v| lit(v));
        let (params, tensors) = (lit(g.param_elements), lit(g.specs.len()));
        let [w, b] = g.largest.map(lit);
        let (fs, bs) = (&g.forward_scratch, &g.backward_scratch);
        let (fc, out) = (lit(g.fc_out), lit(plan.output().len()));
        quote! {
            __cnn::TrainLayout {
                slots: &[#(#slots),*],
                batch_norms: &[#(#bns),*],
                dropouts: &[#(#drops),*],
                params: #params,
                param_tensors: #tensors,
                largest_weight: #w,
                largest_bias: #b,
                forward_scratch: __cnn::max_of(&[#(#fs),*]),
                backward_scratch: __cnn::max_of(&[#(#bs),*]),
                backward_scratch_per_sample: #fc,
                output: #out,
            }
        }
    };
    quote! {
        #[automatically_derived]
        impl __cnn::Parameters for #ident {
            fn visit_params_mut(
                &mut self,
                __f: &mut __cnn::ParamVisitor<'_>,
            ) -> ::core::result::Result<(), __cnn::Error> {
                #(#visits)*
                ::core::result::Result::Ok(())
            }
        }

        #[automatically_derived]
        impl __cnn::Train for #ident {
            const PARAM_SPECS: &'static [__cnn::ParamSpec] = &[#(#specs),*];
            const TRAIN_LAYOUT: __cnn::TrainLayout = #layout;

            #[allow(unused_variables)]
            fn __forward_train(
                &mut self,
                x: __cnn::ndarray::ArrayView4<'_, f32>,
                __dropout: bool,
                __rng: &mut __cnn::Rng,
                __t: &mut __cnn::TrainCache,
            ) -> ::core::result::Result<(), __cnn::Error> {
                __cnn::begin_forward(__t, #name, x, [#c, #h, #w], [#slots, #bns, #drops, #out])?;
                #(#fwd)*
                ::core::result::Result::Ok(())
            }

            #[allow(unused_variables, unused_labels)]
            fn __backward(
                &self,
                __c: &__cnn::TrainCache,
                __b: &mut __cnn::BackWork,
                __g: &mut __cnn::Grads,
                __frozen: &dyn ::core::ops::Fn(usize) -> bool,
                __lowest: usize,
            ) {
                'bw: {
                    #(#bwd)*
                }
            }

            fn __train_state(&self) -> &__cnn::TrainState {
                self.__train.get()
            }

            fn __train_state_mut(&mut self) -> &mut __cnn::TrainState {
                self.__train.get_mut()
            }
        }
    }
}

/// The generator's running state over the plan.
struct Gen {
    /// Slots used so far (slot 0 is the input).
    slots: usize,
    /// Batch norms and dropouts so far (their statistics and masks are numbered apart).
    bns: usize,
    drops: usize,
    /// The index of each parameter holder's first tensor, by key, in `state_dict` order.
    param_base: HashMap<String, usize>,
    fwd: Vec<TokenStream>,
    /// Backward calls in forward order (emitted reversed).
    bwd: Vec<TokenStream>,
    specs: Vec<TokenStream>,
    visits: Vec<TokenStream>,
    /// Elements per sample of each slot, per `bn` its channels, per `dropout` its elements.
    slot_lens: Vec<usize>,
    bn_channels: Vec<usize>,
    dropout_lens: Vec<usize>,
    /// Element counts of every parameter tensor: the largest weight and bias.
    largest: [usize; 2],
    param_elements: usize,
    /// Constant expressions of each weighted layer's forward and backward scratch, and the
    /// largest `fc` output (its backward scratch is per sample).
    forward_scratch: Vec<TokenStream>,
    backward_scratch: Vec<TokenStream>,
    fc_out: usize,
}

/// Where the layers being generated sit: the top-level layer holding them and the slot that
/// layer reads (its input's gradient is only needed when something below is trained).
#[derive(Clone, Copy)]
struct Top {
    index: usize,
    input: usize,
}

impl Gen {
    /// Numbers the parameters of `plan` in `state_dict` order, with their specs and visits.
    fn new(plan: &Plan) -> Self {
        let mut g = Gen {
            slots: 1,
            bns: 0,
            drops: 0,
            param_base: HashMap::new(),
            fwd: Vec::new(),
            bwd: Vec::new(),
            specs: Vec::new(),
            visits: Vec::new(),
            slot_lens: vec![plan.input.iter().product()],
            bn_channels: Vec::new(),
            dropout_lens: Vec::new(),
            largest: [0, 0],
            param_elements: 0,
            forward_scratch: Vec::new(),
            backward_scratch: Vec::new(),
            fc_out: 0,
        };
        for top in &plan.layers {
            for l in top.walk() {
                let tensors = param_tensors(l);
                if tensors.is_empty() {
                    continue;
                }
                let base = g.specs.len();
                g.param_base.insert(l.key.clone(), base);
                let field = field_ident(l);
                let keys: Vec<String> = tensors
                    .iter()
                    .map(|(name, _)| format!("{}.{name}", l.key))
                    .collect();
                let t = lit(top.index);
                for (name, shape) in &tensors {
                    let len: usize = shape.iter().product();
                    g.param_elements += len;
                    let which = usize::from(*name == "bias");
                    g.largest[which] = g.largest[which].max(len);
                }
                let desc = desc_ident(l);
                match &l.layer.kind {
                    LayerKind::Conv(_) => {
                        g.forward_scratch.push(quote!(#desc.scratch_len()));
                        g.backward_scratch
                            .push(quote!(__cnn::backward::conv2d_backward_scratch_len(&#desc)));
                    }
                    LayerKind::ConvTranspose(..) => {
                        g.forward_scratch.push(quote!(#desc.scratch_len()));
                        g.backward_scratch.push(
                            quote!(__cnn::backward::conv_transpose2d_backward_scratch_len(&#desc)),
                        );
                    }
                    LayerKind::Linear(a) => g.fc_out = g.fc_out.max(a.out_features.v),
                    _ => {}
                }
                for (key, (_, shape)) in keys.iter().zip(&tensors) {
                    let shape = shape.iter().map(|&d| lit(d));
                    g.specs.push(quote! {
                        __cnn::ParamSpec { key: #key, shape: &[#(#shape),*], top: #t }
                    });
                }
                let b = lit(base);
                g.visits
                    .push(quote!(self.#field.visit_params(&[#(#keys),*], #b, __f)?;));
            }
        }
        g
    }

    /// A new slot for a tensor of `len` elements per sample.
    fn slot(&mut self, len: usize) -> usize {
        self.slot_lens.push(len);
        self.slots += 1;
        self.slots - 1
    }

    /// The forward and backward calls of one list reading slot `input`; returns the slot of
    /// its output. `top` is `None` for the network's own list.
    fn list(&mut self, layers: &[Planned], input: usize, top: Option<Top>) -> usize {
        let mut cur = input;
        for l in layers {
            let here = top.unwrap_or(Top {
                index: l.index,
                input: cur,
            });
            cur = self.layer(l, cur, here);
            if top.is_none() {
                // Runs before this layer's backward calls (the list is emitted reversed).
                let i = lit(l.index);
                self.bwd.push(quote!(if __lowest > #i { break 'bw; }));
            }
        }
        cur
    }

    /// One layer (or block) reading slot `i`; returns its output slot.
    fn layer(&mut self, l: &Planned, i: usize, top: Top) -> usize {
        let (ti, t) = (lit(i), lit(top.index));
        let trainable = quote!(!__frozen(#t));
        let need_dx = if i == 0 {
            quote!(false)
        } else if i != top.input {
            quote!(true)
        } else {
            quote!(__lowest < #t)
        };
        let [c, h, w] = match l.input {
            Shape::Chw { c, h, w } => [c, h, w],
            Shape::Flat(k) => [k, 1, 1],
        };
        let field = field_ident(l);
        let base = lit(self.param_base.get(&l.key).copied().unwrap_or(0));
        if let Some(block) = &l.block {
            return self.block(l, block, i, top);
        }
        let o = match &l.layer.kind {
            LayerKind::Flatten
            | LayerKind::Identity
            | LayerKind::Residual(_)
            | LayerKind::Concat(_) => return i,
            _ => self.slot(l.output.len()),
        };
        let to = lit(o);
        let (fwd, bwd) = match &l.layer.kind {
            LayerKind::Conv(_) => (
                quote!(__t.conv2d(&self.#field, #ti, #to);),
                quote!(__b.conv2d(&self.#field, __c, (#ti, #to), __g, #base, #trainable, #need_dx);),
            ),
            LayerKind::ConvTranspose(..) => (
                quote!(__t.conv_transpose2d(&self.#field, #ti, #to);),
                quote!(__b.conv_transpose2d(&self.#field, __c, (#ti, #to), __g, #base, #trainable, #need_dx);),
            ),
            LayerKind::Linear(_) => (
                quote!(__t.linear(&self.#field, #ti, #to);),
                quote!(__b.linear(&self.#field, __c, (#ti, #to), __g, #base, #trainable, #need_dx);),
            ),
            LayerKind::BatchNorm(_) => {
                let s = lit(self.bns);
                self.bns += 1;
                self.bn_channels.push(c);
                (
                    quote!(__t.batchnorm(&mut self.#field, #ti, #to, #s)?;),
                    quote!(__b.batchnorm(&self.#field, __c, (#ti, #to, #s), __g, #base, #trainable, #need_dx);),
                )
            }
            LayerKind::Activation(a) => {
                let a = activation(*a);
                (
                    quote!(__t.activation(__cnn::Activation::#a, #ti, #to);),
                    quote!(__b.activation(__cnn::Activation::#a, __c, (#ti, #to));),
                )
            }
            LayerKind::Softmax => {
                let (ch, sp) = (lit(c), lit(h * w));
                (
                    quote!(__t.softmax(#ch, #sp, #ti, #to);),
                    quote!(__b.softmax(#ch, #sp, __c, (#ti, #to));),
                )
            }
            LayerKind::Pool(_) | LayerKind::GlobalPool(_) => {
                let desc = desc_ident(l);
                (
                    quote!(__t.pool2d(&#desc, #ti, #to);),
                    quote!(__b.pool2d(&#desc, __c, (#ti, #to));),
                )
            }
            LayerKind::Upsample(_) => {
                let desc = desc_ident(l);
                (
                    quote!(__t.upsample2d(&#desc, #ti, #to);),
                    quote!(__b.upsample2d(&#desc, __c, (#ti, #to));),
                )
            }
            LayerKind::Dropout(p) => {
                let (p, m) = (f32_lit(*p), lit(self.drops));
                self.drops += 1;
                self.dropout_lens.push(l.input.len());
                (
                    quote!(__t.dropout(#p, __dropout, __rng, #ti, #to, #m);),
                    quote!(__b.dropout(#p, __c, (#ti, #to, #m));),
                )
            }
            LayerKind::Flatten
            | LayerKind::Identity
            | LayerKind::Residual(_)
            | LayerKind::Concat(_) => return i,
        };
        self.fwd.push(fwd);
        self.bwd.push(bwd);
        o
    }

    /// A residual (`body(x) + shortcut(x)`) or concat block reading slot `i`.
    fn block(&mut self, l: &Planned, block: &Block, i: usize, top: Top) -> usize {
        match block {
            Block::Residual { body, shortcut } => {
                let b = self.list(body, i, Some(top));
                let s = match shortcut {
                    Some(sc) => self.list(sc, i, Some(top)),
                    None => i,
                };
                let o = self.slot(l.output.len());
                let (b, s, o) = (lit(b), lit(s), lit(o));
                self.fwd.push(quote!(__t.add(#b, #s, #o);));
                self.bwd.push(quote!(__b.add(__c, (#b, #s, #o));));
                self.slots - 1
            }
            Block::Concat(branches) => {
                let in_c = l.input.dims()[0];
                let plane = match l.output {
                    Shape::Chw { h, w, .. } => h * w,
                    Shape::Flat(_) => 1,
                };
                let parts: Vec<(usize, usize)> = branches
                    .iter()
                    .map(|b| {
                        let c = b.last().map_or(in_c, |last| last.output.dims()[0]);
                        (self.list(b, i, Some(top)), c)
                    })
                    .collect();
                let o = self.slot(l.output.len());
                let parts: Vec<TokenStream> = parts
                    .iter()
                    .map(|&(s, c)| {
                        let (s, c) = (lit(s), lit(c));
                        quote!((#s, #c))
                    })
                    .collect();
                let (plane, to) = (lit(plane), lit(o));
                self.fwd
                    .push(quote!(__t.concat(&[#(#parts),*], #plane, #to);));
                self.bwd
                    .push(quote!(__b.concat(__c, &[#(#parts),*], #plane, #to);));
                o
            }
        }
    }
}

/// The learnable tensors of one layer in `state_dict` order: name and PyTorch shape.
fn param_tensors(l: &Planned) -> Vec<(&'static str, Vec<usize>)> {
    let c_in = l.input.dims()[0];
    let mut out = Vec::new();
    match &l.layer.kind {
        LayerKind::Conv(a) => {
            let [kh, kw] = a.kernel.v;
            out.push((
                "weight",
                vec![a.c_out.v, a.c_in.v / a.groups.v.max(1), kh, kw],
            ));
            if a.bias {
                out.push(("bias", vec![a.c_out.v]));
            }
        }
        LayerKind::ConvTranspose(a, _) => {
            let [kh, kw] = a.kernel.v;
            out.push((
                "weight",
                vec![a.c_in.v, a.c_out.v / a.groups.v.max(1), kh, kw],
            ));
            if a.bias {
                out.push(("bias", vec![a.c_out.v]));
            }
        }
        LayerKind::Linear(a) => {
            out.push(("weight", vec![a.out_features.v, l.input.len()]));
            if a.bias {
                out.push(("bias", vec![a.out_features.v]));
            }
        }
        LayerKind::BatchNorm(a) if a.affine => {
            out.push(("weight", vec![c_in]));
            out.push(("bias", vec![c_in]));
        }
        _ => {}
    }
    out
}
