//! Drives the pipeline on `proc_macro2` tokens, without a compiler in the loop.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::Networks;
use crate::pipeline;
use crate::shape::Plan;
use crate::tensor::Shape;

fn plans(tokens: TokenStream) -> Vec<syn::Result<Plan>> {
    let networks: Networks = syn::parse2(tokens).expect("shell parses");
    networks.networks.iter().map(pipeline::plan).collect()
}

fn plan(tokens: TokenStream) -> syn::Result<Plan> {
    plans(tokens).remove(0)
}

fn shapes(plan: &Plan) -> Vec<(usize, String, Vec<usize>)> {
    plan.layers
        .iter()
        .map(|l| (l.index, l.layer.name.to_string(), l.output.dims()))
        .collect()
}

fn message(tokens: TokenStream) -> String {
    match plan(tokens) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(" | "),
    }
}

#[test]
fn tiny_net_has_an_implicit_flatten_at_index_4() {
    let p = plan(quote! {
        pub struct TinyNet { input(3, 32, 32) conv(3 -> 16, k3, p1) bn relu maxpool(2) fc(10) }
    })
    .unwrap();
    assert_eq!(
        shapes(&p),
        [
            (0, "conv".into(), vec![16, 32, 32]),
            (1, "bn".into(), vec![16, 32, 32]),
            (2, "relu".into(), vec![16, 32, 32]),
            (3, "maxpool".into(), vec![16, 16, 16]),
            (4, "flatten".into(), vec![4096]),
            (5, "fc".into(), vec![10]),
        ]
    );
    assert_eq!(
        p.layers.iter().map(|l| l.params).sum::<usize>(),
        448 + 32 + 40970
    );
}

#[test]
fn identity_and_hard_activations_keep_any_shape_and_take_an_index() {
    let p = plan(quote! {
        struct N {
            input(3, 8, 8) relu6 identity hardswish hard_swish hardsigmoid hard_sigmoid fc(5)
            identity relu6 hardswish hardsigmoid identity
        }
    })
    .unwrap();
    let shapes = shapes(&p);
    assert_eq!(shapes.len(), 13);
    for (i, (index, name, dims)) in shapes.iter().enumerate() {
        assert_eq!(*index, i, "{name}");
        let want = match i {
            0..=5 => vec![3, 8, 8],
            6 => vec![192],
            _ => vec![5],
        };
        assert_eq!(*dims, want, "{i}: {name}");
    }
    assert_eq!(shapes[6].1, "flatten");
}

#[test]
fn identity_generates_no_call_and_the_twins_are_pytorch_modules() {
    let expand = |tokens: TokenStream| {
        let networks: Networks = syn::parse2(tokens).unwrap();
        pipeline::expand(&networks).to_string()
    };
    let with = expand(quote! {
        struct N { input(3, 8, 8) identity relu6 identity hardswish hardsigmoid identity }
    });
    let without = expand(quote! {
        struct N { input(3, 8, 8) relu6 hardswish hardsigmoid }
    });
    assert_eq!(
        with.matches("__exec .").count(),
        without.matches("__exec .").count()
    );
    for call in ["Relu6", "Hardswish", "Hardsigmoid"] {
        let call = format!("__exec . activation (__cnn :: Activation :: {call})");
        assert!(with.contains(&call), "{call} not in {with}");
    }
    for twin in [
        r"nn.Sequential(\n    nn.Identity(),\n    nn.ReLU6(),\n    nn.Identity(),\n",
        r"    nn.Hardswish(),\n    nn.Hardsigmoid(),\n    nn.Identity(),\n)",
    ] {
        assert!(with.contains(twin), "{twin} not in {with}");
    }
}

