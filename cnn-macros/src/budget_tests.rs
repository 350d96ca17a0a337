//! `budget`: the `#[budget]` values, the figures against the runtime, and the overrun messages.

use proc_macro2::TokenStream;
use quote::quote;

use syn::Lit;

use cnn_runtime::__private::Conv2dParams;

use crate::ast::Network;
use crate::ast::Networks;
use crate::budget::*;
use crate::pipeline;

fn lit(text: &str) -> Lit {
    syn::parse_str(text).expect("a literal")
}

fn network(tokens: TokenStream) -> Network {
    let mut nets: Networks = syn::parse2(tokens).expect("parses");
    nets.networks.remove(0)
}

/// The figures of the first network (without `#[weights]`).
fn figures_of(tokens: TokenStream) -> syn::Result<Figures> {
    let net = network(tokens);
    let plan = pipeline::plan(&net)?;
    figures(&net, &plan, None)
}

/// Every error message of expanding `tokens`, joined.
fn errors(tokens: TokenStream) -> String {
    let net = network(tokens);
    let result = pipeline::plan(&net).and_then(|plan| {
        let f = figures(&net, &plan, None)?;
        match &net.budget {
            Ok(Some(b)) => check(&net, b, &f, &plan),
            _ => Ok(()),
        }
    });
    match result {
        Ok(()) => String::new(),
        Err(e) => e
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(" | "),
    }
}

#[test]
fn sizes_are_whole_numbers_with_1024_based_units() {
    for (text, want) in [
        ("65536", 65536),
        ("\"65536\"", 65536),
        ("\"64K\"", 65536),
        ("64K", 65536),
        ("\"1M\"", 1 << 20),
        ("1M", 1 << 20),
        ("\"2G\"", 2 << 30),
        ("\"3KiB\"", 3072),
        ("\"1_536K\"", 1536 << 10),
        ("1_000", 1000),
        ("0x10", 16),
        ("\"0\"", 0),
    ] {
        assert_eq!(parse_size(&lit(text)), Ok(want), "{text}");
    }
}

#[test]
fn malformed_sizes_are_errors_not_panics() {
    for (text, needle) in [
        ("\"1.5M\"", "no fractions"),
        ("1.5", "no fractions"),
        ("\"64k\"", "unknown unit `k`"),
        ("\"64KB\"", "unknown unit `KB`"),
        ("\"\"", "expected a whole number"),
        ("\"_1\"", "expected a whole number"),
        ("\"K\"", "expected a whole number"),
        ("\"-1\"", "expected a whole number"),
        ("\"99999999999999999999G\"", "too large"),
        ("\"17179869184G\"", "too large"),
        ("18446744073709551616", "too large"),
        ("'x'", "expected a size"),
        ("true", "expected a size"),
    ] {
        let err = parse_size(&lit(text)).expect_err(text);
        assert!(err.contains(needle), "{text}: {err}");
    }
    // The largest size that fits, and one byte more.
    let max = usize::MAX.to_string();
    assert_eq!(parse_size(&lit(&max)), Ok(usize::MAX));
    assert_eq!(parse_size(&lit("\"16777215G\"")), Ok(16777215 << 30));
}

#[test]
fn counts_take_no_unit() {
    assert_eq!(parse_count(&lit("5_000_000")), Ok(5_000_000));
    assert_eq!(parse_count(&lit("\"5000000\"")), Ok(5_000_000));
    assert!(parse_count(&lit("5M"))
        .unwrap_err()
        .contains("whole number such as"));
    assert!(parse_count(&lit("\"5K\""))
        .unwrap_err()
        .contains("units are for byte sizes"));
    assert!(parse_count(&lit("99999999999999999999999"))
        .unwrap_err()
        .contains("too large"));
}

#[test]
fn thousands_separators() {
    for (n, s) in [
        (0, "0"),
        (999, "999"),
        (1000, "1,000"),
        (71168, "71,168"),
        (1234567, "1,234,567"),
    ] {
        assert_eq!(sep(n), s);
    }
}

