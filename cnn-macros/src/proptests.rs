//! Property tests: random token trees never panic the parser, checker or code generator, and
//! valid geometries plan to the shapes PyTorch's formulas give.

use proc_macro2::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};
use proptest::prelude::*;
use quote::{quote, ToTokens};

use crate::ast::Networks;
use crate::pipeline;
use crate::shape;
use crate::symbol;
use crate::tensor::Shape;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Random tokens.

/// A token tree, kept as data so a failing case prints readably and shrinks.
#[derive(Clone, Debug)]
enum Tok {
    Ident(String),
    Raw(String),
    Punct(char, bool),
    Lit(Lit),
    Group(char, Vec<Tok>),
}

#[derive(Clone, Debug)]
enum Lit {
    Int(u128),
    Suffixed(u64, &'static str),
    Float(f64),
    Text(String),
    Str(String),
    Char(char),
    Bytes(Vec<u8>),
}

impl Tok {
    fn to_tokens(&self, out: &mut TokenStream) {
        let tree: TokenTree = match self {
            Tok::Ident(s) => Ident::new(s, Span::call_site()).into(),
            Tok::Raw(s) => Ident::new_raw(s, Span::call_site()).into(),
            Tok::Punct(c, joint) => {
                let spacing = if *joint {
                    Spacing::Joint
                } else {
                    Spacing::Alone
                };
                Punct::new(*c, spacing).into()
            }
            Tok::Lit(l) => match l {
                Lit::Int(n) => Literal::u128_unsuffixed(*n),
                Lit::Suffixed(n, suffix) => format!("{n}{suffix}").parse().expect("a literal"),
                Lit::Float(f) => Literal::f64_unsuffixed(*f),
                Lit::Text(t) => t.parse().expect("a literal"),
                Lit::Str(s) => Literal::string(s),
                Lit::Char(c) => Literal::character(*c),
                Lit::Bytes(b) => Literal::byte_string(b),
            }
            .into(),
            Tok::Group(d, inner) => {
                let delimiter = match d {
                    '(' => Delimiter::Parenthesis,
                    '{' => Delimiter::Brace,
                    '[' => Delimiter::Bracket,
                    _ => Delimiter::None,
                };
                Group::new(delimiter, stream(inner)).into()
            }
        };
        out.extend([tree]);
    }
}

fn stream(toks: &[Tok]) -> TokenStream {
    let mut out = TokenStream::new();
    for t in toks {
        t.to_tokens(&mut out);
    }
    out
}

/// Every layer name, argument name, short form and flag the DSL knows.
fn vocabulary() -> Vec<&'static str> {
    let params = [
        symbol::CONV_ARGS,
        symbol::CONV_TRANSPOSE_ARGS,
        symbol::UPSAMPLE_ARGS,
        symbol::BN_ARGS,
        symbol::LEAKY_RELU_ARGS,
        symbol::MAXPOOL_ARGS,
        symbol::AVGPOOL_ARGS,
        symbol::FC_ARGS,
        symbol::DROPOUT_ARGS,
    ];
    let mut words: Vec<&str> = symbol::LAYERS
        .iter()
        .flat_map(|n| n.iter().copied())
        .collect();
    for p in params.iter().flat_map(|p| p.iter()) {
        words.push(p.name);
        words.extend(p.short);
        if let symbol::ValueKind::Name(names) = p.kind {
            words.extend(names);
        }
    }
    words.extend(symbol::FLAGS.iter().map(|f| f.0));
    words.sort_unstable();
    words.dedup();
    words
}

fn shorts() -> Vec<&'static str> {
    let mut s: Vec<&str> = symbol::CONV_ARGS.iter().filter_map(|p| p.short).collect();
    s.push("x");
    s
}