#[test]
fn geometry_follows_pytorch() {
    // conv_geometry fixture: PyTorch gives [8,10,12] [8,5,12] [6,5,12] [4,5,5].
    let p = plan(quote! {
        struct G {
            input(3, 20, 24) conv(3 -> 8, k3, s2, p1) relu conv(8 -> 8, k(3,5), s(2,1), p(1,2)) tanh
            conv(8 -> 6, k3, d2, p2) sigmoid conv(6 -> 4, k(2,3), s(1,2), p(1,0), d(2,1))
        }
    })
    .unwrap();
    assert_eq!(p.output(), Shape::Chw { c: 4, h: 5, w: 5 });
    // pooling fixture: [3,37,35] through ceil-mode pools to [6,3,3].
    let p = plan(quote! {
        struct P {
            input(3, 37, 35) maxpool(k3, s2, p1, ceil) conv(3 -> 6, k1) avgpool(k3, s2, p1, ceil)
            conv(6 -> 6, k1) avgpool(k3, s2, p1, ceil, count_include_pad=false) maxpool(k2, p1)
            avgpool(k2, s1, p1, count_include_pad=false) maxpool(k2, s2, ceil)
        }
    })
    .unwrap();
    assert_eq!(p.output(), Shape::Chw { c: 6, h: 3, w: 3 });
}

#[test]
fn every_bad_argument_is_reported_at_once() {
    let msg = message(quote! {
        struct N {
            input(3, 8, 8) conv(3 -> 4, k3, strid=2, k5) bn(eps=0) relu(1) maxpol relu6(3)
            hardswish(inplace=true) identity(1)
        }
    });
    for part in [
        "unknown argument `strid` for `conv`; did you mean `stride`?",
        "duplicate argument `kernel_size`",
        "`eps` must be positive, found 0",
        "`relu` takes no arguments, found `1`",
        "`relu6` takes no arguments, found `3`",
        "`hardswish` takes no arguments, found `inplace`",
        "`identity` takes no arguments, found `1`",
        "unknown layer `maxpol`; did you mean `maxpool`?",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg:?}");
    }
}