#[test]
fn attribute_errors_are_all_reported() {
    let msg = errors(quote! {
        #[budget(flsh = "64K", flash = "1.5M", flash = "1M", macs = 5M)]
        #[budget(ram = 1)]
        struct N { input(1, 4, 4) fc(2) }
    });
    for needle in [
        "duplicate `#[budget]` attribute",
        "unknown `#[budget]` key `flsh`; did you mean `flash`?",
        "`flash` in `#[budget]`: `1.5M` is not a whole number of bytes",
        "duplicate `flash` in `#[budget]`",
        "`macs` in `#[budget]`: a count",
    ] {
        assert!(msg.contains(needle), "{needle} in {msg}");
    }
    for (attr, needle) in [
        (quote!(#[budget]), "expected `#[budget(ram"),
        (quote!(#[budget = "64K"]), "expected `#[budget(ram"),
        (quote!(#[budget()]), "sets no limit"),
        (
            quote!(#[budget(ram)]),
            "expected `=` and a value after `ram`",
        ),
        (quote!(#[budget(ram = x)]), "expected a literal"),
        (quote!(#[budget(ram = 1 flash = 2)]), "expected `,`"),
        (quote!(#[budget(3 = 1)]), "expected `#[budget(ram"),
    ] {
        let msg = errors(quote!(#attr struct N { input(1, 4, 4) fc(2) }));
        assert!(msg.contains(needle), "{attr}: {msg}");
    }
}

#[test]
fn budget_errors_come_with_the_layer_errors() {
    let msg = errors(quote! {
        #[budget(ram = "1.5K")]
        struct N { input(1, 4, 4) conv(2 -> 1, k1) }
    });
    assert!(msg.contains("is not a whole number of bytes"), "{msg}");
    assert!(msg.contains("expects 2 input channels"), "{msg}");
}

/// `input(1, 4, 4) fc(2)`: activations 16 (the input, the flatten), no scratch, no conv, no
/// stack: a workspace of 32; RAM = 4 × (32 + 16 + 2) = 200. Each term is distinct, so a
/// formula that drops or doubles one gives another number.
#[test]
fn ram_is_four_bytes_times_workspace_input_and_output() {
    let f = figures_of(quote!(struct N { input(1, 4, 4) fc(2) })).unwrap();
    assert_eq!(
        f.layout,
        Layout {
            activations: 16,
            scratch: 0,
            channels: 0,
            stack: vec![]
        }
    );
    assert_eq!((f.workspace, f.input, f.output), (32, 16, 2));
    assert_eq!(f.ram, 200);
    assert_eq!(f.weights, 4 * (16 * 2 + 2));
    assert_eq!(f.macs, 32);
    assert_eq!(f.flash, f.weights + f.code);
}

/// A convolution's scratch and channels, and the stacks of a residual and a concat, against
/// the runtime's own descriptors and `WorkspaceLayout::sample_len`.
#[test]
fn the_layout_is_the_runtimes() {
    let f = figures_of(quote! {
        struct N {
            input(3, 10, 10)
            conv(3 -> 16, k3, p1) relu
            residual(shortcut { conv(16 -> 24, k1) }) { conv(16 -> 24, k3, p1) }
            concat { branch { conv(24 -> 20, k3, p1) } branch { maxpool(3, s1, p1) } }
            conv(44 -> 44, k3, p1, groups=44) gap fc(5)
        }
    })
    .unwrap();
    let conv = |c_in, c_out, k, p, groups| Conv2dParams {
        c_in,
        c_out,
        groups,
        kernel: [k, k],
        stride: [1, 1],
        padding: [p, p],
        dilation: [1, 1],
        in_hw: [10, 10],
        out_hw: [10, 10],
    };
    let scratch = [
        conv(3, 16, 3, 1, 1),
        conv(16, 24, 1, 0, 1),
        conv(16, 24, 3, 1, 1),
        conv(24, 20, 3, 1, 1),
        conv(44, 44, 3, 1, 44),
    ]
    .iter()
    .map(Conv2dParams::scratch_len)
    .max()
    .unwrap();
    assert_eq!(f.layout.scratch, scratch);
    assert_eq!(f.layout.activations, 44 * 100);
    assert_eq!(f.layout.channels, 44);
    // residual: its input [16, 10, 10], its shortcut's output [24, 10, 10]; concat: its
    // input [24, 10, 10] at depth 0, its output [44, 10, 10] at depth 1.
    assert_eq!(f.layout.stack, [2400, 4400]);
    let rt = cnn_runtime::__private::WorkspaceLayout {
        activations: f.layout.activations,
        scratch: f.layout.scratch,
        channels: f.layout.channels,
        stack: Box::leak(f.layout.stack.clone().into_boxed_slice()),
    };
    assert_eq!(f.workspace, rt.sample_len());
    assert_eq!(f.ram, 4 * (rt.sample_len() + 300 + 5));
}

#[test]
fn absurd_networks_are_errors_not_panics() {
    let layout = Layout {
        activations: usize::MAX / 2 + 1,
        scratch: 0,
        channels: 0,
        stack: vec![],
    };
    assert_eq!(layout.sample_len(), None);
    let layout = Layout {
        activations: 1,
        scratch: 0,
        channels: 0,
        stack: vec![usize::MAX, 1],
    };
    assert_eq!(layout.sample_len(), None);
    // Fits as a tensor, but not twice (the ping-pong buffers).
    let half = proc_macro2::Literal::usize_unsuffixed(usize::MAX / 2 + 1);
    let msg = errors(quote!(struct N { input(1, 1, #half) relu }));
    assert!(
        msg.contains("network `N` is too large: its workspace"),
        "{msg}"
    );
    // A convolution whose scratch bound overflows.
    let wide = proc_macro2::Literal::usize_unsuffixed(usize::MAX / 64);
    let msg = errors(quote!(struct N { input(1, 1, #wide) conv(1 -> 1, k1) }));
    assert!(
        msg.contains("`conv` is too large: its scratch buffer"),
        "{msg}"
    );
    assert!(!fits(u128::MAX));
    assert!(fits(usize::MAX as u128));
}

#[test]
fn kernels_follow_the_algorithms() {
    let net = network(quote! {
        struct Digits {
            input(1, 8, 8)
            conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
        }
    });
    let plan = pipeline::plan(&net).unwrap();
    assert_eq!(
        kernels(&plan),
        [
            Kernel::Executor,
            Kernel::Conv,
            Kernel::BatchNorm,
            Kernel::Gemm,
            Kernel::Linear,
            Kernel::Pool,
            Kernel::Activation,
        ]
    );
    let f = figures(&net, &plan, Some(1000)).unwrap();
    let table: usize = kernels(&plan)
        .iter()
        .map(|k| CODE_SIZES.iter().find(|(c, ..)| c == k).unwrap().2)
        .sum();
    assert_eq!(
        f.code,
        table + GLUE_BASE + GLUE_PER_LAYER * plan.all().len()
    );
    assert_eq!(
        (f.weights, f.embedded, f.flash),
        (1000, true, 1000 + f.code)
    );
    // Every kernel has one row.
    for (i, (k, ..)) in CODE_SIZES.iter().enumerate() {
        assert_eq!(CODE_SIZES.iter().filter(|(c, ..)| c == k).count(), 1, "{i}");
    }
}

#[test]
fn every_overrun_is_reported_with_its_parts() {
    let msg = errors(quote! {
        #[budget(ram = 199, flash = "1K", macs = 31)]
        struct N { input(1, 4, 4) fc(2) }
    });
    let parts: Vec<&str> = msg.split(" | ").collect();
    assert_eq!(parts.len(), 3, "{msg}");
    assert!(
        parts[0].contains(
            "network `N` needs 200 bytes of RAM, over its budget of 199 bytes (`ram = 199`)"
        ),
        "{msg}"
    );
    assert!(
        parts[0].contains("workspace 32 + input 16 + output 2"),
        "{msg}"
    );
    assert!(
        parts[1].contains("bytes of flash, over its budget of 1,024 bytes (`flash = \"1K\"`)"),
        "{msg}"
    );
    assert!(
        parts[1].contains("weights 136 (4 bytes × parameters)"),
        "{msg}"
    );
    assert!(parts[1].contains("executor 3,430"), "{msg}");
    assert!(
        parts[2].contains(
            "needs 32 multiply-accumulates per sample, over its budget of 31 (`macs = 31`)"
        ),
        "{msg}"
    );
    assert!(
        parts[2].contains("the largest layers: `1` fc(2) 32"),
        "{msg}"
    );
    // At the limit is within it.
    let f = figures_of(quote!(struct N { input(1, 4, 4) fc(2) })).unwrap();
    let (ram, flash) = (
        proc_macro2::Literal::usize_unsuffixed(f.ram),
        proc_macro2::Literal::usize_unsuffixed(f.flash),
    );
    assert_eq!(
        errors(quote! {
            #[budget(ram = #ram, flash = #flash, macs = 32)]
            struct N { input(1, 4, 4) fc(2) }
        }),
        ""
    );
}
