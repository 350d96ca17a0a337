//! `#[weights = "file.safetensors"]`: the weight file is read while the macro expands, its header
//! checked against the planned layers, and its path handed to `include_bytes!`.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use cnn_runtime::__private::{float_value, int_value};

use proc_macro2::TokenStream;
use syn::LitStr;

use crate::args::LayerKind;
use crate::ctxt::Ctxt;
use crate::json::{self, Json};
use crate::shape::Plan;

/// One tensor the plan expects.
struct Expected {
    key: String,
    shape: Vec<usize>,
    /// `layer 0 `conv(3 -> 16, k3)``, for messages.
    layer: String,
    /// `num_batches_tracked`: an integer scalar, `[]` or `[1]`.
    int: bool,
}

fn expected(plan: &Plan) -> Vec<Expected> {
    let mut out = Vec::new();
    for l in plan.all() {
        let layer = format!("layer {} `{}`", l.key, l.layer.dsl);
        let mut push = |name: &str, shape: Vec<usize>, int: bool| {
            out.push(Expected {
                key: format!("{}.{name}", l.key),
                shape,
                layer: layer.clone(),
                int,
            })
        };
        match &l.layer.kind {
            LayerKind::Conv(a) => {
                let [kh, kw] = a.kernel.v;
                push(
                    "weight",
                    vec![a.c_out.v, a.c_in.v / a.groups.v, kh, kw],
                    false,
                );
                if a.bias {
                    push("bias", vec![a.c_out.v], false);
                }
            }
            LayerKind::ConvTranspose(a, _) => {
                let [kh, kw] = a.kernel.v;
                push(
                    "weight",
                    vec![a.c_in.v, a.c_out.v / a.groups.v, kh, kw],
                    false,
                );
                if a.bias {
                    push("bias", vec![a.c_out.v], false);
                }
            }
            LayerKind::BatchNorm(a) => {
                let c = l.input.dims()[0];
                if a.affine {
                    push("weight", vec![c], false);
                    push("bias", vec![c], false);
                }
                if a.track_running_stats {
                    push("running_mean", vec![c], false);
                    push("running_var", vec![c], false);
                    push("num_batches_tracked", vec![], true);
                }
            }
            LayerKind::Linear(a) => {
                push("weight", vec![a.out_features.v, l.input.len()], false);
                if a.bias {
                    push("bias", vec![a.out_features.v], false);
                }
            }
            _ => {}
        }
    }
    out
}

fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E5M2" | "F8_E4M3" => 1,
        _ => return None,
    })
}

const FLOAT_DTYPES: &[&str] = &["F32", "F64", "F16", "BF16"];
const INT_DTYPES: &[&str] = &["I64", "I32", "I16", "I8", "U8"];

