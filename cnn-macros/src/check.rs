//! Rules over the layer list as a whole: where `input` goes, and what each layer asks of the
//! tensor it receives. `shape::plan` applies `layer` to each layer before inferring its output,
//! and reports the first broken rule with the shapes that led to it.

use crate::args::{
    self, BatchNormArgs, ConvArgs, Layer, LayerKind, LinearArgs, PoolArgs, Sp, UpsampleArgs,
};
use crate::ast::{Item, Network};
use crate::ctxt::{Ctxt, Violation};
use crate::symbol;
use crate::tensor::Shape;

/// Decodes `input(C, H, W)` and the layers, checking where `input` stands; `None` after
/// reporting every problem.
pub fn input_and_layers(
    cx: &mut Ctxt,
    network: &Network,
    items: &[Item],
) -> Option<([Sp<usize>; 3], Vec<Layer>)> {
    let before = cx.len();
    let input = check_input_first(cx, network, items).and_then(|item| args::decode_input(cx, item));
    let mut layers = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if is_input(item) {
            check_input_once(cx, items, i);
            continue;
        }
        if let Some(layer) = args::decode(cx, item) {
            layers.push(layer);
        }
    }
    if cx.len() > before {
        return None;
    }
    Some((input?, layers))
}

fn is_input(item: &Item) -> bool {
    item.name == symbol::INPUT
}

// A network starts with `input(C, H, W)`: `struct N { conv(3 -> 8, k3) }` is missing it, and
// `struct N { relu input(3, 8, 8) }` has it after a layer.
fn check_input_first<'a>(cx: &mut Ctxt, network: &Network, items: &'a [Item]) -> Option<&'a Item> {
    match items.first() {
        Some(item) if is_input(item) => Some(item),
        Some(item) => {
            let msg = if items.iter().any(is_input) {
                "`input(C, H, W)` must come first, before any layer"
            } else {
                "missing `input(C, H, W)`; a network starts with the shape of one sample, e.g. `input(3, 32, 32)`"
            };
            cx.error_at(item.name.span(), msg);
            None
        }
        None => {
            cx.error_at(
                network.ident.span(),
                format!(
                    "network `{}` is empty; it needs `input(C, H, W)` and its layers",
                    network.ident
                ),
            );
            None
        }
    }
}

// A network has one `input`: `input(3, 8, 8) relu input(3, 8, 8)` repeats it. An `input` that
// is not first is already reported by `check_input_first`.
fn check_input_once(cx: &mut Ctxt, items: &[Item], i: usize) {
    if i > 0 && items.first().is_some_and(is_input) {
        cx.error_at(
            items[i].name.span(),
            "repeated `input`; a network has exactly one input",
        );
    }
}

/// The rules one layer's input must meet, in the order they are reported.
pub fn layer(layer: &Layer, input: Shape) -> Result<(), Violation> {
    match &layer.kind {
        LayerKind::Conv(a) => {
            check_spatial_input(layer, input)?;
            check_conv_channels(layer, a, input)?;
            check_groups(layer, a)
        }
        LayerKind::ConvTranspose(a, output_padding) => {
            check_spatial_input(layer, input)?;
            check_conv_channels(layer, a, input)?;
            check_groups(layer, a)?;
            check_output_padding(layer, a, *output_padding)
        }
        LayerKind::Upsample(a) => {
            check_spatial_input(layer, input)?;
            check_align_corners(layer, a)
        }
        LayerKind::BatchNorm(a) => {
            check_spatial_input(layer, input)?;
            check_batchnorm_channels(layer, a, input)
        }
        LayerKind::Pool(a) => {
            check_spatial_input(layer, input)?;
            check_pool_padding(layer, a)
        }
        LayerKind::GlobalPool(_) => check_spatial_input(layer, input),
        LayerKind::Linear(a) => check_linear_features(layer, a, input),
        LayerKind::Activation(_)
        | LayerKind::Softmax
        | LayerKind::Flatten
        | LayerKind::Dropout(_)
        | LayerKind::Identity
        | LayerKind::Residual(_) => Ok(()),
        // Every branch must end in a feature map; `shape::plan` checks that after the branches.
        LayerKind::Concat(_) => check_spatial_input(layer, input),
    }
}