fn ident() -> BoxedStrategy<Tok> {
    prop_oneof![
        6 => prop::sample::select(vocabulary()).prop_map(|w| Tok::Ident(w.into())),
        3 => (prop::sample::select(shorts()), any::<u128>(), 0u8..3).prop_map(|(s, n, size)| {
            // `k3`, `p0`, `k99999999999999999999`.
            let n = match size {
                0 => n % 10,
                1 => n % 100_000,
                _ => n,
            };
            Tok::Ident(format!("{s}{n}"))
        }),
        2 => "[a-z][a-z0-9_]{0,6}".prop_map(Tok::Ident),
        1 => prop::sample::select(vec![
            "struct", "pub", "crate", "in", "true", "false", "True", "self", "Self", "input",
            "weights", "r#conv", "_x",
        ])
        .prop_map(|w| match w.strip_prefix("r#") {
            Some(raw) => Tok::Raw(raw.into()),
            None => Tok::Ident(w.into()),
        }),
    ]
    .boxed()
}

fn punct() -> BoxedStrategy<Tok> {
    (
        prop::sample::select(vec![
            ',', ',', ',', '-', '>', '=', ';', ':', '#', '!', '.', '+', '*', '/', '&', '|', '@',
            '?', '$',
        ]),
        any::<bool>(),
    )
        .prop_map(|(c, joint)| Tok::Punct(c, joint))
        .boxed()
}

fn literal() -> BoxedStrategy<Lit> {
    prop_oneof![
        4 => (0u128..20).prop_map(Lit::Int),
        2 => any::<u128>().prop_map(Lit::Int),
        1 => prop::sample::select(vec![u64::MAX as u128, usize::MAX as u128 + 1, u128::MAX])
            .prop_map(Lit::Int),
        1 => (any::<u64>(), prop::sample::select(vec!["u8", "i8", "usize", "i64", "u128", "f32", "foo"]))
            .prop_map(|(n, s)| Lit::Suffixed(n, s)),
        2 => any::<f64>()
            .prop_filter("a literal is finite", |f| f.is_finite())
            .prop_map(|f| Lit::Float(f.abs())),
        2 => prop::sample::select(vec![
            "0.5", "1e309", "1e-320", "1.5e300", "1f32", "2.0f64", "0x10", "0o7", "0b101", "1_000",
            "3_", "0.0", "1e5", "99999999999999999999999999999999999999999", "r\"raw\"", "c\"c\"",
            "b'x'", "'\\u{10ffff}'", "\"\"",
        ])
        .prop_map(|t| Lit::Text(t.into())),
        1 => "[ -~]{0,8}".prop_map(Lit::Str),
        1 => any::<char>().prop_map(Lit::Char),
        1 => prop::collection::vec(any::<u8>(), 0..4).prop_map(Lit::Bytes),
    ].boxed()
}

fn leaf() -> BoxedStrategy<Tok> {
    prop_oneof![
        4 => ident(),
        3 => punct(),
        3 => literal().prop_map(Tok::Lit),
    ]
    .boxed()
}

/// Any token tree: leaves, and groups of any delimiter nested a few levels.
fn tree() -> BoxedStrategy<Tok> {
    leaf()
        .prop_recursive(4, 48, 8, |inner| {
            (
                prop::sample::select(vec!['(', '(', '(', '{', '[', ' ']),
                prop::collection::vec(inner, 0..8),
            )
                .prop_map(|(d, v)| Tok::Group(d, v))
        })
        .boxed()
}

fn p(c: char) -> Tok {
    Tok::Punct(c, false)
}

/// A value as an argument would hold it: a literal, a negative literal, an identifier, a pair.
fn value() -> BoxedStrategy<Vec<Tok>> {
    prop_oneof![
        4 => literal().prop_map(|l| vec![Tok::Lit(l)]),
        1 => literal().prop_map(|l| vec![p('-'), Tok::Lit(l)]),
        1 => ident().prop_map(|i| vec![i]),
        2 => prop::collection::vec(literal(), 0..4).prop_map(|ls| {
            let mut inner = Vec::new();
            for (i, l) in ls.into_iter().enumerate() {
                if i > 0 {
                    inner.push(p(','));
                }
                inner.push(Tok::Lit(l));
            }
            vec![Tok::Group('(', inner)]
        }),
        1 => tree().prop_map(|t| vec![t]),
    ]
    .boxed()
}