/// `base/rel` with `.` and `..` resolved lexically, so messages show a clean path.
fn join_clean(base: &Path, rel: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(rel).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Where a `#[weights]` path may name a file, in the order they are tried: the crate root
/// (`CARGO_MANIFEST_DIR`), then the directory of the source file holding the `cnn!` call, as
/// `include_bytes!` would. The second place keeps a path valid when the crate root is elsewhere,
/// as for trybuild's generated crate under a shared `CARGO_TARGET_DIR`.
fn candidates(rel: &str, source_file: Option<&Path>) -> Vec<PathBuf> {
    let root = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(PathBuf::new, PathBuf::from);
    let mut out = vec![join_clean(&root, rel)];
    if let Some(dir) = source_file.and_then(Path::parent) {
        let next = join_clean(dir, rel);
        if !out.contains(&next) {
            out.push(next);
        }
    }
    out
}

/// Reads the first candidate that exists; the error names every place looked in.
fn read_weights(rel: &str, source_file: Option<&Path>) -> Result<(PathBuf, Vec<u8>), String> {
    let places = candidates(rel, source_file);
    let mut first_error = None;
    for path in &places {
        match std::fs::read(path) {
            Ok(bytes) => return Ok((path.clone(), bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(format!("cannot read weight file `{}`: {e}", path.display())),
        }
    }
    let looked: Vec<String> = places[1..]
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect();
    let also = if looked.is_empty() {
        String::new()
    } else {
        format!(" and at {}", looked.join(", "))
    };
    let e = first_error.map_or_else(|| "no such file".to_owned(), |e| e.to_string());
    Err(format!(
        "cannot read weight file `{rel}` (looked relative to the crate root{also}): {e}"
    ))
}

struct Entry {
    key: String,
    dtype: String,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

/// Parses and validates the whole container: the same rules the runtime loader enforces, so an
/// embedded file that passes here always loads.
fn read_header(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let Some(len) = bytes.get(..8) else {
        return Err(format!(
            "the file is {} bytes, shorter than the 8-byte header length",
            bytes.len()
        ));
    };
    let len = u64::from_le_bytes(len.try_into().map_err(|_| "short header length")?);
    let Some(end) = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(8))
        .filter(|&e| e <= bytes.len())
    else {
        return Err(format!(
            "the header claims {len} bytes but the file has {}",
            bytes.len()
        ));
    };
    let text =
        std::str::from_utf8(&bytes[8..end]).map_err(|_| "the header is not UTF-8".to_string())?;
    let Json::Object(items) =
        json::parse(text).map_err(|e| format!("the header is not JSON: {e}"))?
    else {
        return Err("the header is not a JSON object".into());
    };
    let data_len = bytes.len() - end;
    let mut entries = Vec::new();
    for (key, info) in items {
        if key == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format!("tensor `{key}` has {what}");
        let Some(Json::String(dtype)) = info.get("dtype") else {
            return Err(bad("no dtype"));
        };
        let uints = |v: Option<&Json>| -> Option<Vec<usize>> {
            match v? {
                Json::Array(items) => items
                    .iter()
                    .map(|d| match d {
                        Json::Uint(u) => usize::try_from(*u).ok(),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            }
        };
        let shape = uints(info.get("shape")).ok_or_else(|| bad("no valid shape"))?;
        let offsets =
            uints(info.get("data_offsets")).ok_or_else(|| bad("no valid data_offsets"))?;
        let [begin, end] = offsets[..] else {
            return Err(bad("data_offsets that are not a pair"));
        };
        let size = dtype_size(dtype).ok_or_else(|| bad(&format!("unknown dtype {dtype}")))?;
        let bytes_needed = shape
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad("a shape whose size overflows"))?;
        if begin > end || end > data_len || end - begin != bytes_needed {
            return Err(bad(&format!(
                "data_offsets [{begin}, {end}] that do not hold {bytes_needed} bytes inside the {data_len} data bytes"
            )));
        }
        if entries.iter().any(|e: &Entry| e.key == key) {
            return Err(format!("tensor `{key}` appears twice"));
        }
        entries.push(Entry {
            key,
            dtype: dtype.clone(),
            shape,
            begin,
            end,
        });
    }
    let mut spans: Vec<(usize, usize)> = entries.iter().map(|e| (e.begin, e.end)).collect();
    spans.sort_unstable();
    let mut at = 0;
    for (b, e) in spans {
        if b != at {
            return Err(format!(
                "tensor data is not contiguous: a tensor starts at byte {b}, expected {at}"
            ));
        }
        at = e;
    }
    if at != data_len {
        return Err(format!(
            "the tensors cover {at} of the {data_len} data bytes"
        ));
    }
    Ok(entries)
}

fn dims(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// A weight file that passed [`check`]: where it is, and its tensors decoded.
pub struct Embedded {
    /// The absolute path, for `include_bytes!` (so that an edited file rebuilds the crate).
    pub path: String,
    /// Every float tensor as `f32`, converted as the run-time loader converts it.
    pub floats: HashMap<String, Vec<f32>>,
    /// Every integer scalar (`num_batches_tracked`).
    pub ints: HashMap<String, i64>,
}

/// Decodes every tensor of a checked file (`entries` from [`read_header`]).
fn decode(bytes: &[u8], entries: &[Entry]) -> (HashMap<String, Vec<f32>>, HashMap<String, i64>) {
    let data = &bytes[bytes.len() - entries.iter().map(|e| e.end).max().unwrap_or(0)..];
    let (mut floats, mut ints) = (HashMap::new(), HashMap::new());
    for e in entries {
        let raw = &data[e.begin..e.end];
        let size = dtype_size(&e.dtype).unwrap_or(1);
        if FLOAT_DTYPES.contains(&e.dtype.as_str()) {
            let values = raw
                .chunks_exact(size)
                .map(|b| float_value(&e.dtype, b).unwrap_or(f32::NAN))
                .collect();
            floats.insert(e.key.clone(), values);
        } else if let Some(v) = int_value(&e.dtype, raw) {
            ints.insert(e.key.clone(), v);
        }
    }
    (floats, ints)
}

/// Checks the file named by `#[weights = "…"]` against the plan and decodes it.
/// `source_file` holds the `cnn!` call (see [`candidates`]).
pub fn check(
    attr: &TokenStream,
    lit: &LitStr,
    plan: &Plan,
    source_file: Option<&Path>,
) -> syn::Result<Embedded> {
    let rel = lit.value();
    let (path, bytes) =
        read_weights(&rel, source_file).map_err(|msg| syn::Error::new_spanned(attr, msg))?;
    let shown = path.display().to_string();
    let entries = read_header(&bytes).map_err(|e| {
        syn::Error::new_spanned(
            attr,
            format!("weight file `{rel}` is not a valid safetensors file: {e}"),
        )
    })?;
    let mut cx = Ctxt::new();
    let want = expected(plan);
    for w in &want {
        let Some(e) = entries.iter().find(|e| e.key == w.key) else {
            cx.error_spanned(
                attr,
                format!(
                    "weight file `{rel}` has no tensor `{}` for {}; expected shape {}",
                    w.key,
                    w.layer,
                    dims(&w.shape)
                ),
            );
            continue;
        };
        let shape_ok = e.shape == w.shape || (w.int && e.shape == [1]);
        if !shape_ok {
            cx.error_spanned(
                attr,
                format!(
                    "tensor `{}` of {} has shape {} in `{rel}`, expected {}",
                    w.key,
                    w.layer,
                    dims(&e.shape),
                    dims(&w.shape)
                ),
            );
        }
        let allowed = if w.int { INT_DTYPES } else { FLOAT_DTYPES };
        if !allowed.contains(&e.dtype.as_str()) {
            cx.error_spanned(
                attr,
                format!(
                    "tensor `{}` of {} has dtype {} in `{rel}`; expected one of {}",
                    w.key,
                    w.layer,
                    e.dtype,
                    allowed.join(", ")
                ),
            );
        }
    }
    let mut extra: Vec<&Entry> = entries
        .iter()
        .filter(|e| !want.iter().any(|w| w.key == e.key))
        .collect();
    extra.sort_by(|a, b| a.key.cmp(&b.key));
    for e in extra {
        cx.error_spanned(
            attr,
            format!(
                "weight file `{rel}` has an unexpected tensor `{}` (shape {}); the network has no such parameter",
                e.key,
                dims(&e.shape)
            ),
        );
    }
    cx.check()?;
    let path = path.to_str().map(str::to_owned).ok_or_else(|| {
        syn::Error::new_spanned(attr, format!("weight file path `{shown}` is not UTF-8"))
    })?;
    let (floats, ints) = decode(&bytes, &entries);
    Ok(Embedded { path, floats, ints })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn crate_root_first_then_the_source_files_directory() {
        let source = root().join("src/deep/file.rs");
        let found = candidates("../w.safetensors", Some(&source));
        assert_eq!(
            found,
            vec![
                root().parent().unwrap().join("w.safetensors"),
                root().join("src/w.safetensors")
            ]
        );
        assert_eq!(candidates("w.st", None), vec![root().join("w.st")]);
        let beside_root = root().join("lib.rs");
        assert_eq!(
            candidates("w.st", Some(&beside_root)),
            vec![root().join("w.st")]
        );
    }

    #[test]
    fn a_file_missing_everywhere_names_every_place() {
        let source = root().join("src/lib.rs");
        let err = read_weights("no-such.safetensors", Some(&source)).unwrap_err();
        let second = root().join("src/no-such.safetensors");
        assert!(err.starts_with("cannot read weight file `no-such.safetensors` (looked relative to the crate root and at `"), "{err}");
        assert!(err.contains(&second.display().to_string()), "{err}");
        let (path, bytes) = read_weights("Cargo.toml", Some(&source)).unwrap();
        assert_eq!(path, root().join("Cargo.toml"));
        assert!(!bytes.is_empty());
        let (path, _) = read_weights("lib.rs", Some(&source)).unwrap();
        assert_eq!(path, root().join("src/lib.rs"));
    }

    #[test]
    fn an_unreadable_candidate_is_an_error_not_a_miss() {
        let source = root().join("src/lib.rs");
        let err = read_weights("src", Some(&source)).unwrap_err();
        let shown = root().join("src").display().to_string();
        assert!(
            err.starts_with(&format!("cannot read weight file `{shown}`: ")),
            "{err}"
        );
    }

    /// A safetensors container: the 8-byte length, `header`, then `data` bytes of zeros.
    fn container(header: &str, data: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.resize(out.len() + data, 0);
        out
    }

    #[test]
    fn a_valid_header_lists_every_tensor() {
        let h = r#"{"__metadata__":{"a":"b"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"n":{"dtype":"I64","shape":[],"data_offsets":[24,32]},"h":{"dtype":"BF16","shape":[4],"data_offsets":[32,40]},"q":{"dtype":"U8","shape":[2],"data_offsets":[40,42]},"z":{"dtype":"F32","shape":[0,3],"data_offsets":[42,42]}}"#;
        let entries = read_header(&container(h, 42)).unwrap();
        let got: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    e.key.as_str(),
                    e.dtype.as_str(),
                    e.shape.clone(),
                    e.begin,
                    e.end,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("w", "F32", vec![2, 3], 0, 24),
                ("n", "I64", vec![], 24, 32),
                ("h", "BF16", vec![4], 32, 40),
                ("q", "U8", vec![2], 40, 42),
                ("z", "F32", vec![0, 3], 42, 42),
            ]
        );
    }

    #[test]
    fn every_broken_header_rule_is_reported() {
        let t = |dtype: &str, shape: &str, offsets: &str| {
            format!(r#"{{"t":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#)
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![1, 2, 3], "the file is 3 bytes, shorter than the 8-byte header length"),
            (container("{}", 0)[..9].to_vec(), "the header claims 2 bytes but the file has 9"),
            (container("[1]", 0), "the header is not a JSON object"),
            (container("{", 0), "the header is not JSON"),
            (container(r#"{"t":{"shape":[1],"data_offsets":[0,4]}}"#, 4), "tensor `t` has no dtype"),
            (container(&t("F32", "[-1]", "[0,4]"), 4), "tensor `t` has no valid shape"),
            (container(&t("F32", "3", "[0,4]"), 4), "tensor `t` has no valid shape"),
            (container(&t("F32", "[1]", "[0]"), 4), "tensor `t` has data_offsets that are not a pair"),
            (container(&t("F32", "[1]", "[\"0\",4]"), 4), "tensor `t` has no valid data_offsets"),
            (container(&t("X9", "[1]", "[0,4]"), 4), "tensor `t` has unknown dtype X9"),
            (
                container(&t("F32", "[4611686018427387904,4]", "[0,4]"), 4),
                "tensor `t` has a shape whose size overflows",
            ),
            (
                container(&t("F32", "[2]", "[0,4]"), 8),
                "tensor `t` has data_offsets [0, 4] that do not hold 8 bytes inside the 8 data bytes",
            ),
            (
                container(&t("F32", "[1]", "[4,0]"), 4),
                "tensor `t` has data_offsets [4, 0] that do not hold 4 bytes inside the 4 data bytes",
            ),
            (
                container(&t("F32", "[1]", "[4,8]"), 4),
                "tensor `t` has data_offsets [4, 8] that do not hold 4 bytes inside the 4 data bytes",
            ),
            (
                container(&t("F32", "[1]", "[4,8]"), 8),
                "tensor data is not contiguous: a tensor starts at byte 4, expected 0",
            ),
            (container(&t("F64", "[1]", "[0,8]"), 12), "the tensors cover 8 of the 12 data bytes"),
            (
                container(
                    r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    8,
                ),
                "tensor `t` appears twice",
            ),
        ];
        for (bytes, want) in cases {
            let err = read_header(&bytes)
                .err()
                .unwrap_or_else(|| panic!("accepted: {want}"));
            assert!(err.starts_with(want), "got {err:?}, want {want:?}");
        }
        for (dtype, size) in [("F64", 8), ("U32", 4), ("I16", 2), ("F16", 2), ("BOOL", 1)] {
            let bytes = container(&t(dtype, "[3]", &format!("[0,{}]", 3 * size)), 3 * size);
            assert_eq!(read_header(&bytes).unwrap()[0].end, 3 * size, "{dtype}");
        }
    }

    /// The plan of `struct N { #body }`, by the stages `pipeline::plan` runs.
    fn plan_of(body: TokenStream) -> Plan {
        let networks: crate::ast::Networks =
            syn::parse2(quote::quote!(struct N { #body })).unwrap();
        let net = &networks.networks[0];
        let mut cx = Ctxt::new();
        let (input, layers) =
            crate::check::input_and_layers(&mut cx, net, net.body.as_ref().unwrap()).unwrap();
        let plan = crate::shape::plan(&mut cx, input, layers).unwrap();
        cx.check().unwrap();
        plan
    }

    /// Writes `tensors` (key, dtype, shape) as a safetensors file and runs [`check`] on it.
    fn check_file(body: TokenStream, tensors: &[(&str, &str, &[usize])]) -> Result<String, String> {
        let mut header = Vec::new();
        let mut at = 0;
        for (key, dtype, shape) in tensors {
            let n = dtype_size(dtype).unwrap() * shape.iter().product::<usize>();
            header.push(format!(
                r#""{key}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{at},{}]}}"#,
                at + n
            ));
            at += n;
        }
        let bytes = container(&format!("{{{}}}", header.join(",")), at);
        let dir = std::env::temp_dir().join(format!("cnn-embed-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{:x}.safetensors",
            bytes
                .iter()
                .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(b as u64))
        ));
        std::fs::write(&path, &bytes).unwrap();
        let lit = LitStr::new(path.to_str().unwrap(), proc_macro2::Span::call_site());
        let attr = quote::quote!(#[weights = #lit]);
        check(&attr, &lit, &plan_of(body), None)
            .map(|e| e.path)
            .map_err(|e| {
                e.into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    }

    /// `convtranspose` weights are `[IN, OUT/groups, KH, KW]` (PyTorch's in-channels-first
    /// layout); `upsample` has none.
    #[test]
    fn convtranspose_weights_are_in_channels_first() {
        let net = quote::quote!(input(4, 3, 3) convt(4 -> 6, k(3, 2), s2, g2) upsample(2) convt(6 -> 2, k1, nobias));
        let good: &[(&str, &str, &[usize])] = &[
            ("0.weight", "F32", &[4, 3, 3, 2]),
            ("0.bias", "F32", &[6]),
            ("2.weight", "F32", &[6, 2, 1, 1]),
        ];
        check_file(net.clone(), good).unwrap();
        let mut bad = good.to_vec();
        bad[0] = ("0.weight", "F32", &[6, 2, 3, 2]);
        let err = check_file(net, &bad).unwrap_err();
        assert!(
            err.starts_with(
                "tensor `0.weight` of layer 0 `convt(4 -> 6, k(3, 2), s2, g2)` has shape [6, 2, 3, 2] in `"
            ),
            "{err}"
        );
        assert!(err.ends_with("`, expected [4, 3, 3, 2]"), "{err}");
    }

    #[test]
    fn the_file_must_hold_exactly_the_planned_tensors() {
        let net = quote::quote!(input(1, 4, 4) conv(1 -> 2, k3) bn relu fc(3) fc(2, nobias));
        let good: &[(&str, &str, &[usize])] = &[
            ("0.weight", "F32", &[2, 1, 3, 3]),
            ("0.bias", "F16", &[2]),
            ("1.weight", "F32", &[2]),
            ("1.bias", "F32", &[2]),
            ("1.running_mean", "BF16", &[2]),
            ("1.running_var", "F64", &[2]),
            ("1.num_batches_tracked", "I64", &[]),
            ("4.weight", "F32", &[3, 8]),
            ("4.bias", "F32", &[3]),
            ("5.weight", "F32", &[2, 3]),
        ];
        let path = check_file(net.clone(), good).unwrap();
        assert!(path.ends_with(".safetensors"), "{path}");
        let mut one = good.to_vec();
        one[6] = ("1.num_batches_tracked", "I64", &[1]);
        check_file(net.clone(), &one).unwrap();

        let mut bad = good.to_vec();
        bad[0] = ("0.weight", "F32", &[2, 1, 5, 5]);
        bad[1] = ("0.bias", "F16", &[1]);
        bad[6] = ("1.num_batches_tracked", "F32", &[]);
        bad[7] = ("4.weight", "I32", &[3, 8]);
        bad.remove(9);
        bad.push(("9.weight", "F32", &[1]));
        bad.push(("0.extra", "F32", &[2]));
        let err = check_file(net, &bad).unwrap_err();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 7, "{err}");
        assert!(
            lines[0].starts_with(
                "tensor `0.weight` of layer 0 `conv(1 -> 2, k3)` has shape [2, 1, 5, 5] in `"
            ),
            "{err}"
        );
        assert!(lines[0].ends_with("`, expected [2, 1, 3, 3]"), "{err}");
        assert!(
            lines[1]
                .starts_with("tensor `0.bias` of layer 0 `conv(1 -> 2, k3)` has shape [1] in `"),
            "{err}"
        );
        assert!(lines[1].ends_with("`, expected [2]"), "{err}");
        let lines = [&lines[..1], &lines[2..]].concat();
        assert!(
            lines[1]
                .starts_with("tensor `1.num_batches_tracked` of layer 1 `bn` has dtype F32 in `"),
            "{err}"
        );
        assert!(
            lines[1].ends_with("`; expected one of I64, I32, I16, I8, U8"),
            "{err}"
        );
        assert!(
            lines[2].starts_with("tensor `4.weight` of layer 4 `fc(3)` has dtype I32 in `"),
            "{err}"
        );
        assert!(
            lines[2].ends_with("`; expected one of F32, F64, F16, BF16"),
            "{err}"
        );
        assert!(
            lines[3].contains(
                "has no tensor `5.weight` for layer 5 `fc(2, nobias)`; expected shape [2, 3]"
            ),
            "{err}"
        );
        assert!(
            lines[4].contains(
                "has an unexpected tensor `0.extra` (shape [2]); the network has no such parameter"
            ),
            "{err}"
        );
        assert!(
            lines[5].contains("has an unexpected tensor `9.weight` (shape [1])"),
            "{err}"
        );
    }
}