#[test]
fn each_duplicate_is_reported_once() {
    for (layer, want) in [
        (
            quote!(conv(3 -> 4, k3, stride=1, s2)),
            "duplicate argument `stride`",
        ),
        (
            quote!(conv(3 -> 4, k3, k(3, 3), kernel_size=3)),
            "duplicate argument `kernel_size` | duplicate argument `kernel_size`",
        ),
        (
            quote!(conv(3 -> 4, 3 -> 4, k3)),
            "duplicate `IN -> OUT` argument",
        ),
        (
            quote!(conv(3 -> 4, k3, nobias, bias=true)),
            "duplicate argument `bias`",
        ),
        (
            quote!(maxpool(2, ceil, ceil_mode = false)),
            "duplicate argument `ceil_mode`",
        ),
        (
            quote!(fc(48 -> 10, out_features=10)),
            "duplicate argument `out_features`",
        ),
        (
            quote!(fc(48 -> 10, in_features=48)),
            "duplicate argument `in_features`",
        ),
        (
            quote!(fc(48 -> 10, in_features=48, out_features=10)),
            "duplicate argument `out_features`",
        ),
        (
            quote!(fc(10, out_features = 10)),
            "duplicate argument `out_features`",
        ),
    ] {
        assert_eq!(
            message(quote!(struct N { input(3, 4, 4) #layer })),
            want,
            "{layer}"
        );
    }
}

#[test]
fn networks_are_checked_independently() {
    let all = plans(quote! {
        struct A { input(3, 8, 8) conv(4 -> 4, k3) }
        struct B { input(3, 8, 8) conv(3 -> 4, k3) fc(2) }
        struct C { input(3, 8, 8) conv(3 -> 4, k99) }
    });
    assert!(all[0].is_err() && all[1].is_ok() && all[2].is_err());
}

#[test]
fn shape_errors_carry_the_trail() {
    let msg = message(quote! {
        struct N { input(3, 32, 32) conv(3 -> 16, k3, p1) maxpool(2) conv(8 -> 8, k3) }
    });
    assert!(msg.contains("`conv` expects 8 input channels, but the tensor here is [16, 16, 16]"));
    assert!(msg.contains("shapes: [3, 32, 32] -> conv -> [16, 32, 32] -> maxpool -> [16, 16, 16]"));
}

#[test]
fn convtranspose_and_upsample_follow_pytorch() {
    // convtranspose_geometry and upsample_modes fixtures: PyTorch's shapes.
    let p = plan(quote! {
        struct T {
            input(4, 5, 6) convtranspose(4 -> 8, k3, s2, p1, output_padding=1) bn relu
            convt(8 -> 6, k(3,2), s(2,3), p(1,0), output_padding=(0,2), g2, nobias) tanh
            conv_transpose2d(6 -> 4, kernel_size=(2, 3), dilation=(2, 1), padding=(1, 1), output_padding=(1, 0), stride=1)
            conv(4 -> 4, k3) convtranspose(4 -> 3, k1)
        }
    })
    .unwrap();
    let out: Vec<Vec<usize>> = p.layers.iter().map(|l| l.output.dims()).collect();
    assert_eq!(out[0], [8, 10, 12]);
    assert_eq!(out[3], [6, 19, 37]);
    assert_eq!(out[5], [4, 20, 37]);
    assert_eq!(p.output(), Shape::Chw { c: 3, h: 18, w: 35 });
    // weight [IN, OUT/g, KH, KW] plus bias; MACs = input elements · OUT/g·KH·KW
    assert_eq!(
        (p.layers[0].params, p.layers[0].macs),
        (4 * 8 * 9 + 8, 4 * 30 * 8 * 9)
    );
    assert_eq!(
        (p.layers[3].params, p.layers[3].macs),
        (8 * 3 * 6, 8 * 120 * 3 * 6)
    );
    let p = plan(quote! {
        struct U {
            input(3, 5, 4) upsample(2) conv(3 -> 4, k3) upsample(scale_factor=(2, 3), mode=nearest)
            conv(4 -> 4, k3, s2) upsample(scale_factor=(2, 3), mode=bilinear) relu
            conv(4 -> 4, k3, s2) upsample(3, mode=bilinear, align_corners=true) conv(4 -> 2, k1)
            upsample((1, 2), bilinear)
        }
    })
    .unwrap();
    assert_eq!(p.layers[0].output.dims(), [3, 10, 8]);
    assert_eq!(p.layers[2].output.dims(), [4, 16, 18]);
    assert_eq!(p.layers[0].params + p.layers[0].macs, 0);
    assert_eq!(p.output(), Shape::Chw { c: 2, h: 18, w: 66 });
}

#[test]
fn convtranspose_and_upsample_spellings_agree() {
    let twins = |tokens: TokenStream| -> Vec<String> {
        let networks: Networks = syn::parse2(tokens).unwrap();
        let p = pipeline::plan(&networks.networks[0]).unwrap();
        let out = pipeline::expand(&networks).to_string();
        assert!(!out.contains("compile_error"), "{out}");
        let torch = out[out.find("nn.Sequential").unwrap()..]
            .split('"')
            .next()
            .unwrap();
        let mut all: Vec<String> = p
            .layers
            .iter()
            .map(|l| format!("{:?}", l.output.dims()))
            .collect();
        all.push(torch.to_string());
        all
    };
    // positional in PyTorch's order: kernel, stride, padding, output_padding, groups, bias, dilation
    let positional = twins(quote! {
        struct N { input(4, 5, 6) convt(4 -> 4, 3, 2, 1, 1, 2, false, 1) upsample(2, bilinear, align_corners=true) }
    });
    let keywords = twins(quote! {
        struct N {
            input(4, 5, 6)
            conv_transpose2d(4 -> 4, kernel_size=3, stride=2, padding=1, output_padding=1, groups=2, bias=false, dilation=1)
            upsample(scale_factor=(2, 2), mode="bilinear", align_corners=true)
        }
    });
    let shorthand = twins(quote! {
        struct N {
            input(4, 5, 6) convtranspose(4 -> 4, k3, s2, p1, output_padding=(1, 1), g2, nobias, d1)
            upsample(scale_factor=2, mode=bilinear, align_corners)
        }
    });
    assert_eq!(positional, keywords);
    assert_eq!(positional, shorthand);
    assert_eq!(positional[0], "[4, 10, 12]");
    assert_eq!(positional[1], "[4, 20, 24]");
}

#[test]
fn convtranspose_and_upsample_twins_and_calls() {
    let networks: Networks = syn::parse2(quote! {
        struct N {
            input(4, 5, 6) convt(4 -> 8, k(3, 2), s2, p1, output_padding=(1, 0), g2, nobias, d(1, 2)) bn relu
            upsample(2) upsample((2, 3), mode=bilinear) upsample(scale_factor=3, mode=bilinear, align_corners=true)
            convtranspose(8 -> 2, k1)
        }
    })
    .unwrap();
    let out = pipeline::expand(&networks).to_string();
    for want in [
        r"nn.ConvTranspose2d(4, 8, kernel_size=(3, 2), stride=(2, 2), padding=(1, 1), output_padding=(1, 0), groups=2, bias=False, dilation=(1, 2))",
        r"nn.Upsample(scale_factor=2.0, mode='nearest')",
        r"nn.Upsample(scale_factor=(2.0, 3.0), mode='bilinear', align_corners=False)",
        r"nn.Upsample(scale_factor=3.0, mode='bilinear', align_corners=True)",
        r"nn.ConvTranspose2d(8, 2, kernel_size=(1, 1), stride=(1, 1))",
        "__exec . conv_transpose2d_fused (& self . layer_0 , :: core :: option :: Option :: Some (& self . layer_1) , :: core :: option :: Option :: Some (__cnn :: Activation :: Relu)) ?",
        "__exec . conv_transpose2d (& self . layer_6)",
        "__exec . upsample2d (& __PARAMS_3)",
        "__cnn :: UpsampleMode :: Bilinear { align_corners : true }",
        "__cnn :: UpsampleMode :: Nearest",
        "__PARAMS_0 . scratch_len ()",
    ] {
        assert!(out.contains(want), "{want} not in {out}");
    }
}

/// A `conv` chain (with or without its `bn` and activation) followed by a windowed pool is one
/// `conv2d_pool` call; a `convtranspose` before a pool, a global pool, and a pool after
/// another layer stay separate calls.
#[test]
fn a_pool_after_a_convolution_is_one_call() {
    let networks: Networks = syn::parse2(quote! {
        struct N {
            input(3, 16, 16)
            conv(3 -> 8, k3, p1) bn relu maxpool(2)
            conv(8 -> 8, k3, p1) avgpool(k2, s2)
            convt(8 -> 4, k1) maxpool(2)
            relu maxpool(2)
            conv(4 -> 4, k1) relu gap
        }
    })
    .unwrap();
    let out = pipeline::expand(&networks).to_string();
    let none = ":: core :: option :: Option :: None";
    for want in [
        "__exec . conv2d_pool (& self . layer_0 , :: core :: option :: Option :: Some (& self . layer_1) , :: core :: option :: Option :: Some (__cnn :: Activation :: Relu) , & __PARAMS_3) ?".to_string(),
        format!("__exec . conv2d_pool (& self . layer_4 , {none} , {none} , & __PARAMS_5) ?"),
        "__exec . conv_transpose2d (& self . layer_6) ; __exec . pool2d (& __PARAMS_7) ;".to_string(),
        "__exec . activation (__cnn :: Activation :: Relu) ; __exec . pool2d (& __PARAMS_9) ;".to_string(),
        format!("__exec . conv2d_fused (& self . layer_10 , {none} , :: core :: option :: Option :: Some (__cnn :: Activation :: Relu)) ? ; __exec . pool2d (& __PARAMS_12) ;"),
    ] {
        assert!(out.contains(&want), "{want} not in {out}");
    }
    assert_eq!(out.matches("conv2d_pool").count(), 2, "{out}");
    for fused in [
        "__exec . pool2d (& __PARAMS_3)",
        "__exec . pool2d (& __PARAMS_5)",
    ] {
        assert!(!out.contains(fused), "{fused} in {out}");
    }
}

#[test]
fn absurd_numbers_are_errors_not_overflows() {
    let max = usize::MAX;
    for tokens in [
        quote!(struct N { input(#max, #max, #max) relu }),
        quote!(struct N { input(1, 1, 1) conv(1 -> #max, k1) conv(#max -> #max, k1) }),
        quote!(struct N { input(3, 8, 8) conv(3 -> 4, k(#max, 1), d(#max, 1), p(#max, 0)) }),
        quote!(struct N { input(3, 8, 8) maxpool(k99999999999999999999) }),
        quote!(struct N { input(3, 8, 8) fc(#max) fc(#max) }),
        quote!(struct N { input(4194304, 4194304, 4194304) relu }),
        quote!(struct N { input(3, 8, 8) bn(eps = 1e300) }),
        quote!(struct N { input(3, 8, 8) dropout(-0.5) }),
        quote!(struct N { input(3, 8, 8) upsample(#max) }),
        quote!(struct N { input(3, 8, 8) upsample((2, #max)) upsample(#max) }),
        quote!(struct N { input(3, 8, 8) convt(3 -> 4, k(#max, 1), s(#max, 1), d(#max, 1)) }),
        quote!(struct N { input(3, 8, 8) convt(3 -> 4, k1, s(#max, 1), output_padding=(#max, 0)) }),
        quote!(struct N { input(3, 8, 8) convt(3 -> 4, k2, p(#max, 0)) }),
        quote!(struct N { input(1, 1, 1) convt(1 -> #max, k1) convt(#max -> #max, k1) }),
    ] {
        assert!(plan(tokens).is_err());
    }
}

#[test]
fn thousands_of_layers_plan_without_trouble() {
    let relus = std::iter::repeat_n(quote!(relu), 5000);
    let p = plan(quote!(struct N { input(1, 2, 2) #(#relus)* fc(3) })).unwrap();
    assert_eq!(p.layers.len(), 5002);
}

/// Random token soup from the DSL's own vocabulary: parsing and planning return `Ok` or `Err`,
/// never panic.
#[test]
fn junk_never_panics() {
    let words: Vec<TokenStream> = vec![
        quote!(input),
        quote!(conv),
        quote!(bn),
        quote!(relu),
        quote!(fc),
        quote!(maxpool),
        quote!(avgpool),
        quote!(gap),
        quote!(flatten),
        quote!(softmax),
        quote!(dropout),
        quote!(k3),
        quote!(s0),
        quote!(p99999999999999999999),
        quote!(g2),
        quote!(nobias),
        quote!(ceil),
        quote!(->),
        quote!(=),
        quote!(,),
        quote!(-),
        quote!(0),
        quote!(1),
        quote!(3),
        quote!(18446744073709551615),
        quote!(99999999999999999999999),
        quote!(0.5),
        quote!(1e309),
        quote!(-2.5),
        quote!(true),
        quote!(False),
        quote!("str"),
        quote!('c'),
        quote!(b"bytes"),
        quote!(kernel_size),
        quote!(stride),
        quote!(padding),
        quote!(eps),
        quote!(struct),
        quote!(pub),
        quote!(#[doc = "x"]),
        quote!(;),
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for case in 0..3000 {
        let len = next(24);
        let mut body = TokenStream::new();
        for _ in 0..len {
            match next(8) {
                0 => {
                    let inner: TokenStream = (0..next(6))
                        .map(|_| words[next(words.len())].clone())
                        .collect();
                    body.extend(quote!((#inner)));
                }
                _ => body.extend(words[next(words.len())].clone()),
            }
        }
        let prefix = if case % 3 == 0 {
            quote!(input(3, 8, 8))
        } else {
            quote!()
        };
        let tokens = quote!(struct N { #prefix #body });
        let result = std::panic::catch_unwind(|| {
            if let Ok(networks) = syn::parse2::<Networks>(tokens.clone()) {
                let _ = pipeline::expand(&networks);
            }
        });
        assert!(result.is_ok(), "panicked on {tokens}");
        let raw = std::panic::catch_unwind(|| {
            let _ = syn::parse2::<Networks>(body.clone()).map(|n| pipeline::expand(&n));
        });
        assert!(raw.is_ok(), "panicked on {body}");
    }
}

#[test]
fn each_layer_descriptor_is_emitted_once() {
    let networks: Networks = syn::parse2(quote! {
        struct N { input(3, 8, 8) conv(3 -> 4, k3) bn relu conv(4 -> 4, k1) maxpool(2) fc(10) }
    })
    .unwrap();
    let out = pipeline::expand(&networks).to_string();
    for (ty, n) in [
        ("Conv2dParams {", 2),
        ("BatchNormParams {", 1),
        ("Pool2dParams {", 1),
        ("LinearParams {", 1),
    ] {
        assert_eq!(out.matches(ty).count(), n, "{ty}");
    }
    // The definition, `from_safetensors`, `seeded`, and the training layout's forward and
    // backward scratch (the workspace is literals, computed by `budget`).
    assert_eq!(out.matches("__PARAMS_0 ").count(), 4);
    assert_eq!(out.matches("__PARAMS_0)").count(), 1);
}

/// Every layer at every depth: (key, depth, name, output dims).
fn keys(plan: &Plan) -> Vec<(String, usize, String, Vec<usize>)> {
    plan.all()
        .into_iter()
        .map(|l| {
            (
                l.key.clone(),
                l.depth,
                l.layer.name.to_string(),
                l.output.dims(),
            )
        })
        .collect()
}

#[test]
fn residual_blocks_plan_both_paths_with_nested_keys() {
    let p = plan(quote! {
        struct N {
            input(64, 8, 8)
            residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu
            residual(shortcut { conv(64 -> 128, k1, s2, nobias) bn }) {
                conv(64 -> 128, k3, s2, p1, nobias) bn relu conv(128 -> 128, k3, p1, nobias) bn
            } relu
            gap fc(10)
        }
    })
    .unwrap();
    let k = keys(&p);
    let want: Vec<(&str, usize, &str, Vec<usize>)> = vec![
        ("0", 0, "residual", vec![64, 8, 8]),
        ("0.body.0", 1, "conv", vec![64, 8, 8]),
        ("0.body.1", 1, "bn", vec![64, 8, 8]),
        ("0.body.2", 1, "relu", vec![64, 8, 8]),
        ("0.body.3", 1, "conv", vec![64, 8, 8]),
        ("0.body.4", 1, "bn", vec![64, 8, 8]),
        ("1", 0, "relu", vec![64, 8, 8]),
        ("2", 0, "residual", vec![128, 4, 4]),
        ("2.body.0", 1, "conv", vec![128, 4, 4]),
        ("2.body.1", 1, "bn", vec![128, 4, 4]),
        ("2.body.2", 1, "relu", vec![128, 4, 4]),
        ("2.body.3", 1, "conv", vec![128, 4, 4]),
        ("2.body.4", 1, "bn", vec![128, 4, 4]),
        ("2.shortcut.0", 1, "conv", vec![128, 4, 4]),
        ("2.shortcut.1", 1, "bn", vec![128, 4, 4]),
        ("3", 0, "relu", vec![128, 4, 4]),
        ("4", 0, "gap", vec![128, 1, 1]),
        ("5", 0, "flatten", vec![128]),
        ("6", 0, "fc", vec![10]),
    ];
    let got: Vec<(&str, usize, &str, Vec<usize>)> = k
        .iter()
        .map(|(a, d, n, s)| (a.as_str(), *d, n.as_str(), s.clone()))
        .collect();
    assert_eq!(got, want);
    let heads: Vec<&str> = [0, 2].map(|i| p.layers[i].layer.dsl.as_str()).to_vec();
    assert_eq!(heads, ["residual { … }", "residual(shortcut { … }) { … }"]);
    // A block's parameters and MACs are its layers'; the network's are the top level's sum.
    let bn = |c: usize| 2 * c;
    let block0 = 2 * (64 * 64 * 9 + bn(64));
    let block2 = 64 * 128 * 9 + bn(128) + 128 * 128 * 9 + bn(128) + 64 * 128 + bn(128);
    assert_eq!(p.layers[0].params, block0);
    assert_eq!(p.layers[2].params, block2);
    assert_eq!(
        p.layers.iter().map(|l| l.params).sum::<usize>(),
        block0 + block2 + 128 * 10 + 10
    );
    let macs2 = (64 * 9 + 128 * 9 + 64) * 128 * 16;
    assert_eq!(p.layers[2].macs, macs2);
}

#[test]
fn concat_blocks_sum_channels_and_key_their_branches() {
    let p = plan(quote! {
        struct N {
            input(8, 6, 6)
            concat {
                branch { conv(8 -> 3, k1) }
                branch { maxpool(k3, s1, p1) conv(8 -> 5, k1) fc(4) }
                branch {}
            }
        }
    });
    // The fc branch ends flat: an error naming every branch's end.
    let msg = match p {
        Ok(_) => panic!("a flat branch must be rejected"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("branch 1: [4]"), "{msg}");
    let p = plan(quote! {
        struct N {
            input(8, 6, 6)
            concat {
                branch { conv(8 -> 3, k1) }
                branch { maxpool(k3, s1, p1) conv(8 -> 5, k1) concat { branch {} branch { identity } } }
                branch {}
            }
            fc(2)
        }
    })
    .unwrap();
    assert_eq!(p.layers[0].layer.dsl, "concat { 3 branches }");
    let k = keys(&p);
    let names: Vec<(&str, usize, Vec<usize>)> = k
        .iter()
        .map(|(a, d, _, s)| (a.as_str(), *d, s.clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("0", 0, vec![21, 6, 6]),
            ("0.branches.0.0", 1, vec![3, 6, 6]),
            ("0.branches.1.0", 1, vec![8, 6, 6]),
            ("0.branches.1.1", 1, vec![5, 6, 6]),
            ("0.branches.1.2", 1, vec![10, 6, 6]),
            ("0.branches.1.2.branches.1.0", 2, vec![5, 6, 6]),
            ("1", 0, vec![756]),
            ("2", 0, vec![2]),
        ]
    );
}

#[test]
fn the_implicit_flatten_applies_inside_a_block() {
    let p = plan(quote! {
        struct N { input(2, 3, 3) fc(18) residual { fc(18) relu fc(18) } }
    })
    .unwrap();
    let k = keys(&p);
    let got: Vec<(&str, &str)> = k
        .iter()
        .map(|(a, _, n, _)| (a.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("0", "flatten"),
            ("1", "fc"),
            ("2", "residual"),
            ("2.body.0", "fc"),
            ("2.body.1", "relu"),
            ("2.body.2", "fc"),
        ]
    );
    // In a block whose input is a feature map, the flatten is the block's first module.
    let p = plan(quote! {
        struct N { input(2, 3, 3) concat { branch { conv(2 -> 2, k1) } } residual(shortcut { fc(4) }) { fc(4) } }
    })
    .unwrap();
    let k = keys(&p);
    assert_eq!(k[3].0, "1.body.0");
    assert_eq!(k[3].2, "flatten");
    assert_eq!(k[5].0, "1.shortcut.0");
    assert_eq!(k[5].2, "flatten");
}

#[test]
fn block_errors_name_the_paths_and_their_shapes() {
    let m = message(quote! {
        struct N { input(16, 8, 8) residual { conv(16 -> 32, k3, p1) } }
    });
    assert!(m.contains("the body ends in [32, 8, 8]"), "{m}");
    assert!(
        m.contains("identity shortcut passes the block's input [16, 8, 8]"),
        "{m}"
    );
    let m = message(quote! {
        struct N { input(16, 8, 8) residual(shortcut { conv(16 -> 32, k1) }) { conv(16 -> 32, k3, s2, p1) } }
    });
    assert!(
        m.contains("[16, 8, 8] -> conv -> [32, 4, 4]")
            && m.contains("the shortcut ends in [32, 8, 8]"),
        "{m}"
    );
    let m = message(quote! {
        struct N { input(8, 16, 16) concat { branch { conv(8 -> 4, k1) } branch { maxpool(2) } } }
    });
    assert!(m.contains("expected 16×16 (branch 0), found 8×8"), "{m}");
    assert!(
        m.contains("branch 0: [4, 16, 16], branch 1: [8, 8, 8]"),
        "{m}"
    );
    let m = message(quote! {
        struct N { input(8, 4, 4) residual { conv(8 -> 8, k1) conv(9 -> 8, k1) } }
    });
    assert!(m.contains("residual body { conv -> [8, 4, 4]"), "{m}");
    for (tokens, want) in [
        (
            quote!(struct N { input(8, 4, 4) residual {} }),
            "empty residual body",
        ),
        (
            quote!(struct N { input(8, 4, 4) concat {} }),
            "empty `concat {}`",
        ),
        (
            quote!(struct N { input(8, 4, 4) branch { relu } }),
            "goes inside `concat",
        ),
        (
            quote!(struct N { input(8, 4, 4) concat { relu } }),
            "holds `branch { … }` entries only",
        ),
        (
            quote!(struct N { input(8, 4, 4) residual relu }),
            "needs a body in braces",
        ),
        (
            quote!(struct N { input(8, 4, 4) relu { relu } }),
            "takes no `{ … }` body",
        ),
        (
            quote!(struct N { input(8, 4, 4) residual { input(8, 4, 4) } }),
            "not inside a block",
        ),
        (
            quote!(struct N { input(8, 4, 4) residual(shortcut {}) { relu } }),
            "empty `shortcut {}`",
        ),
        (
            quote!(struct N { input(8, 4, 4) residual(2) { relu } }),
            "one optional argument",
        ),
        (
            quote!(struct N { input(8, 4, 4) concat(2) { branch {} } }),
            "`concat` takes no arguments",
        ),
        (
            quote!(struct N { input(8, 4, 4) concat(shortcut { relu }) { branch {} } }),
            "`concat` takes no arguments",
        ),
        (
            quote!(struct N { input(8, 4, 4) residual(skip { relu }) { relu } }),
            "one optional argument",
        ),
        (
            quote!(struct N { input(8, 4, 4) concat { branch(2) {} } }),
            "`branch` takes no arguments",
        ),
        (
            quote!(struct N { input(8, 4, 4) concat { branch } }),
            "`branch` needs a body",
        ),
        (
            quote!(struct N { input(8, 4, 4) conv(8 -> 8, k1, shortcut { relu }) }),
            "takes no `shortcut { … }` argument",
        ),
        (
            quote!(struct N { input(8, 4, 4) fc(3) concat { branch {} } }),
            "already flattened",
        ),
    ] {
        let m = message(tokens);
        assert!(m.contains(want), "want {want:?} in {m}");
    }
}

#[test]
fn block_layers_report_their_own_argument_errors() {
    let m = message(quote! {
        struct N { input(8, 4, 4) residual(shortcut { conv(8 -> 8, k0) }) { conv(8 -> 8, kk) } }
    });
    assert_eq!(m.matches(" | ").count(), 1, "both errors reported: {m}");
}
