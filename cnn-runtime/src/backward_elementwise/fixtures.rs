//! Whole-network checks against PyTorch's training quantities in `tests/data`: each network
//! is run forward in training mode with the runtime's f32 kernels (this module's batchnorm,
//! the ops' activations, pooling and upsampling) and naive f64 convolutions and linear layers,
//! then backward with this module's kernels; `train_output`, `after.<i>.running_*`, `loss` and
//! every `grad.<param>` must match PyTorch within the fixtures' tolerance rule
//! (`tests/data/README.md`).

use super::check::{fixture_bytes, tensor, tensor_f32, wide};
use super::*;
use crate::ops::activation::{activation, softmax, Activation};
use crate::ops::batchnorm::BatchNormParams;
use crate::ops::pool::{pool2d, Pool2dParams, PoolKind};
use crate::ops::upsample::{upsample2d, Upsample2dParams, UpsampleMode};
use crate::shape::out_len;

/// One layer of a fixture network, at the index its state_dict keys use.
#[derive(Debug, Clone, Copy)]
enum Layer {
    Conv(Conv),
    Bn {
        affine: bool,
        track: bool,
        eps: f32,
        momentum: f32,
    },
    Act(Activation),
    Softmax,
    Pool(PoolKind, [usize; 2], [usize; 2], [usize; 2], bool),
    Gap(PoolKind),
    Up([usize; 2], UpsampleMode),
    Flatten,
    Fc(usize, bool),
    Identity,
}

/// A convolution's geometry.
#[derive(Debug, Clone, Copy)]
struct Conv {
    co: usize,
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
    d: [usize; 2],
    g: usize,
    bias: bool,
}

/// `conv(ci -> co, k, s, p)` with bias.
fn conv(co: usize, k: usize, s: usize, p: usize) -> Layer {
    Layer::Conv(cs(co, k, s, p))
}

/// The geometry of [`conv`].
fn cs(co: usize, k: usize, s: usize, p: usize) -> Conv {
    Conv {
        co,
        k: [k, k],
        s: [s, s],
        p: [p, p],
        d: [1, 1],
        g: 1,
        bias: true,
    }
}

fn bn() -> Layer {
    Layer::Bn {
        affine: true,
        track: true,
        eps: 1e-5,
        momentum: 0.1,
    }
}

fn avg(count_include_pad: bool) -> PoolKind {
    PoolKind::Avg { count_include_pad }
}

/// What the forward keeps for the backward of one layer.
struct Kept {
    input: Vec<f32>,
    in_shape: [usize; 3],
    output: Vec<f32>,
    out_shape: [usize; 3],
    extra: Option<(Vec<f32>, Vec<f32>)>,
}

/// A naive f64 convolution of `x` `[n, ci, h, w]` (any stride, padding, dilation, groups).
#[allow(clippy::too_many_arguments)]
fn conv_index(
    [ci, h, w]: [usize; 3],
    [co, oh, ow]: [usize; 3],
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
    d: [usize; 2],
    g: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let (cig, cog) = (ci / g, co / g);
    for o in 0..co {
        let grp = o / cog;
        for y in 0..oh {
            for x in 0..ow {
                for i in 0..cig {
                    for ky in 0..k[0] {
                        let iy = (y * s[0] + ky * d[0]) as isize - p[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..k[1] {
                            let ix = (x * s[1] + kx * d[1]) as isize - p[1] as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let xi = ((grp * cig + i) * h + iy as usize) * w + ix as usize;
                            let wi = ((o * cig + i) * k[0] + ky) * k[1] + kx;
                            f((o * oh + y) * ow + x, xi, wi, o);
                        }
                    }
                }
            }
        }
    }
}

/// The fixture's tolerance rule for gradients: `rtol = 10·1e-4·max(1, L/4)`, `atol = rtol ·
/// max(max|expected|, max_all/10)`; for outputs `rtol = 1e-4·max(1, L/4)`, `atol = rtol·rms`.
#[track_caller]
fn assert_fixture(key: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{key}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{key}[{i}]: got {g}, PyTorch {w} (err {err:e}, atol {atol:e}, rtol {rtol:e})"
        );
    }
}