/// One argument in a layer's parentheses, well-formed or not.
fn arg() -> BoxedStrategy<Vec<Tok>> {
    prop_oneof![
        3 => value(),
        3 => ident().prop_map(|i| vec![i]),
        2 => (ident(), value()).prop_map(|(k, v)| [vec![k, p('=')], v].concat()),
        2 => (value(), value())
            .prop_map(|(a, b)| [a, vec![Tok::Punct('-', true), p('>')], b].concat()),
        1 => (ident(), value(), value()).prop_map(|(k, a, b)| {
            vec![k, Tok::Group('(', [a, vec![p(',')], b].concat())]
        }),
        1 => prop::collection::vec(tree(), 0..4),
    ]
    .boxed()
}

/// A separator: usually a comma, sometimes missing, doubled or wrong.
fn separator() -> BoxedStrategy<Vec<Tok>> {
    prop_oneof![
        8 => Just(vec![p(',')]),
        1 => Just(vec![]),
        1 => Just(vec![p(','), p(',')]),
        1 => Just(vec![p(';')]),
    ]
    .boxed()
}

/// A layer name, mostly a real one.
fn layer_name() -> BoxedStrategy<Tok> {
    let layers: Vec<&str> = symbol::LAYERS
        .iter()
        .flat_map(|n| n.iter().copied())
        .collect();
    prop_oneof![
        3 => prop::sample::select(layers).prop_map(|w| Tok::Ident(w.into())),
        1 => ident(),
    ]
    .boxed()
}

/// `name` or `name(args)`.
fn item() -> BoxedStrategy<Vec<Tok>> {
    (
        layer_name(),
        prop::option::weighted(0.7, prop::collection::vec((arg(), separator()), 0..5)),
        prop::option::of(separator()),
    )
        .prop_map(|(name, args, after)| {
            let mut out = vec![name];
            if let Some(args) = args {
                let mut inner = Vec::new();
                for (a, sep) in args {
                    inner.extend(a);
                    inner.extend(sep);
                }
                out.push(Tok::Group('(', inner));
            }
            out.extend(after.unwrap_or_default());
            out
        })
        .boxed()
}