// A flat tensor has lost its spatial layout: conv(…), bn, maxpool(…) or gap after fc(…) or
// flatten is an error.
fn check_spatial_input(layer: &Layer, input: Shape) -> Result<(), Violation> {
    match input {
        Shape::Chw { .. } => Ok(()),
        Shape::Flat(_) => {
            let name = &layer.name;
            Err(Violation::layer(format!(
                "`{name}` needs a [C, H, W] tensor, but the tensor here is already flattened to {input}; put `{name}` before the first `fc`/`flatten`"
            )))
        }
    }
}

// A convolution's IN is the channel count it receives: conv(3 -> 16, k3) conv(8 -> 8, k3) is an
// error.
fn check_conv_channels(layer: &Layer, a: &ConvArgs, input: Shape) -> Result<(), Violation> {
    if a.c_in.v == input.dims()[0] {
        return Ok(());
    }
    Err(Violation::at(
        a.c_in.span,
        format!(
            "`{}` expects {} input channels, but the tensor here is {input}",
            layer.name, a.c_in.v
        ),
    ))
}

// Grouped convolution splits both channel counts evenly: conv(6 -> 16, g4) is an error.
fn check_groups(layer: &Layer, a: &ConvArgs) -> Result<(), Violation> {
    let g = a.groups.v;
    let (what, n) = if !a.c_in.v.is_multiple_of(g) {
        ("input", a.c_in.v)
    } else if !a.c_out.v.is_multiple_of(g) {
        ("output", a.c_out.v)
    } else {
        return Ok(());
    };
    Err(Violation::at(
        a.groups.span,
        format!(
            "groups {g} does not divide the {n} {what} channels of `{}`",
            layer.name
        ),
    ))
}

// PyTorch: "output padding must be smaller than either stride or dilation":
// convtranspose(8 -> 4, k3, s2, output_padding=2) is an error, output_padding=1 is not.
fn check_output_padding(
    layer: &Layer,
    a: &ConvArgs,
    output_padding: Sp<[usize; 2]>,
) -> Result<(), Violation> {
    for axis in 0..2 {
        let (op, s, d) = (output_padding.v[axis], a.stride.v[axis], a.dilation.v[axis]);
        if op >= s.max(d) {
            let what = ["height", "width"][axis];
            return Err(Violation::at(
                output_padding.span,
                format!(
                    "`{}` output_padding {op} ({what}) must be smaller than the stride {s} or the dilation {d}; PyTorch requires output_padding < max(stride, dilation)",
                    layer.name
                ),
            ));
        }
    }
    Ok(())
}

// PyTorch: "align_corners option can only be set with the interpolating modes":
// upsample(2, align_corners=false) is an error, upsample(2, mode=bilinear, align_corners=true)
// is not.
fn check_align_corners(layer: &Layer, a: &UpsampleArgs) -> Result<(), Violation> {
    match a.align_corners {
        Some(ac) if !a.bilinear => Err(Violation::at(
            ac.span,
            format!(
                "`align_corners` needs `mode=bilinear`, but `{}` here is nearest; PyTorch sets it only for interpolating modes",
                layer.name
            ),
        )),
        _ => Ok(()),
    }
}

// Batch norm's `num_features`, when written, is the channel count it receives:
// conv(3 -> 16, k3) bn(8) is an error.
fn check_batchnorm_channels(
    layer: &Layer,
    a: &BatchNormArgs,
    input: Shape,
) -> Result<(), Violation> {
    match a.channels {
        Some(f) if f.v != input.dims()[0] => Err(Violation::at(
            f.span,
            format!(
                "`{}` expects {} features (channels), but the tensor here is {input}",
                layer.name, f.v
            ),
        )),
        _ => Ok(()),
    }
}

// PyTorch: "pad should be at most half of effective kernel size": maxpool(k3, p2) is an error.
fn check_pool_padding(layer: &Layer, a: &PoolArgs) -> Result<(), Violation> {
    for (axis, (&k, &p)) in ["height", "width"]
        .iter()
        .zip(a.kernel.v.iter().zip(&a.padding.v))
    {
        if p > k / 2 {
            return Err(Violation::at(
                a.padding.span,
                format!(
                    "`{}` padding {p} is more than half the kernel {axis} {k}; PyTorch allows at most {}",
                    layer.name,
                    k / 2
                ),
            ));
        }
    }
    Ok(())
}