fn rms(v: &[f64]) -> f64 {
    (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// Runs fixture `name` (`layers` in state_dict order, `l` = its number of conv and fc
/// layers) forward and backward and compares every training quantity with PyTorch's.
fn check_network(name: &str, layers: &[Layer], l: usize) {
    let io = fixture_bytes(&format!("{name}.io.safetensors"));
    let wt = fixture_bytes(&format!("{name}.safetensors"));
    let st = safetensors::SafeTensors::deserialize(&io).unwrap();
    let keys: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    let shape = st.tensor("input").unwrap().shape().to_vec();
    let n = shape[0];
    let mut shp = [shape[1], shape[2], shape[3]];
    let mut x = tensor_f32(&io, "input");
    let param = |key: String| tensor_f32(&wt, &key);
    let mut saved: Vec<Kept> = Vec::new();
    let rtol = 1e-4 * (l as f64 / 4.0).max(1.0);
    let mut checked = Vec::new();
    // LOOP over layers: forward
    for (i, layer) in layers.iter().enumerate() {
        let [c, h, w] = shp;
        let (y, out_shape, extra) = match *layer {
            Layer::Conv(Conv {
                co,
                k,
                s,
                p,
                d,
                g,
                bias,
            }) => {
                let o = |a: usize| out_len(shp[a + 1], k[a], s[a], p[a], d[a], false).unwrap();
                let os = [co, o(0), o(1)];
                let wgt = wide(&param(format!("{i}.weight")));
                let b = if bias {
                    wide(&param(format!("{i}.bias")))
                } else {
                    vec![0.0; co]
                };
                let mut y = vec![0.0f32; n * co * os[1] * os[2]];
                for sm in 0..n {
                    let xs = &x[sm * c * h * w..(sm + 1) * c * h * w];
                    let mut acc = vec![0.0f64; co * os[1] * os[2]];
                    conv_index(shp, os, k, s, p, d, g, |oi, xi, wi, _| {
                        acc[oi] += wgt[wi] * xs[xi] as f64
                    });
                    for (j, a) in acc.iter().enumerate() {
                        y[sm * acc.len() + j] = (a + b[j / (os[1] * os[2])]) as f32;
                    }
                }
                (y, os, None)
            }
            Layer::Bn {
                affine,
                track,
                eps,
                momentum,
            } => {
                let p = BatchNormParams {
                    channels: c,
                    hw: h * w,
                    eps,
                    momentum,
                    affine,
                    track_running_stats: track,
                };
                let (wb, bb) = if affine {
                    (param(format!("{i}.weight")), param(format!("{i}.bias")))
                } else {
                    (vec![], vec![])
                };
                let (wo, bo) = if affine {
                    (Some(&wb[..]), Some(&bb[..]))
                } else {
                    (None, None)
                };
                let (mut rm, mut rv) = if track {
                    (
                        param(format!("{i}.running_mean")),
                        param(format!("{i}.running_var")),
                    )
                } else {
                    (vec![], vec![])
                };
                let running = if track {
                    Some((&mut rm[..], &mut rv[..]))
                } else {
                    None
                };
                let (mut y, mut mean, mut istd) = (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
                batchnorm_train_forward(&p, n, &x, &mut y, wo, bo, running, &mut mean, &mut istd);
                if track {
                    for (key, got) in [("running_mean", &rm), ("running_var", &rv)] {
                        let key = format!("after.{i}.{key}");
                        let want = tensor(&io, &key);
                        // After one step from the stored values: the output rule.
                        assert_fixture(&key, got, &want, rtol, rtol * rms(&want));
                        checked.push(key);
                    }
                }
                (y, shp, Some((mean, istd)))
            }
            Layer::Act(act) => {
                let mut y = x.clone();
                activation(act, &mut y);
                (y, shp, None)
            }
            Layer::Softmax => {
                let mut y = x.clone();
                softmax(n, c, h * w, &mut y);
                (y, shp, None)
            }
            Layer::Pool(kind, k, s, p, ceil) => {
                let o = |a: usize| out_len(shp[a + 1], k[a], s[a], p[a], 1, ceil).unwrap();
                let pp = Pool2dParams {
                    kind,
                    channels: c,
                    kernel: k,
                    stride: s,
                    padding: p,
                    ceil_mode: ceil,
                    in_hw: [h, w],
                    out_hw: [o(0), o(1)],
                };
                let mut y = vec![0.0; n * pp.out_len()];
                pool2d(&pp, n, &x, &mut y);
                (y, [c, o(0), o(1)], None)
            }
            Layer::Gap(kind) => {
                let pp = Pool2dParams {
                    kind,
                    channels: c,
                    kernel: [h, w],
                    stride: [h, w],
                    padding: [0, 0],
                    ceil_mode: false,
                    in_hw: [h, w],
                    out_hw: [1, 1],
                };
                let mut y = vec![0.0; n * c];
                pool2d(&pp, n, &x, &mut y);
                (y, [c, 1, 1], None)
            }
            Layer::Up(scale, mode) => {
                let pp = Upsample2dParams {
                    channels: c,
                    scale,
                    mode,
                    in_hw: [h, w],
                    out_hw: [h * scale[0], w * scale[1]],
                };
                let mut y = vec![0.0; n * pp.out_len()];
                upsample2d(&pp, n, &x, &mut y);
                (y, [c, pp.out_hw[0], pp.out_hw[1]], None)
            }
            Layer::Flatten => (x.clone(), [c * h * w, 1, 1], None),
            Layer::Identity => (x.clone(), shp, None),
            Layer::Fc(out, bias) => {
                let fin = c * h * w;
                let wgt = param(format!("{i}.weight"));
                let b = if bias {
                    param(format!("{i}.bias"))
                } else {
                    vec![0.0; out]
                };
                let mut y = vec![0.0; n * out];
                for sm in 0..n {
                    for o in 0..out {
                        let dot: f64 = (0..fin)
                            .map(|j| wgt[o * fin + j] as f64 * x[sm * fin + j] as f64)
                            .sum();
                        y[sm * out + o] = (dot + b[o] as f64) as f32;
                    }
                }
                (y, [out, 1, 1], None)
            }
        };
        saved.push(Kept {
            input: std::mem::take(&mut x),
            in_shape: shp,
            output: y.clone(),
            out_shape,
            extra,
        });
        x = y;
        shp = out_shape;
    }
    let want = tensor(&io, "train_output");
    assert_fixture("train_output", &x, &want, rtol, rtol * rms(&want));

    // The loss and its gradient w.r.t. the output.
    let mut dy = vec![0.0f32; x.len()];
    let loss = if keys.iter().any(|k| k == "target") {
        let t: Vec<usize> = tensor(&io, "target").iter().map(|&v| v as usize).collect();
        let k = x.len() / n;
        if matches!(layers.last(), Some(Layer::Softmax)) {
            nll_of_probs(n, k, &x, &t, &mut dy)
        } else {
            cross_entropy(n, k, &x, &t, None, 0.0, &mut dy)
        }
    } else {
        // mean(y²)/2 = mse(y, 0)/2, gradient y/len
        let zeros = vec![0.0; x.len()];
        let loss = mse(&x, &zeros, &mut dy) / 2.0;
        for v in &mut dy {
            *v /= 2.0;
        }
        loss
    };
    let want = tensor(&io, "loss");
    assert_fixture("loss", &[loss], &want, rtol, rtol * want[0].abs());

    // LOOP over layers: backward, collecting the parameter gradients.
    let mut grads: Vec<(String, Vec<f32>)> = Vec::new();
    for (i, layer) in layers.iter().enumerate().rev() {
        let sv = &saved[i];
        let [c, h, w] = sv.in_shape;
        let mut dx = vec![0.0f32; sv.input.len()];
        match *layer {
            Layer::Conv(Conv {
                co,
                k,
                s,
                p,
                d,
                g,
                bias,
            }) => {
                let wgt = wide(&param(format!("{i}.weight")));
                let os = sv.out_shape;
                let (mut dw, mut db) = (vec![0.0f64; wgt.len()], vec![0.0f64; co]);
                for sm in 0..n {
                    let xs = &sv.input[sm * c * h * w..(sm + 1) * c * h * w];
                    let g_out = &dy[sm * co * os[1] * os[2]..(sm + 1) * co * os[1] * os[2]];
                    let mut dxs = vec![0.0f64; c * h * w];
                    conv_index(sv.in_shape, os, k, s, p, d, g, |oi, xi, wi, _| {
                        dw[wi] += g_out[oi] as f64 * xs[xi] as f64;
                        dxs[xi] += g_out[oi] as f64 * wgt[wi];
                    });
                    for (j, &v) in g_out.iter().enumerate() {
                        db[j / (os[1] * os[2])] += v as f64;
                    }
                    for (o, v) in dx[sm * c * h * w..].iter_mut().zip(&dxs) {
                        *o = *v as f32;
                    }
                }
                grads.push((
                    format!("grad.{i}.weight"),
                    dw.iter().map(|&v| v as f32).collect(),
                ));
                if bias {
                    grads.push((
                        format!("grad.{i}.bias"),
                        db.iter().map(|&v| v as f32).collect(),
                    ));
                }
            }
            Layer::Bn {
                affine,
                track,
                eps,
                momentum,
            } => {
                let p = BatchNormParams {
                    channels: c,
                    hw: h * w,
                    eps,
                    momentum,
                    affine,
                    track_running_stats: track,
                };
                let (mean, istd) = sv.extra.as_ref().unwrap();
                let wb = if affine {
                    param(format!("{i}.weight"))
                } else {
                    vec![]
                };
                let (mut dw, mut db) = (vec![0.0; c], vec![0.0; c]);
                let (wo, dp) = if affine {
                    (Some(&wb[..]), Some((&mut dw[..], &mut db[..])))
                } else {
                    (None, None)
                };
                batchnorm_backward(&p, n, &sv.input, &dy, wo, mean, istd, &mut dx, dp);
                if affine {
                    grads.push((format!("grad.{i}.weight"), dw));
                    grads.push((format!("grad.{i}.bias"), db));
                }
            }
            Layer::Act(act) => {
                let s = match saved_for_backward(act) {
                    super::Saved::Input => &sv.input,
                    super::Saved::Output => &sv.output,
                };
                activation_backward(act, s, &dy, &mut dx);
            }
            Layer::Softmax => softmax_backward(n, c, h * w, &sv.output, &dy, &mut dx),
            Layer::Pool(kind, k, s, p, ceil) => {
                let pp = Pool2dParams {
                    kind,
                    channels: c,
                    kernel: k,
                    stride: s,
                    padding: p,
                    ceil_mode: ceil,
                    in_hw: [h, w],
                    out_hw: [sv.out_shape[1], sv.out_shape[2]],
                };
                pool2d_backward(&pp, n, &sv.input, &dy, &mut dx);
            }
            Layer::Gap(kind) => {
                let pp = Pool2dParams {
                    kind,
                    channels: c,
                    kernel: [h, w],
                    stride: [h, w],
                    padding: [0, 0],
                    ceil_mode: false,
                    in_hw: [h, w],
                    out_hw: [1, 1],
                };
                pool2d_backward(&pp, n, &sv.input, &dy, &mut dx);
            }
            Layer::Up(scale, mode) => {
                let pp = Upsample2dParams {
                    channels: c,
                    scale,
                    mode,
                    in_hw: [h, w],
                    out_hw: [sv.out_shape[1], sv.out_shape[2]],
                };
                upsample2d_backward(&pp, n, &dy, &mut dx);
            }
            Layer::Flatten | Layer::Identity => dx.copy_from_slice(&dy),
            Layer::Fc(out, bias) => {
                let fin = c * h * w;
                let wgt = param(format!("{i}.weight"));
                let mut dw = vec![0.0f32; out * fin];
                for o in 0..out {
                    for j in 0..fin {
                        dw[o * fin + j] = (0..n)
                            .map(|sm| dy[sm * out + o] as f64 * sv.input[sm * fin + j] as f64)
                            .sum::<f64>() as f32;
                    }
                }
                for sm in 0..n {
                    for j in 0..fin {
                        dx[sm * fin + j] = (0..out)
                            .map(|o| dy[sm * out + o] as f64 * wgt[o * fin + j] as f64)
                            .sum::<f64>() as f32;
                    }
                }
                grads.push((format!("grad.{i}.weight"), dw));
                if bias {
                    let db = (0..out)
                        .map(|o| (0..n).map(|sm| dy[sm * out + o] as f64).sum::<f64>() as f32)
                        .collect();
                    grads.push((format!("grad.{i}.bias"), db));
                }
            }
        }
        dy = dx;
    }
    let stored: Vec<&String> = keys.iter().filter(|k| k.starts_with("grad.")).collect();
    assert_eq!(
        stored.len(),
        grads.len(),
        "{name}: gradient keys {stored:?}"
    );
    let wants: Vec<Vec<f64>> = grads.iter().map(|(k, _)| tensor(&io, k)).collect();
    let max_all = wants.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for ((key, got), want) in grads.iter().zip(&wants) {
        let rt = 10.0 * rtol;
        let atol = rt * want.iter().fold(max_all / 10.0, |m, v| m.max(v.abs()));
        assert_fixture(key, got, want, rt, atol);
    }
}

#[test]
fn fixture_tiny_net() {
    check_network(
        "tiny_net",
        &[
            conv(16, 3, 1, 1),
            bn(),
            Layer::Act(Activation::Relu),
            Layer::Pool(PoolKind::Max, [2, 2], [2, 2], [0, 0], false),
            Layer::Flatten,
            Layer::Fc(10, true),
        ],
        2,
    );
}

/// Max and average pooling with padding, ceil_mode and count_include_pad both ways.
#[test]
fn fixture_pooling() {
    let m = PoolKind::Max;
    check_network(
        "pooling",
        &[
            Layer::Pool(m, [3, 3], [2, 2], [1, 1], true),
            conv(6, 1, 1, 0),
            Layer::Pool(avg(true), [3, 3], [2, 2], [1, 1], true),
            conv(6, 1, 1, 0),
            Layer::Pool(avg(false), [3, 3], [2, 2], [1, 1], true),
            Layer::Pool(m, [2, 2], [2, 2], [1, 1], false),
            Layer::Pool(avg(false), [2, 2], [1, 1], [1, 1], false),
            Layer::Pool(m, [2, 2], [2, 2], [0, 0], true),
        ],
        2,
    );
}

/// LeakyReLU, sigmoid, tanh, SiLU (twice), GELU between convolutions.
#[test]
fn fixture_activations() {
    let c = conv(8, 3, 1, 1);
    check_network(
        "activations",
        &[
            c,
            Layer::Act(Activation::LeakyRelu(0.2)),
            c,
            Layer::Act(Activation::Sigmoid),
            c,
            Layer::Act(Activation::Tanh),
            c,
            Layer::Act(Activation::Silu),
            c,
            Layer::Act(Activation::Silu),
            c,
            Layer::Act(Activation::LeakyRelu(0.01)),
            c,
            Layer::Act(Activation::Gelu),
        ],
        7,
    );
}

/// ReLU6, a depthwise conv, batchnorm, hardswish, hardsigmoid, global average pool, fc,
/// cross-entropy; the input has std 4 so that every kink is crossed.
#[test]
fn fixture_mobile_acts() {
    check_network(
        "mobile_acts",
        &[
            conv(8, 3, 1, 1),
            Layer::Act(Activation::Relu6),
            Layer::Conv(Conv {
                g: 8,
                ..cs(8, 3, 1, 1)
            }),
            bn(),
            Layer::Act(Activation::Hardswish),
            Layer::Identity,
            conv(16, 1, 1, 0),
            Layer::Act(Activation::Hardsigmoid),
            Layer::Gap(avg(true)),
            Layer::Flatten,
            Layer::Fc(16, true),
            Layer::Identity,
            Layer::Act(Activation::Relu6),
            Layer::Fc(10, true),
        ],
        5,
    );
}

/// Nearest and bilinear (align_corners false and true) upsampling with unequal scales.
#[test]
fn fixture_upsample_modes() {
    check_network(
        "upsample_modes",
        &[
            Layer::Up([2, 2], UpsampleMode::Nearest),
            conv(4, 3, 1, 0),
            Layer::Up([2, 3], UpsampleMode::Nearest),
            conv(4, 3, 2, 0),
            Layer::Up(
                [2, 3],
                UpsampleMode::Bilinear {
                    align_corners: false,
                },
            ),
            Layer::Act(Activation::Relu),
            conv(4, 3, 2, 0),
            Layer::Up(
                [3, 3],
                UpsampleMode::Bilinear {
                    align_corners: true,
                },
            ),
            conv(2, 1, 1, 0),
        ],
        4,
    );
}

/// Batchnorm with affine=false, track_running_stats=false, other eps and momentum.
#[test]
fn fixture_bn_variants() {
    let c = conv(8, 3, 1, 1);
    let b = |affine, track, eps, momentum| Layer::Bn {
        affine,
        track,
        eps,
        momentum,
    };
    check_network(
        "bn_variants",
        &[
            c,
            b(false, true, 1e-5, 0.1),
            Layer::Act(Activation::Relu),
            c,
            b(true, false, 1e-5, 0.1),
            Layer::Act(Activation::Tanh),
            c,
            b(true, true, 1e-3, 0.01),
            Layer::Act(Activation::Relu),
            c,
            b(false, false, 1e-3, 0.01),
            conv(6, 1, 1, 0),
            b(true, true, 1e-5, 0.3),
        ],
        5,
    );
}

/// Global average pooling after a rectangular kernel.
#[test]
fn fixture_global_pools() {
    check_network(
        "global_pools",
        &[
            Layer::Conv(Conv {
                k: [3, 2],
                ..cs(8, 3, 1, 0)
            }),
            Layer::Act(Activation::Relu),
            conv(8, 3, 1, 1),
            Layer::Gap(avg(true)),
        ],
        2,
    );
}

/// Softmax over the channels of a feature map.
#[test]
fn fixture_softmax_channels() {
    check_network(
        "softmax_channels",
        &[
            Layer::Conv(Conv {
                k: [3, 2],
                bias: false,
                ..cs(5, 3, 1, 0)
            }),
            Layer::Softmax,
        ],
        1,
    );
}

/// A classifier ending in softmax: NLL of the probabilities, dropout as the identity.
#[test]
fn fixture_mlp_softmax() {
    check_network(
        "mlp_softmax",
        &[
            Layer::Flatten,
            Layer::Identity,
            Layer::Fc(32, false),
            Layer::Act(Activation::Sigmoid),
            Layer::Fc(16, true),
            Layer::Act(Activation::Tanh),
            Layer::Fc(16, false),
            Layer::Act(Activation::Relu),
            Layer::Identity,
            Layer::Fc(10, true),
            Layer::Softmax,
        ],
        4,
    );
}

/// Grouped and depthwise convolutions, batchnorm, SiLU, a global max pool.
#[test]
fn fixture_groups_depthwise() {
    check_network(
        "groups_depthwise",
        &[
            Layer::Conv(Conv {
                g: 4,
                ..cs(16, 3, 1, 1)
            }),
            Layer::Act(Activation::Relu),
            Layer::Conv(Conv {
                g: 16,
                bias: false,
                ..cs(16, 3, 2, 1)
            }),
            bn(),
            Layer::Act(Activation::Relu),
            conv(32, 1, 1, 0),
            Layer::Act(Activation::Silu),
            Layer::Conv(Conv {
                g: 32,
                ..cs(64, 3, 1, 0)
            }),
            Layer::Gap(PoolKind::Max),
            Layer::Flatten,
            Layer::Fc(10, false),
        ],
        5,
    );
}

/// A ceil_mode max pool with padding, then an average pool with count_include_pad, a global
/// average pool, rectangular and dilated grouped convolutions, LeakyReLU(0.2).
#[test]
fn fixture_conv_keywords() {
    check_network(
        "conv_keywords",
        &[
            Layer::Conv(Conv {
                bias: false,
                ..cs(8, 3, 1, 1)
            }),
            bn(),
            Layer::Act(Activation::LeakyRelu(0.2)),
            Layer::Conv(Conv {
                k: [3, 1],
                s: [2, 1],
                p: [1, 0],
                g: 2,
                ..cs(12, 3, 1, 0)
            }),
            Layer::Act(Activation::Relu),
            Layer::Conv(Conv {
                k: [1, 3],
                d: [1, 2],
                p: [0, 2],
                g: 3,
                ..cs(12, 3, 1, 0)
            }),
            Layer::Pool(PoolKind::Max, [3, 3], [2, 2], [1, 1], true),
            Layer::Pool(avg(true), [2, 2], [1, 1], [1, 1], false),
            Layer::Gap(avg(true)),
            Layer::Flatten,
            Layer::Fc(6, false),
        ],
        4,
    );
}

/// Tanh and average pools of LeNet-5, a cross-entropy classifier.
#[test]
fn fixture_lenet5() {
    let t = Layer::Act(Activation::Tanh);
    let pool = Layer::Pool(avg(true), [2, 2], [2, 2], [0, 0], false);
    check_network(
        "lenet5",
        &[
            conv(6, 5, 1, 2),
            t,
            pool,
            conv(16, 5, 1, 0),
            t,
            pool,
            Layer::Flatten,
            Layer::Fc(120, true),
            t,
            Layer::Fc(84, true),
            t,
            Layer::Fc(10, true),
        ],
        5,
    );
}

/// Five conv–bn–relu stages with max pools, dropout as the identity (as the fixture's train
/// mode), two fc layers.
#[test]
fn fixture_vgg_cifar() {
    let relu = Layer::Act(Activation::Relu);
    let pool = Layer::Pool(PoolKind::Max, [2, 2], [2, 2], [0, 0], false);
    check_network(
        "vgg_cifar",
        &[
            conv(16, 3, 1, 1),
            bn(),
            relu,
            conv(16, 3, 1, 1),
            bn(),
            relu,
            pool,
            conv(32, 3, 1, 1),
            bn(),
            relu,
            conv(32, 3, 1, 1),
            bn(),
            relu,
            pool,
            conv(64, 3, 1, 1),
            bn(),
            relu,
            pool,
            Layer::Identity,
            Layer::Flatten,
            Layer::Fc(64, true),
            relu,
            Layer::Identity,
            Layer::Fc(10, true),
        ],
        7,
    );
}