/// `#[attrs] vis struct Name { input(…) items }`, each part sometimes missing or wrong.
fn network() -> BoxedStrategy<Vec<Tok>> {
    let attr = prop_oneof![
        6 => Just(stream_toks(quote!(#[doc = "x"]))),
        4 => Just(stream_toks(quote!(#[derive(Debug)]))),
        1 => Just(stream_toks(quote!(#[weights = "no/such/file.safetensors"]))),
        1 => prop::sample::select(vec![quote!(#[weights(3)]), quote!(#[weights = 3]), quote!(#[weights])])
            .prop_map(stream_toks),
        1 => tree().prop_map(|t| vec![p('#'), Tok::Group('[', vec![t])]),
        2 => (
            prop::collection::vec(
                (
                    prop::sample::select(vec!["ram", "flash", "macs", "rom", "ram"]),
                    prop_oneof![
                        2 => literal(),
                        2 => prop::sample::select(vec![
                            "\"64K\"", "64K", "1M", "\"99999999999999999999G\"", "18446744073709551615",
                            "16777216G", "1.5M", "\"1.5M\"", "\"64k\"", "\"_1\"", "0", "\"\"", "\"1KiB\"",
                        ])
                        .prop_map(|t| Lit::Text(t.into())),
                    ],
                ),
                0..4,
            ),
            prop::sample::select(vec!['(', '[', '{']),
        )
            .prop_map(|(entries, delim)| {
                let mut inner = Vec::new();
                for (key, value) in entries {
                    inner.extend([Tok::Ident(key.into()), p('='), Tok::Lit(value), p(',')]);
                }
                let attr = vec![Tok::Ident("budget".into()), Tok::Group(delim, inner)];
                vec![p('#'), Tok::Group('[', attr)]
            }),
        1 => tree().prop_map(|t| {
            vec![p('#'), Tok::Group('[', vec![Tok::Ident("budget".into()), Tok::Group('(', vec![t])])]
        }),
    ];
    let input = prop_oneof![
        3 => (literal(), literal(), literal()).prop_map(|(c, h, w)| {
            let inner = vec![Tok::Lit(c), p(','), Tok::Lit(h), p(','), Tok::Lit(w)];
            vec![Tok::Ident("input".into()), Tok::Group('(', inner)]
        }),
        3 => (1u128..5, 1u128..12, 1u128..12).prop_map(|(c, h, w)| {
            let inner = vec![Tok::Lit(Lit::Int(c)), p(','), Tok::Lit(Lit::Int(h)), p(','), Tok::Lit(Lit::Int(w))];
            vec![Tok::Ident("input".into()), Tok::Group('(', inner)]
        }),
        1 => item(),
        1 => Just(vec![]),
    ];
    (
        prop::collection::vec(attr, 0..2),
        prop::option::of(prop::sample::select(vec!["pub", "pub", "pub", "crate"])),
        prop::option::weighted(0.95, Just(Tok::Ident("struct".into()))),
        prop::option::weighted(
            0.95,
            prop_oneof![Just("Net".to_string()), "[A-Z][a-z]{0,4}"],
        ),
        input,
        prop::collection::vec(item(), 0..12),
        prop::option::weighted(0.97, Just(())),
    )
        .prop_map(|(attrs, vis, kw, name, input, items, braced)| {
            let mut out: Vec<Tok> = attrs.concat();
            out.extend(vis.map(|v| Tok::Ident(v.into())));
            out.extend(kw);
            out.extend(name.map(Tok::Ident));
            let body = [input, items.concat()].concat();
            if braced.is_some() {
                out.push(Tok::Group('{', body));
            } else {
                out.extend(body);
            }
            out
        })
        .boxed()
}

fn stream_toks(tokens: TokenStream) -> Vec<Tok> {
    // Only used on fixed attribute snippets: identifiers, `=`, `#`, string and int literals.
    tokens
        .into_iter()
        .map(|t| match t {
            TokenTree::Ident(i) => Tok::Ident(i.to_string()),
            TokenTree::Punct(p) => Tok::Punct(p.as_char(), p.spacing() == Spacing::Joint),
            TokenTree::Literal(l) => Tok::Lit(Lit::Text(l.to_string())),
            TokenTree::Group(g) => {
                let d = match g.delimiter() {
                    Delimiter::Parenthesis => '(',
                    Delimiter::Brace => '{',
                    Delimiter::Bracket => '[',
                    Delimiter::None => ' ',
                };
                Tok::Group(d, stream_toks(g.stream()))
            }
        })
        .collect()
}

/// Parses, plans and expands; any outcome but a panic is fine, and every error has a message.
fn drive(tokens: TokenStream) -> Result<(), TestCaseError> {
    let Ok(networks) = syn::parse2::<Networks>(tokens) else {
        return Ok(());
    };
    for net in &networks.networks {
        if let Err(e) = pipeline::plan(net) {
            prop_assert!(e.into_iter().all(|e| !e.to_string().is_empty()));
        }
    }
    let out = pipeline::expand(&networks);
    prop_assert!(networks.networks.is_empty() || !out.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    /// Networks shaped like the grammar, with random names, arguments, literals and punctuation.
    #[test]
    fn random_networks_never_panic(nets in prop::collection::vec(network(), 1..3)) {
        drive(stream(&nets.concat()))?;
    }
}

proptest! {
    #![proptest_config(config(1500))]

    /// Token soup with no structure at all, at the top level and inside a network's braces.
    #[test]
    fn random_token_trees_never_panic(toks in prop::collection::vec(tree(), 0..24)) {
        let body = stream(&toks);
        drive(body.clone())?;
        drive(quote!(struct N { #body }))?;
        drive(quote!(struct N { input(3, 8, 8) #body }))?;
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// A syntax error inside one network's braces stays that network's error: the others, and
    /// its stub, are still emitted (see `ast::Network`).
    #[test]
    fn body_errors_stay_inside_their_network(
        toks in prop::collection::vec(tree(), 0..16),
        items in prop::collection::vec(item(), 0..6),
    ) {
        let body = stream(&[items.concat(), toks].concat());
        let tokens = quote! {
            struct A { input(3, 8, 8) #body }
            pub struct B { input(1, 4, 4) relu fc(2) }
        };
        let networks = match syn::parse2::<Networks>(tokens) {
            Ok(n) => n,
            Err(e) => return Err(TestCaseError::fail(format!("{e}: {body}"))),
        };
        prop_assert_eq!(networks.networks.len(), 2);
        prop_assert!(pipeline::plan(&networks.networks[1]).is_ok());
        drive(quote!(struct A { input(3, 8, 8) #body }))?;
    }
}

proptest! {
    #![proptest_config(config(12))]

    /// Thousands of layers, each from the vocabulary with random arguments.
    #[test]
    fn thousands_of_random_layers_never_panic(
        items in prop::collection::vec(item(), 1000..3000),
    ) {
        let body = stream(&items.concat());
        drive(quote!(struct N { input(3, 8, 8) #body }))?;
    }
}

#[test]
fn empty_input_is_no_networks() {
    let networks = syn::parse2::<Networks>(TokenStream::new()).unwrap();
    assert!(networks.networks.is_empty());
    assert!(pipeline::expand(&networks).is_empty());
    for tokens in [
        quote!(
            struct N {}
        ),
        quote!(struct N),
        quote!(struct),
        quote!(,),
    ] {
        drive(tokens).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry.

/// PyTorch's output length counted window by window: window `j` starts at `j·s − p`. Without
/// `ceil_mode` it must end inside the padded input; with it, it must start inside the input or
/// the left padding and begin no later than one stride after the last full window.
fn windows(i: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> Option<usize> {
    let extent = d * (k - 1) + 1;
    if i + 2 * p < extent {
        return None;
    }
    let last_full = i + 2 * p - extent;
    let fits = |start: usize| {
        if ceil {
            start < last_full + s && start < i + p
        } else {
            start <= last_full
        }
    };
    Some((0..).take_while(|j| fits(j * s)).count())
}

/// The same in closed form over `u128`, for sizes too large to count.
fn closed_form(i: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> Option<usize> {
    let (i, k, s, p, d) = (i as u128, k as u128, s as u128, p as u128, d as u128);
    let extent = d.checked_mul(k - 1)? + 1;
    let span = (i + 2 * p).checked_sub(extent)?;
    let mut out = if ceil { span.div_ceil(s) } else { span / s } + 1;
    if ceil && (out - 1) * s >= i + p {
        out -= 1;
    }
    usize::try_from(out).ok()
}

proptest! {
    #![proptest_config(config(4000))]

    /// Convolution geometry: any padding and dilation, no ceil mode.
    #[test]
    fn conv_out_len_counts_windows(i in 1usize..200, k in 1usize..12, s in 1usize..8, p in 0usize..8, d in 1usize..5) {
        prop_assert_eq!(shape::out_len(i, k, s, p, d, false), windows(i, k, s, p, d, false));
    }

    /// Pooling geometry: padding at most half the kernel, with and without ceil mode.
    #[test]
    fn pool_out_len_counts_windows(i in 1usize..200, k in 1usize..12, s in 1usize..12, p in 0usize..6, ceil: bool) {
        let p = p.min(k / 2);
        prop_assert_eq!(shape::out_len(i, k, s, p, 1, ceil), windows(i, k, s, p, 1, ceil));
    }

    /// Sizes of every scale ([`size`]): no overflow, and the closed form whenever it fits
    /// (about a third of the cases, [`huge_size_cases_reach_both_branches`]).
    #[test]
    fn out_len_of_huge_sizes_never_overflows(
        (i, k, s, p, d, ceil) in huge_case(),
    ) {
        prop_assert_eq!(shape::out_len(i, k, s, p, d, ceil), closed_form(i, k, s, p, d, ceil));
    }
}

/// A size of at least `min` from every scale: small (where layers are), around 2^32 (where a
/// product of two overflows 64 bits), near `usize::MAX`, and anywhere. Drawn uniformly over
/// `usize`, `k·d` overflows almost always and the closed form would never be reached.
fn size(min: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => min..64usize,
        2 => (1usize << 28)..(1usize << 36),
        1 => (usize::MAX / 4)..=usize::MAX,
        1 => min..=usize::MAX,
    ]
}

/// `(i, k, s, p, d, ceil)` for [`out_len_of_huge_sizes_never_overflows`].
fn huge_case() -> impl Strategy<Value = (usize, usize, usize, usize, usize, bool)> {
    (size(0), size(1), size(1), size(0), size(1), any::<bool>())
}

/// The huge-size property exercises both of its branches: sizes that fit (an output length)
/// and sizes that do not (an error), each in a good share of the cases.
#[test]
fn huge_size_cases_reach_both_branches() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = huge_case();
    let (mut fits, mut other) = (0, 0);
    for _ in 0..4000 {
        let (i, k, s, p, d, ceil) = strategy.new_tree(&mut runner).unwrap().current();
        match closed_form(i, k, s, p, d, ceil) {
            Some(_) => fits += 1,
            None => other += 1,
        }
    }
    eprintln!("huge sizes: {fits} of 4000 cases fit, {other} do not");
    assert!(fits >= 1000 && other >= 1000, "{fits} fit, {other} do not");
}

proptest! {
    #![proptest_config(config(2000))]

    /// Sizes of every scale ([`size`]): the transposed length never overflows, and is the
    /// closed form in i128 whenever that fits a `usize` and is positive.
    #[test]
    fn transposed_len_of_huge_sizes_never_overflows(
        i in size(1), k in size(1), s in size(1), p in size(0), d in size(1), op in size(0),
    ) {
        let exact = (i as i128 - 1)
            .checked_mul(s as i128)
            .and_then(|v| v.checked_sub(2 * p as i128))
            .and_then(|v| v.checked_add((d as i128).checked_mul(k as i128 - 1)?))
            .and_then(|v| v.checked_add(op as i128 + 1));
        let want = match exact {
            Some(v) if v > 0 => usize::try_from(v).map_err(|_| None),
            Some(v) => Err(Some(v)),
            None => Err(None),
        };
        prop_assert_eq!(shape::transposed_len(i, k, s, p, d, op), want);
    }
}

/// One layer of a random valid network, before it is fitted to the shape it receives.
#[derive(Clone, Debug)]
enum Spec {
    Conv {
        c_out: usize,
        k: [usize; 2],
        s: [usize; 2],
        p: [usize; 2],
        d: [usize; 2],
        g: usize,
        bias: bool,
    },
    Pool {
        max: bool,
        k: [usize; 2],
        s: Option<[usize; 2]>,
        p: [usize; 2],
        ceil: bool,
    },
    ConvT {
        c_out: usize,
        k: [usize; 2],
        s: [usize; 2],
        p: [usize; 2],
        op: [usize; 2],
        d: [usize; 2],
        g: usize,
        bias: bool,
    },
    Upsample {
        scale: [usize; 2],
        /// `None` nearest, else bilinear with this `align_corners`.
        bilinear: Option<bool>,
    },
    Bn(bool),
    Activation(&'static str),
    Global(bool),
    Flatten,
    Fc(usize, bool),
}

fn pair(r: std::ops::Range<usize>) -> impl Strategy<Value = [usize; 2]> {
    (r.clone(), r).prop_map(|(a, b)| [a, b])
}

fn spec() -> BoxedStrategy<Spec> {
    prop_oneof![
        4 => (1usize..6, pair(1..6), pair(1..4), pair(0..3), pair(1..3), 0usize..3, any::<bool>())
            .prop_map(|(c_out, k, s, p, d, g, bias)| Spec::Conv { c_out, k, s, p, d, g: 1 << g, bias }),
        3 => (any::<bool>(), pair(1..5), prop::option::of(pair(1..4)), pair(0..3), any::<bool>())
            .prop_map(|(max, k, s, p, ceil)| Spec::Pool { max, k, s, p, ceil }),
        2 => (1usize..6, pair(1..4), pair(1..4), pair(0..3), pair(0..3), pair(1..3), 0usize..3, any::<bool>())
            .prop_map(|(c_out, k, s, p, op, d, g, bias)| Spec::ConvT { c_out, k, s, p, op, d, g: 1 << g, bias }),
        1 => (pair(1..4), prop::option::of(any::<bool>()))
            .prop_map(|(scale, bilinear)| Spec::Upsample { scale, bilinear }),
        1 => any::<bool>().prop_map(Spec::Bn),
        2 => prop::sample::select(vec![
            "relu", "tanh", "sigmoid", "gelu", "silu", "softmax", "dropout", "relu6", "hardswish",
            "hardsigmoid", "identity",
        ]).prop_map(Spec::Activation),
        1 => any::<bool>().prop_map(Spec::Global),
        1 => Just(Spec::Flatten),
        1 => (1usize..20, any::<bool>()).prop_map(|(n, arrow)| Spec::Fc(n, arrow)),
    ].boxed()
}

/// Fits each spec to the shape it receives, giving the tokens and the `(input, output)` shape of
/// every planned layer, the implicit flatten included.
fn build(input: [usize; 3], specs: &[Spec]) -> (TokenStream, Vec<(Shape, Shape)>) {
    let [c, h, w] = input;
    let mut shape = Shape::Chw { c, h, w };
    let mut tokens = quote!(input(#c, #h, #w));
    let mut shapes = Vec::new();
    for spec in specs {
        let (layer, out) = match (spec, shape) {
            (
                Spec::Conv {
                    c_out,
                    k,
                    s,
                    p,
                    d,
                    g,
                    bias,
                },
                Shape::Chw { c, h, w },
            ) => {
                let g = if c % g == 0 { *g } else { 1 };
                let c_out = c_out * g;
                let mut k = *k;
                for (k, (len, (p, d))) in k.iter_mut().zip([h, w].iter().zip(p.iter().zip(d))) {
                    if d * (*k - 1) + 1 > len + 2 * p {
                        *k = 1;
                    }
                }
                let ([kh, kw], [sh, sw], [ph, pw], [dh, dw]) = (k, *s, *p, *d);
                let oh = windows(h, kh, sh, ph, dh, false).unwrap();
                let ow = windows(w, kw, sw, pw, dw, false).unwrap();
                let layer = quote! {
                    conv(#c -> #c_out, kernel_size = (#kh, #kw), stride = (#sh, #sw),
                         padding = (#ph, #pw), dilation = (#dh, #dw), groups = #g, bias = #bias)
                };
                (
                    layer,
                    Shape::Chw {
                        c: c_out,
                        h: oh,
                        w: ow,
                    },
                )
            }
            (Spec::Pool { max, k, s, p, ceil }, Shape::Chw { c, h, w }) => {
                let [kh, kw] = [k[0].min(h), k[1].min(w)];
                let [ph, pw] = [p[0].min(kh / 2), p[1].min(kw / 2)];
                let [sh, sw] = s.unwrap_or([kh, kw]);
                let oh = windows(h, kh, sh, ph, 1, *ceil).unwrap();
                let ow = windows(w, kw, sw, pw, 1, *ceil).unwrap();
                let name = if *max {
                    quote!(maxpool)
                } else {
                    quote!(avgpool)
                };
                let stride = s.map(|_| quote!(stride = (#sh, #sw),));
                let layer = quote! {
                    #name(kernel_size = (#kh, #kw), #stride padding = (#ph, #pw), ceil_mode = #ceil)
                };
                (layer, Shape::Chw { c, h: oh, w: ow })
            }
            (
                Spec::ConvT {
                    c_out,
                    k,
                    s,
                    p,
                    op,
                    d,
                    g,
                    bias,
                },
                Shape::Chw { c, h, w },
            ) => {
                let g = if c % g == 0 { *g } else { 1 };
                let c_out = c_out * g;
                let mut out = [0; 2];
                let mut p = *p;
                let mut op = *op;
                for axis in 0..2 {
                    let (len, k, s, d) = ([h, w][axis], k[axis], s[axis], d[axis]);
                    op[axis] = op[axis].min(s.max(d) - 1);
                    let full = (len - 1) * s + d * (k - 1) + op[axis];
                    p[axis] = p[axis].min(full / 2);
                    out[axis] = full - 2 * p[axis] + 1;
                }
                let ([kh, kw], [sh, sw], [ph, pw], [oph, opw], [dh, dw]) = (*k, *s, p, op, *d);
                let layer = quote! {
                    convtranspose(#c -> #c_out, kernel_size = (#kh, #kw), stride = (#sh, #sw),
                         padding = (#ph, #pw), output_padding = (#oph, #opw),
                         dilation = (#dh, #dw), groups = #g, bias = #bias)
                };
                (
                    layer,
                    Shape::Chw {
                        c: c_out,
                        h: out[0],
                        w: out[1],
                    },
                )
            }
            (Spec::Upsample { scale, bilinear }, Shape::Chw { c, h, w }) => {
                let [sh, sw] = *scale;
                let layer = match bilinear {
                    None => quote!(upsample(scale_factor = (#sh, #sw))),
                    Some(ac) => {
                        quote!(upsample(scale_factor = (#sh, #sw), mode = bilinear, align_corners = #ac))
                    }
                };
                (
                    layer,
                    Shape::Chw {
                        c,
                        h: h * sh,
                        w: w * sw,
                    },
                )
            }
            (Spec::Bn(explicit), Shape::Chw { c, .. }) => {
                let layer = if *explicit {
                    quote!(bn(#c))
                } else {
                    quote!(bn)
                };
                (layer, shape)
            }
            (Spec::Activation(name), s) => {
                (Ident::new(name, Span::call_site()).into_token_stream(), s)
            }
            (Spec::Global(max), Shape::Chw { c, .. }) => {
                let layer = if *max {
                    quote!(globalmaxpool)
                } else {
                    quote!(gap)
                };
                (layer, Shape::Chw { c, h: 1, w: 1 })
            }
            (Spec::Flatten, s) => (quote!(flatten), Shape::Flat(s.len())),
            (Spec::Fc(n, arrow), s) => {
                let features = s.len();
                if let Shape::Chw { .. } = s {
                    shapes.push((s, Shape::Flat(features)));
                }
                let layer = if *arrow {
                    quote!(fc(#features -> #n))
                } else {
                    quote!(fc(#n))
                };
                (layer, Shape::Flat(*n))
            }
            // Spatial layers after a flatten would be a shape error; leave them out.
            (_, Shape::Flat(_)) => continue,
        };
        tokens.extend(layer);
        shapes.push((
            if matches!(spec, Spec::Fc(..)) {
                Shape::Flat(shape.len())
            } else {
                shape
            },
            out,
        ));
        shape = out;
    }
    (tokens, shapes)
}

proptest! {
    #![proptest_config(config(1500))]

    /// Valid networks plan, every layer's input is the previous layer's output, and each shape
    /// is the one PyTorch's formulas give.
    #[test]
    fn valid_networks_plan_with_chained_shapes(
        input in (1usize..5, 1usize..20, 1usize..20),
        specs in prop::collection::vec(spec(), 0..10),
    ) {
        let input = [input.0, input.1, input.2];
        let (body, want) = build(input, &specs);
        let networks: Networks = syn::parse2(quote!(struct N { #body })).unwrap();
        let plan = match pipeline::plan(&networks.networks[0]) {
            Ok(plan) => plan,
            Err(e) => return Err(TestCaseError::fail(format!("{body}: {e}"))),
        };
        prop_assert_eq!(plan.input, input);
        let mut previous = Shape::Chw { c: input[0], h: input[1], w: input[2] };
        for (i, l) in plan.layers.iter().enumerate() {
            prop_assert_eq!(l.index, i);
            prop_assert_eq!(l.input, previous, "layer {} of {}", i, body);
            previous = l.output;
        }
        let got: Vec<(Shape, Shape)> = plan.layers.iter().map(|l| (l.input, l.output)).collect();
        prop_assert_eq!(got, want, "{}", body);
        prop_assert!(!pipeline::expand(&networks).is_empty());
    }
}