// A linear layer's IN, when written, is the element count it receives, flattened:
// input(3, 8, 8) fc(100 -> 10) is an error, fc(192 -> 10) is not.
fn check_linear_features(layer: &Layer, a: &LinearArgs, input: Shape) -> Result<(), Violation> {
    let features = input.len();
    match a.in_features {
        Some(i) if i.v != features => Err(Violation::at(
            i.span,
            format!(
                "`{}` expects {} input features, but the tensor here is {input} ({features} features)",
                layer.name, i.v
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    use super::*;
    use crate::ast::Networks;

    /// The one layer of `struct N { #tokens }`, decoded.
    fn decoded(tokens: TokenStream) -> Layer {
        let networks: Networks = syn::parse2(quote!(struct N { #tokens })).unwrap();
        let items = networks.networks[0].body.as_ref().unwrap();
        let mut cx = Ctxt::new();
        let layer = args::decode(&mut cx, &items[0]);
        cx.check().unwrap();
        layer.unwrap()
    }

    fn chw(c: usize, h: usize, w: usize) -> Shape {
        Shape::Chw { c, h, w }
    }

    fn broken(tokens: TokenStream, input: Shape) -> String {
        layer(&decoded(tokens), input).unwrap_err().msg
    }

    /// The messages `input_and_layers` reports for `struct N { #tokens }`.
    fn input_errors(tokens: TokenStream) -> Vec<String> {
        let networks: Networks = syn::parse2(quote!(struct N { #tokens })).unwrap();
        let net = &networks.networks[0];
        let mut cx = Ctxt::new();
        let _ = input_and_layers(&mut cx, net, net.body.as_ref().unwrap());
        match cx.check() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    /// A layer whose arguments are wrong is left out of the list, so its neighbours' shapes would
    /// be wrong too: the network is not planned, and only the argument error is reported.
    #[test]
    fn argument_errors_stop_before_shapes() {
        let networks: Networks = syn::parse2(
            quote!(struct N { input(3, 8, 8) conv(3 -> 8, k3, zz=1) conv(8 -> 8, k3) }),
        )
        .unwrap();
        let net = &networks.networks[0];
        let mut cx = Ctxt::new();
        assert!(input_and_layers(&mut cx, net, net.body.as_ref().unwrap()).is_none());
        let errors: Vec<String> = cx
            .check()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("unknown argument `zz`"), "{errors:?}");
        let mut cx = Ctxt::new();
        let (input, layers) =
            input_and_layers(&mut cx, net, &net.body.as_ref().unwrap()[..1]).unwrap();
        assert_eq!(input.map(|d| d.v), [3, 8, 8]);
        assert!(layers.is_empty());
    }

    #[test]
    fn input_comes_first() {
        assert!(input_errors(quote!(input(3, 8, 8) relu)).is_empty());
        assert_eq!(
            input_errors(quote!(relu input(3, 8, 8))),
            ["`input(C, H, W)` must come first, before any layer"]
        );
        assert!(input_errors(quote!(relu))[0].starts_with("missing `input(C, H, W)`"));
        assert_eq!(
            input_errors(quote!()),
            ["network `N` is empty; it needs `input(C, H, W)` and its layers"]
        );
    }

    #[test]
    fn input_comes_once() {
        assert!(input_errors(quote!(input(3, 8, 8) relu relu)).is_empty());
        assert_eq!(
            input_errors(quote!(input(3, 8, 8) relu input(3, 8, 8) input(3, 8, 8))),
            [
                "repeated `input`; a network has exactly one input",
                "repeated `input`; a network has exactly one input"
            ]
        );
        assert_eq!(
            input_errors(quote!(relu input(3, 8, 8) input(3, 8, 8))),
            ["`input(C, H, W)` must come first, before any layer"]
        );
    }

    #[test]
    fn spatial_layers_need_an_unflattened_input() {
        assert!(layer(&decoded(quote!(gap)), chw(8, 4, 4)).is_ok());
        assert_eq!(
            broken(quote!(bn), Shape::Flat(10)),
            "`bn` needs a [C, H, W] tensor, but the tensor here is already flattened to [10]; put `bn` before the first `fc`/`flatten`"
        );
        assert!(broken(quote!(gap), Shape::Flat(10)).starts_with("`gap` needs a [C, H, W]"));
    }

    #[test]
    fn conv_channels_match_the_input() {
        assert!(layer(&decoded(quote!(conv(3 -> 8, k3))), chw(3, 8, 8)).is_ok());
        assert_eq!(
            broken(quote!(conv(4 -> 8, k3)), chw(3, 8, 8)),
            "`conv` expects 4 input channels, but the tensor here is [3, 8, 8]"
        );
    }

    #[test]
    fn groups_divide_both_channel_counts() {
        assert!(layer(&decoded(quote!(conv(6 -> 9, k1, g3))), chw(6, 4, 4)).is_ok());
        assert_eq!(
            broken(quote!(conv(6 -> 16, k1, g4)), chw(6, 4, 4)),
            "groups 4 does not divide the 6 input channels of `conv`"
        );
        assert_eq!(
            broken(quote!(conv(6 -> 16, k1, g3)), chw(6, 4, 4)),
            "groups 3 does not divide the 16 output channels of `conv`"
        );
    }

    #[test]
    fn convtranspose_checks_channels_groups_and_output_padding() {
        assert!(layer(
            &decoded(quote!(convtranspose(8 -> 4, k3, s2, p1, output_padding=1))),
            chw(8, 4, 4)
        )
        .is_ok());
        // dilation 2 allows output_padding 1 at stride 1, as PyTorch does
        assert!(layer(
            &decoded(quote!(convt(8 -> 4, k3, d2, output_padding=(1, 0)))),
            chw(8, 4, 4)
        )
        .is_ok());
        assert_eq!(
            broken(quote!(convt(8 -> 4, k3, s(1, 2), output_padding=(0, 2))), chw(8, 4, 4)),
            "`convt` output_padding 2 (width) must be smaller than the stride 2 or the dilation 1; PyTorch requires output_padding < max(stride, dilation)"
        );
        assert_eq!(
            broken(quote!(conv_transpose2d(4 -> 8, k3)), chw(3, 4, 4)),
            "`conv_transpose2d` expects 4 input channels, but the tensor here is [3, 4, 4]"
        );
        assert_eq!(
            broken(quote!(convtranspose(6 -> 8, k3, g4)), chw(6, 4, 4)),
            "groups 4 does not divide the 6 input channels of `convtranspose`"
        );
        assert!(broken(quote!(convtranspose(6 -> 8, k3)), Shape::Flat(6))
            .starts_with("`convtranspose` needs a [C, H, W] tensor"));
    }

    #[test]
    fn align_corners_only_with_bilinear() {
        for ok in [
            quote!(upsample(2)),
            quote!(upsample(2, mode = bilinear)),
            quote!(upsample(2, mode = bilinear, align_corners = true)),
            quote!(upsample(
                scale_factor = (2, 3),
                mode = bilinear,
                align_corners = false
            )),
        ] {
            assert!(layer(&decoded(ok.clone()), chw(1, 2, 2)).is_ok(), "{ok}");
        }
        for bad in [
            quote!(upsample(2, align_corners = false)),
            quote!(upsample(2, mode = nearest, align_corners = true)),
        ] {
            assert_eq!(
                broken(bad, chw(1, 2, 2)),
                "`align_corners` needs `mode=bilinear`, but `upsample` here is nearest; PyTorch sets it only for interpolating modes"
            );
        }
        assert!(broken(quote!(upsample(2)), Shape::Flat(4))
            .starts_with("`upsample` needs a [C, H, W] tensor"));
    }

    #[test]
    fn batchnorm_features_match_the_channels() {
        assert!(layer(&decoded(quote!(bn(16))), chw(16, 2, 2)).is_ok());
        assert!(layer(&decoded(quote!(bn)), chw(16, 2, 2)).is_ok());
        assert_eq!(
            broken(quote!(bn(8)), chw(16, 2, 2)),
            "`bn` expects 8 features (channels), but the tensor here is [16, 2, 2]"
        );
    }

    #[test]
    fn pool_padding_is_at_most_half_the_kernel() {
        assert!(layer(&decoded(quote!(maxpool(k(3, 5), p(1, 2)))), chw(1, 8, 8)).is_ok());
        assert_eq!(
            broken(quote!(avgpool(k(3, 2), p(1, 2))), chw(1, 8, 8)),
            "`avgpool` padding 2 is more than half the kernel width 2; PyTorch allows at most 1"
        );
    }

    #[test]
    fn linear_in_features_match_the_flattened_input() {
        assert!(layer(&decoded(quote!(fc(192 -> 10))), Shape::Flat(192)).is_ok());
        assert!(layer(&decoded(quote!(fc(10))), Shape::Flat(192)).is_ok());
        assert_eq!(
            broken(quote!(fc(100 -> 10)), Shape::Flat(192)),
            "`fc` expects 100 input features, but the tensor here is [192] (192 features)"
        );
    }
}
