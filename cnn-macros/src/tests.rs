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
    // The definition, the workspace's scratch, `from_safetensors` and `seeded`.
    assert_eq!(out.matches("__PARAMS_0 ").count(), 4);
}
