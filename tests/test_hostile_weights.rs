//! Weight files from the outside world: valid safetensors files mutated every way the format can
//! break, fed to `from_safetensors`. Each one loads exactly when an independent oracle (the
//! reference `safetensors` parser, a duplicate-key scan and the network's `state_dict` table)
//! says it is a valid file for the network, and then with the oracle's values; every other file
//! is an `Err`. No case panics, and no call holds more than [`budget`] bytes at once.
//!
//! Case counts and the measured allocation figures are in docs/reliability.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use cnn::{cnn, Error, Model};
use proptest::prelude::*;
use proptest::sample::Index;
use safetensors::{Dtype, SafeTensors};

cnn! {
    /// Every kind of key: conv weight and bias, the five batch-norm entries, linear weight and bias.
    struct Small {
        input(2, 4, 4)
        conv(2 -> 3, k3) bn relu fc(2)
    }
}

/// `Small`'s `state_dict`: key and shape.
const KEYS: &[(&str, &[usize])] = &[
    ("0.weight", &[3, 2, 3, 3]),
    ("0.bias", &[3]),
    ("1.weight", &[3]),
    ("1.bias", &[3]),
    ("1.running_mean", &[3]),
    ("1.running_var", &[3]),
    ("1.num_batches_tracked", &[]),
    ("4.weight", &[2, 12]),
    ("4.bias", &[2]),
];

/// Files written by PyTorch (`safetensors.torch.save_file` of the equivalent `nn.Sequential`,
/// see docs/reliability.md), also the fuzzer's seeds.
const TORCH_FILES: &[&[u8]] = &[
    include_bytes!("../fuzz/seeds/load_weights/f32.safetensors"),
    include_bytes!("../fuzz/seeds/load_weights/f32-metadata.safetensors"),
    include_bytes!("../fuzz/seeds/load_weights/f16.safetensors"),
    include_bytes!("../fuzz/seeds/load_weights/bf16.safetensors"),
    include_bytes!("../fuzz/seeds/load_weights/f64.safetensors"),
];

/// Valid files to start from: ours and PyTorch's.
fn base(i: usize) -> Vec<u8> {
    match i.checked_sub(TORCH_FILES.len()) {
        None => TORCH_FILES[i].to_vec(),
        Some(seed) => Small::seeded(seed as u64).to_safetensors(),
    }
}

const BASES: usize = TORCH_FILES.len() + 2;

// ---------------------------------------------------------------------------------------------
// Allocation accounting: per thread, so tests running in parallel do not see each other.

struct Counting;

#[derive(Clone, Copy)]
struct Stats {
    live: isize,
    peak: isize,
}

thread_local! {
    static STATS: Cell<Stats> = const { Cell::new(Stats { live: 0, peak: 0 }) };
}

fn account(grow: usize, shrink: usize) {
    // `try_with`: allocations during thread teardown are not counted.
    let _ = STATS.try_with(|s| {
        let mut st = s.get();
        st.live += grow as isize;
        st.peak = st.peak.max(st.live);
        st.live -= shrink as isize;
        s.set(st);
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// bookkeeping touches a `const`-initialised thread local that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size(), 0);
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size(), 0);
        // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(0, layout.size());
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as if the old and the new block coexist while the data moves.
        account(new_size, layout.size());
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the most bytes it held allocated at once.
fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    STATS.with(|s| s.set(Stats { live: 0, peak: 0 }));
    let out = f();
    (out, STATS.with(|s| s.get().peak).max(0) as usize)
}

/// The most `from_safetensors` may hold at once for a file of `len` bytes.
///
/// The loader's own allocations are the decoded tensors (at most twice the data, for F16 and
/// BF16 files) and the key table. The header's JSON is parsed by `safetensors` through
/// `serde(flatten)`, which buffers every value as a 32-byte `serde` `Content` node first: a
/// header of one-byte numbers like `[0,0,0,…]` costs 16 bytes per 2 header bytes, doubled by
/// vector growth. Measured worst cases are in docs/reliability.md; none is near this bound.
fn budget(len: usize) -> usize {
    64 * len + 64 * 1024
}

/// `Small::from_safetensors`, checked against [`budget`].
fn load(bytes: &[u8]) -> Result<Small, Error> {
    let (result, peak) = peak_bytes(|| Small::from_safetensors(bytes));
    assert!(
        peak <= budget(bytes.len()),
        "held {peak} bytes loading a file of {} bytes (budget {})",
        bytes.len(),
        budget(bytes.len())
    );
    result
}

// ---------------------------------------------------------------------------------------------
// The oracle.

/// The top-level keys of a JSON object, decoded, in order. `header` is known to be valid JSON.
fn top_level_keys(header: &str) -> Vec<String> {
    let bytes = header.as_bytes();
    let (mut depth, mut i, mut keys) = (0usize, 0usize, Vec::new());
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i;
                i += 1;
                while bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && header[i + 1..].trim_start().starts_with(':') {
                    let raw = &header[start..=i];
                    keys.push(serde_json::from_str::<String>(raw).expect("a JSON string"));
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    keys
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let (e, m) = ((h >> 10) & 0x1f, (h & 0x3ff) as f32);
    sign * match e {
        0 => m * 2f32.powi(-24),
        31 if m == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        _ => (1.0 + m / 1024.0) * 2f32.powi(e as i32 - 15),
    }
}

/// What `to_safetensors` of the loaded network must hold, per key: F32 values, or the I64 of
/// `num_batches_tracked`.
#[derive(Debug, PartialEq)]
enum Saved {
    F32(Vec<f32>),
    I64(i64),
}

/// `None` when `bytes` is not a valid weight file for `Small`; else what it holds.
fn oracle(bytes: &[u8]) -> Option<BTreeMap<String, Saved>> {
    let file = SafeTensors::deserialize(bytes).ok()?;
    let n = u64::from_le_bytes(bytes[..8].try_into().ok()?) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).ok()?;
    let mut keys = top_level_keys(header);
    let total = keys.len();
    keys.sort();
    keys.dedup();
    if keys.len() != total {
        return None;
    }
    let mut names = file.names();
    names.sort();
    let mut want: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    want.sort();
    if names != want {
        return None;
    }
    let mut out = BTreeMap::new();
    for &(key, shape) in KEYS {
        let t = file.tensor(key).ok()?;
        let d = t.data();
        let saved = if key.ends_with("num_batches_tracked") {
            if !(t.shape().is_empty() || t.shape() == [1]) {
                return None;
            }
            Saved::I64(match t.dtype() {
                Dtype::I64 => i64::from_le_bytes(d.try_into().ok()?),
                Dtype::I32 => i32::from_le_bytes(d.try_into().ok()?).into(),
                Dtype::I16 => i16::from_le_bytes(d.try_into().ok()?).into(),
                Dtype::I8 => i8::from_le_bytes(d.try_into().ok()?).into(),
                Dtype::U8 => u8::from_le_bytes(d.try_into().ok()?).into(),
                _ => return None,
            })
        } else {
            if t.shape() != shape {
                return None;
            }
            let w = match t.dtype() {
                Dtype::F32 => 4,
                Dtype::F64 => 8,
                Dtype::F16 | Dtype::BF16 => 2,
                _ => return None,
            };
            Saved::F32(
                d.chunks_exact(w)
                    .map(|b| match t.dtype() {
                        Dtype::F32 => f32::from_le_bytes(b.try_into().unwrap()),
                        Dtype::F64 => f64::from_le_bytes(b.try_into().unwrap()) as f32,
                        Dtype::F16 => f16_to_f32(u16::from_le_bytes(b.try_into().unwrap())),
                        _ => {
                            f32::from_bits((u16::from_le_bytes(b.try_into().unwrap()) as u32) << 16)
                        }
                    })
                    .collect(),
            )
        };
        out.insert(key.to_string(), saved);
    }
    Some(out)
}

fn same(a: &Saved, b: &Saved) -> bool {
    match (a, b) {
        (Saved::F32(a), Saved::F32(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
        }
        _ => a == b,
    }
}

/// What the loaded network saves: every tensor, decoded.
fn saved(net: &Small) -> BTreeMap<String, Saved> {
    let bytes = net.to_safetensors();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(key, t)| {
            let d = t.data();
            let v = match t.dtype() {
                Dtype::I64 => Saved::I64(i64::from_le_bytes(d.try_into().unwrap())),
                _ => Saved::F32(
                    d.chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                ),
            };
            (key, v)
        })
        .collect()
}

/// Loads `bytes` and checks the outcome against the oracle. Returns whether it loaded.
fn check(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let got = load(bytes);
    let parsed = SafeTensors::deserialize(bytes).is_ok();
    match (oracle(bytes), got) {
        (None, Err(e)) => {
            prop_assert!(
                parsed || matches!(e, Error::Safetensors { .. }),
                "a file the reference parser rejects gave {e:?}"
            );
            prop_assert!(!e.to_string().is_empty());
            Ok(false)
        }
        (Some(want), Ok(net)) => {
            let got = saved(&net);
            prop_assert_eq!(got.len(), want.len());
            for (key, w) in &want {
                prop_assert!(same(&got[key], w), "{}: {:?} != {:?}", key, got[key], w);
            }
            Ok(true)
        }
        (None, Ok(_)) => Err(TestCaseError::fail(format!(
            "accepted an invalid file: {:?}",
            String::from_utf8_lossy(bytes)
        ))),
        (Some(_), Err(e)) => Err(TestCaseError::fail(format!(
            "rejected a valid file with {e:?}: {:?}",
            String::from_utf8_lossy(bytes)
        ))),
    }
}

fn run(bytes: &[u8]) {
    if let Err(e) = check(bytes) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// A file as a list of entries, to mutate structurally and write back with any raw JSON.

#[derive(Clone, Debug)]
struct Entry {
    /// Raw JSON, quotes included: `"0.weight"`.
    key: String,
    dtype: String,
    shape: String,
    /// `None`: the running offsets of the tensors before it.
    offsets: Option<String>,
    bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Doc {
    entries: Vec<Entry>,
    /// Raw JSON value of `__metadata__`, and whether it goes first.
    metadata: Option<(String, bool)>,
    padding: String,
    /// Bytes to cut from (negative) or add to the end of the data.
    data_delta: i64,
}

impl Doc {
    fn from_file(bytes: &[u8]) -> Doc {
        let file = SafeTensors::deserialize(bytes).unwrap();
        let mut tensors = file.tensors();
        tensors.sort_by_key(|(_, t)| t.data().as_ptr() as usize);
        let entries = tensors
            .into_iter()
            .map(|(key, t)| Entry {
                key: format!("{key:?}"),
                dtype: format!("\"{:?}\"", t.dtype()),
                shape: format!("{:?}", t.shape()),
                offsets: None,
                bytes: t.data().to_vec(),
            })
            .collect();
        Doc {
            entries,
            metadata: None,
            padding: String::new(),
            data_delta: 0,
        }
    }

    fn write(&self) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut data = Vec::new();
        for e in &self.entries {
            let offsets = e
                .offsets
                .clone()
                .unwrap_or_else(|| format!("[{},{}]", data.len(), data.len() + e.bytes.len()));
            data.extend_from_slice(&e.bytes);
            parts.push(format!(
                "{}:{{\"dtype\":{},\"shape\":{},\"data_offsets\":{offsets}}}",
                e.key, e.dtype, e.shape
            ));
        }
        if let Some((m, first)) = &self.metadata {
            let at = if *first { 0 } else { parts.len() };
            parts.insert(at, format!("\"__metadata__\":{m}"));
        }
        let header = format!("{{{}}}{}", parts.join(","), self.padding);
        if self.data_delta < 0 {
            data.truncate(
                data.len()
                    .saturating_sub(self.data_delta.unsigned_abs() as usize),
            );
        } else {
            data.extend((0..self.data_delta).map(|i| i as u8));
        }
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&data);
        out
    }
}

#[derive(Clone, Debug)]
enum Edit {
    /// Replaces one offset with a raw JSON number (or not a number).
    Offset(Index, bool, String),
    /// `[end, start]`.
    Reverse(Index),
    /// Starts a tensor where the one before it starts.
    Overlap(Index),
    /// Shifts both offsets.
    Shift(Index, i32),
    Dtype(Index, String),
    Shape(Index, String),
    /// Another entry with the same key, raw or spelt with escapes, pointing at the same bytes
    /// or at new ones.
    Duplicate(Index, bool, bool),
    Remove(Index),
    Rename(Index, String),
    Extra(String, u8),
    /// Re-encodes a tensor validly in another dtype with random values.
    Recode(Index, Dtype, u64),
    Swap(Index, Index),
    Metadata(String, bool),
    Padding(String),
    DataDelta(i64),
}

/// `"0.weight"` with every character a `\u` escape, the same key to a JSON parser.
fn escaped(raw_key: &str) -> String {
    let key: String = serde_json::from_str(raw_key).unwrap();
    let body: String = key
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    format!("\"{body}\"")
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 32) as u8
        })
        .collect()
}

impl Edit {
    fn apply(&self, doc: &mut Doc) {
        if doc.entries.is_empty() && !matches!(self, Edit::Extra(..) | Edit::Metadata(..)) {
            return;
        }
        let n = doc.entries.len();
        // Materialises the running offsets of every entry, so edits can refer to them.
        let resolve = |doc: &mut Doc| {
            let mut at = 0;
            for e in &mut doc.entries {
                let end = at + e.bytes.len();
                e.offsets.get_or_insert_with(|| format!("[{at},{end}]"));
                at = end;
            }
        };
        let range = |e: &Entry| -> (String, String) {
            let inner = e.offsets.as_ref().unwrap();
            let inner = inner.trim_start_matches('[').trim_end_matches(']');
            let (a, b) = inner.split_once(',').unwrap_or((inner, ""));
            (a.to_string(), b.to_string())
        };
        match self {
            Edit::Offset(i, end, v) => {
                resolve(doc);
                let e = &mut doc.entries[i.index(n)];
                let (a, b) = range(e);
                e.offsets = Some(if *end {
                    format!("[{a},{v}]")
                } else {
                    format!("[{v},{b}]")
                });
            }
            Edit::Reverse(i) => {
                resolve(doc);
                let e = &mut doc.entries[i.index(n)];
                let (a, b) = range(e);
                e.offsets = Some(format!("[{b},{a}]"));
            }
            Edit::Overlap(i) => {
                resolve(doc);
                let i = i.index(n).max(1).min(n - 1);
                if i == 0 {
                    return;
                }
                let (prev, _) = range(&doc.entries[i - 1]);
                let (_, end) = range(&doc.entries[i]);
                doc.entries[i].offsets = Some(format!("[{prev},{end}]"));
            }
            Edit::Shift(i, by) => {
                resolve(doc);
                let e = &mut doc.entries[i.index(n)];
                let (a, b) = range(e);
                let shift = |s: String| match s.parse::<i64>() {
                    Ok(v) => (v + *by as i64).to_string(),
                    Err(_) => s,
                };
                e.offsets = Some(format!("[{},{}]", shift(a), shift(b)));
            }
            Edit::Dtype(i, d) => doc.entries[i.index(n)].dtype = d.clone(),
            Edit::Shape(i, s) => doc.entries[i.index(n)].shape = s.clone(),
            Edit::Duplicate(i, escape, same_bytes) => {
                resolve(doc);
                let mut e = doc.entries[i.index(n)].clone();
                if *escape {
                    e.key = escaped(&e.key);
                }
                if !same_bytes {
                    let at: usize = doc.entries.iter().map(|e| e.bytes.len()).sum();
                    e.offsets = Some(format!("[{at},{}]", at + e.bytes.len()));
                } else {
                    e.bytes.clear();
                }
                doc.entries.push(e);
            }
            Edit::Remove(i) => {
                doc.entries.remove(i.index(n));
            }
            Edit::Rename(i, k) => doc.entries[i.index(n)].key = k.clone(),
            Edit::Extra(key, len) => doc.entries.push(Entry {
                key: key.clone(),
                dtype: "\"F32\"".into(),
                shape: format!("[{len}]"),
                offsets: None,
                bytes: vec![0; *len as usize * 4],
            }),
            Edit::Recode(i, dtype, seed) => {
                let e = &mut doc.entries[i.index(n)];
                let Ok(shape) = serde_json::from_str::<Vec<usize>>(&e.shape) else {
                    return;
                };
                let Some(numel) = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
                    return;
                };
                let width = dtype.bitsize() / 8;
                if numel > 1 << 16 || width == 0 {
                    return;
                }
                e.dtype = format!("\"{dtype:?}\"");
                e.bytes = random_bytes(numel * width, *seed);
            }
            Edit::Swap(i, j) => doc.entries.swap(i.index(n), j.index(n)),
            Edit::Metadata(m, first) => doc.metadata = Some((m.clone(), *first)),
            Edit::Padding(p) => doc.padding = p.clone(),
            Edit::DataDelta(d) => doc.data_delta = *d,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.

/// Raw JSON where a number belongs: small, huge, near `u64::MAX`, past it, negative, fractional
/// or not a number at all.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u64..1200).prop_map(|n| n.to_string()),
        2 => any::<u64>().prop_map(|n| n.to_string()),
        2 => (0u64..16).prop_map(|k| (u64::MAX - k).to_string()),
        2 => (0u32..64).prop_map(|b| (1u64 << b).to_string()),
        1 => prop::sample::select(vec![
            "18446744073709551616",
            "340282366920938463463374607431768211456",
            "-1",
            "-0",
            "1.0",
            "4e2",
            "1e400",
            "0x10",
            "null",
            "\"12\"",
            "true",
            "[]",
        ])
        .prop_map(String::from),
    ]
}

/// A shape: the right one, another small one, or one whose element count overflows.
fn shape() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::collection::vec(0usize..5, 0..5).prop_map(|d| format!("{d:?}")),
        2 => prop::sample::select(vec![
            "[4294967296,4294967296]",
            "[18446744073709551615,2]",
            "[4611686018427387904,4]",
            "[2305843009213693952]",
            "[18446744073709551615]",
            "[0,18446744073709551615]",
            "[3,2,3,3,0]",
            "[3,2,3,3,1]",
            "[1,3]",
            "[12,2]",
            "[]",
            "[1]",
            "3",
            "null",
            "[-3]",
            "[3.0]",
            "{}",
        ])
        .prop_map(String::from),
        1 => prop::collection::vec(number(), 0..4).prop_map(|d| format!("[{}]", d.join(","))),
    ]
}

const DTYPES: &[&str] = &[
    "BOOL",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
    "U8",
    "I8",
    "F8_E5M2",
    "F8_E4M3",
    "F8_E8M0",
    "F8_E4M3FNUZ",
    "F8_E5M2FNUZ",
    "I16",
    "U16",
    "F16",
    "BF16",
    "I32",
    "U32",
    "F32",
    "C64",
    "F64",
    "I64",
    "U64",
];

/// A dtype: any the format knows, or something that is not one.
fn dtype() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(DTYPES).prop_map(|d| format!("\"{d}\"")),
        1 => prop::sample::select(vec![
            "\"f32\"",
            "\"F33\"",
            "\"\"",
            "\"F32 \"",
            "\"\\u0046\\u0033\\u0032\"",
            "32",
            "null",
            "[\"F32\"]",
        ])
        .prop_map(String::from),
    ]
}

/// A key: one of ours, a near miss, the same key spelt with escapes, or anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(KEYS).prop_map(|(k, _)| format!("\"{k}\"")),
        1 => prop::sample::select(KEYS).prop_map(|(k, _)| escaped(&format!("\"{k}\""))),
        2 => prop::sample::select(vec![
            "\"0.weight \"",
            "\"0.Weight\"",
            "\"00.weight\"",
            "\"0.weight\\u0000\"",
            "\"\"",
            "\"__metadata__\"",
            "\"0\u{2024}weight\"",
            "\"2.weight\"",
            "\"3.weight\"",
            "\"1.num_batches_tracked\"",
        ])
        .prop_map(String::from),
        1 => "[0-9a-z._]{0,12}".prop_map(|k| format!("\"{k}\"")),
    ]
}

fn metadata() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "{\"format\":\"pt\"}",
        "{}",
        "null",
        "{\"a\":1}",
        "\"pt\"",
        "[]",
        "{\"format\":\"pt\",\"format\":\"np\"}",
        "{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}",
    ])
    .prop_map(String::from)
}

fn edit() -> impl Strategy<Value = Edit> {
    let float = prop::sample::select(vec![Dtype::F32, Dtype::F64, Dtype::F16, Dtype::BF16]);
    let int = prop::sample::select(vec![
        Dtype::I64,
        Dtype::I32,
        Dtype::I16,
        Dtype::I8,
        Dtype::U8,
    ]);
    prop_oneof![
        3 => (any::<Index>(), any::<bool>(), number()).prop_map(|(i, e, v)| Edit::Offset(i, e, v)),
        1 => any::<Index>().prop_map(Edit::Reverse),
        1 => any::<Index>().prop_map(Edit::Overlap),
        1 => (any::<Index>(), -9i32..9).prop_map(|(i, by)| Edit::Shift(i, by)),
        2 => (any::<Index>(), dtype()).prop_map(|(i, d)| Edit::Dtype(i, d)),
        2 => (any::<Index>(), shape()).prop_map(|(i, s)| Edit::Shape(i, s)),
        2 => (any::<Index>(), any::<bool>(), any::<bool>())
            .prop_map(|(i, e, s)| Edit::Duplicate(i, e, s)),
        1 => any::<Index>().prop_map(Edit::Remove),
        1 => (any::<Index>(), key()).prop_map(|(i, k)| Edit::Rename(i, k)),
        1 => (key(), 0u8..4).prop_map(|(k, n)| Edit::Extra(k, n)),
        3 => (any::<Index>(), prop_oneof![float, int], any::<u64>())
            .prop_map(|(i, d, s)| Edit::Recode(i, d, s)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(i, j)| Edit::Swap(i, j)),
        1 => (metadata(), any::<bool>()).prop_map(|(m, f)| Edit::Metadata(m, f)),
        1 => prop::sample::select(vec!["", "        ", "\n\t ", " x", "\0", "}"])
            .prop_map(|p| Edit::Padding(p.into())),
        1 => (-9i64..9).prop_map(Edit::DataDelta),
    ]
}

/// Bytes where JSON tokens are likely, to get past the first character of the parser.
fn json_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"",
        "0",
        "-1",
        "1e999",
        "true",
        "null",
        "\"dtype\"",
        "\"F32\"",
        "\"shape\"",
        "\"data_offsets\"",
        "\"0.bias\"",
        "\"__metadata__\"",
        "\\",
        "\\u",
        "\\ud800",
        " ",
        "\u{e9}",
        "\u{1F600}",
    ]);
    prop::collection::vec(token, 0..64).prop_map(|t| t.concat().into_bytes())
}

/// A header-length prefix (right, or off by a little or a lot) followed by `header` and `data`.
fn framed(header: Vec<u8>, data: Vec<u8>, fix: Option<u64>) -> Vec<u8> {
    let n = fix.unwrap_or(header.len() as u64);
    let mut out = n.to_le_bytes().to_vec();
    out.extend(header);
    out.extend(data);
    out
}

fn header_and_data(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (bytes[8..8 + n].to_vec(), bytes[8 + n..].to_vec())
}

/// Cases per property; their sum is the total in docs/reliability.md.
const BYTE_CASES: u32 = 6000;
const LENGTH_CASES: u32 = 2000;
const STRUCTURE_CASES: u32 = 10_000;
const JUNK_CASES: u32 = 4000;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(BYTE_CASES))]

    /// One to four bytes flipped, set, inserted or deleted anywhere, mostly in the header.
    #[test]
    fn test_byte_edits(
        b in 0..BASES,
        edits in prop::collection::vec((any::<Index>(), any::<bool>(), 0u8..4, 1u8..=255), 1..5),
    ) {
        let mut bytes = base(b);
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for (at, in_header, op, v) in edits {
            let at = if in_header { at.index(header_end) } else { at.index(bytes.len()) };
            match op {
                0 => bytes[at] ^= v,
                1 => bytes[at] = v,
                2 => bytes.insert(at, v),
                _ => { bytes.remove(at); }
            }
        }
        check(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(LENGTH_CASES))]

    /// The 8-byte header length: past the file, near `u64::MAX`, over the 100 MB header limit,
    /// or a little off.
    #[test]
    fn test_header_length(
        b in 0..BASES,
        n in prop_oneof![
            (-24i64..24).prop_map(|d| d as u64),
            any::<u64>(),
            (0u64..64).prop_map(|k| u64::MAX - k),
            (0u32..64).prop_map(|s| 1u64 << s),
            (99_999_990u64..100_000_010),
        ],
        relative in any::<bool>(),
    ) {
        let mut bytes = base(b);
        let real = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let n = if relative { real.wrapping_add(n) } else { n };
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        let loaded = check(&bytes)?;
        prop_assert_eq!(loaded, n == real);
    }
}

proptest! {
    #![proptest_config(config(STRUCTURE_CASES))]

    /// Offsets out of range, reversed or overlapping; wrong dtypes; overflowing shapes;
    /// duplicate, missing, extra and renamed keys; metadata; padding; short or long data; and
    /// valid re-encodings in F64, F16, BF16 and small integers, which must load.
    #[test]
    fn test_structure(b in 0..BASES, edits in prop::collection::vec(edit(), 1..4)) {
        let mut doc = Doc::from_file(&base(b));
        for e in &edits {
            e.apply(&mut doc);
        }
        check(&doc.write())?;
    }
}

proptest! {
    #![proptest_config(config(JUNK_CASES))]

    /// Headers that are not JSON, not UTF-8, or a valid header with invalid UTF-8 spliced in.
    #[test]
    fn test_junk_headers(
        b in 0..BASES,
        kind in 0u8..4,
        soup in json_soup(),
        raw in prop::collection::vec(any::<u8>(), 0..96),
        at in any::<Index>(),
        bad in prop::sample::select(vec![
            &[0xff][..], &[0xc0, 0x80], &[0xed, 0xa0, 0x80], &[0xf4, 0x90, 0x80, 0x80],
            &[0xe2, 0x82], &[0x80], &[0xfe, 0xfe],
        ]),
    ) {
        let (header, data) = header_and_data(&base(b));
        let bytes = match kind {
            0 => framed(soup, data, None),
            1 => framed(raw, data, None),
            2 => {
                let mut h = header;
                let at = at.index(h.len());
                h.splice(at..at, bad.iter().copied());
                framed(h, data, None)
            }
            _ => {
                let mut h = b"{\"0.bias\":".to_vec();
                h.extend(soup);
                framed(h, data, None)
            }
        };
        prop_assert!(!check(&bytes)?);
    }
}

// ---------------------------------------------------------------------------------------------
// Exhaustive and hand-written cases.

/// Every prefix of every base file is an error; the whole file loads.
#[test]
fn test_every_truncation() {
    for b in 0..BASES {
        let bytes = base(b);
        for len in 0..bytes.len() {
            match load(&bytes[..len]) {
                Err(Error::Safetensors { .. }) => {}
                other => panic!("base {b}, length {len} of {}: {other:?}", bytes.len()),
            }
        }
        run(&bytes);
        assert!(load(&bytes).is_ok(), "base {b}");
    }
}

fn header_file(header: &str, data: &[u8]) -> Vec<u8> {
    framed(header.as_bytes().to_vec(), data.to_vec(), None)
}

/// Two entries for one key: the format forbids it, and parsers that keep the last one let a
/// file mean different tensors to different readers.
#[test]
fn test_duplicate_keys_are_rejected() {
    let good = Small::seeded(3).to_safetensors();
    let (header, data) = header_and_data(&good);
    let header = String::from_utf8(header).unwrap();
    let bias = r#""0.bias":{"dtype":"F32","shape":[3],"data_offsets":[216,228]}"#;
    assert!(header.contains(bias), "{header}");
    let cases = [
        // The same entry twice.
        header.replacen(bias, &format!("{bias},{bias}"), 1),
        // The same key spelt with escapes.
        header.replacen(
            bias,
            &format!("{bias},{}", bias.replacen("0.bias", "0\\u002ebias", 1)),
            1,
        ),
        // Read as 12 bytes of U8 first, as F32 second.
        header.replacen(
            bias,
            &format!(r#""0.bias":{{"dtype":"U8","shape":[12],"data_offsets":[216,228]}},{bias}"#),
            1,
        ),
    ];
    for h in &cases {
        let bytes = header_file(h, &data);
        assert!(
            SafeTensors::deserialize(&bytes).is_ok(),
            "the reference parser accepts {h}"
        );
        match load(&bytes) {
            Err(Error::Safetensors { reason }) => assert!(reason.contains("duplicate"), "{reason}"),
            other => panic!("{h}: {other:?}"),
        }
        run(&bytes);
    }
}

/// Headers that make the JSON parser allocate the most per byte, and deep nesting. Counts of
/// 2^14 + 1 land just past a vector's doubling, where growth holds the most spare capacity.
#[test]
fn test_adversarial_headers() {
    const N: usize = (1 << 14) + 1;
    let repeat = |unit: &str, n: usize| unit.repeat(n);
    let numbered = |unit: &str| {
        (0..N)
            .map(|i| unit.replace('#', &i.to_string()))
            .collect::<String>()
    };
    let cases = [
        format!("{{{}\"a\":0}}", repeat("\"\":0,", N)),
        format!(
            "{{\"a\":{{\"dtype\":\"F32\",\"shape\":[{}0],\"data_offsets\":[0,0]}}}}",
            repeat("0,", N)
        ),
        format!("{{\"a\":[{}[]]}}", repeat("[],", N)),
        format!("{{\"a\":{{{}\"\":0}}}}", repeat("\"\":0,", N)),
        format!(
            "{{\"__metadata__\":{{{}\"\":\"\"}}}}",
            numbered("\"#\":\"\",")
        ),
        format!("{{\"a\":{}{}}}", repeat("[", 100_000), repeat("]", 100_000)),
        format!("{{\"{}\":0}}", repeat("\\u0041", N)),
        format!(
            "{{{}\"z\":{{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,0]}}}}",
            numbered("\"#\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},")
        ),
    ];
    for h in &cases {
        let bytes = header_file(h, &[]);
        let (result, peak) = peak_bytes(|| Small::from_safetensors(&bytes));
        eprintln!(
            "{:>7} bytes, peak {peak:>8} ({:>4.1}x): {:.32}… {:?}",
            bytes.len(),
            peak as f64 / bytes.len() as f64,
            h,
            result.as_ref().err()
        );
        assert!(result.is_err(), "{h:.40}");
        run(&bytes);
    }
}

/// Hand-written cases of each class, with the error the loader names.
#[test]
fn test_hand_written_cases() {
    let f32s = |n: usize| vec![0u8; 4 * n];
    let t = |key: &str, dtype: &str, shape: &str, s: u64, e: u64| {
        format!(r#""{key}":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[{s},{e}]}}"#)
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            header_file(
                &format!("{{{}}}", t("0.bias", "F32", "[3]", 0, 13)),
                &f32s(3),
            ),
            "offset",
        ),
        (
            header_file(
                &format!("{{{}}}", t("0.bias", "F32", "[3]", 12, 0)),
                &f32s(3),
            ),
            "offset",
        ),
        (
            header_file(
                &format!("{{{}}}", t("0.bias", "F32", "[3]", 0, u64::MAX)),
                &f32s(3),
            ),
            "offset",
        ),
        (
            header_file(
                &format!(
                    "{{{},{}}}",
                    t("0.bias", "F32", "[3]", 0, 12),
                    t("1.bias", "F32", "[3]", 0, 12)
                ),
                &f32s(3),
            ),
            "offset",
        ),
        (
            header_file(
                &format!(
                    "{{{}}}",
                    t("0.bias", "F32", "[4294967296,4294967296]", 0, 0)
                ),
                &[],
            ),
            "overflow",
        ),
        (
            header_file(
                &format!("{{{}}}", t("0.bias", "F32", "[4611686018427387904]", 0, 0)),
                &[],
            ),
            "overflow",
        ),
        (
            header_file(&format!("{{{}}}", t("0.bias", "F4", "[3]", 0, 2)), &[0, 0]),
            "byte boundary",
        ),
        (
            header_file(
                &format!("{{{}}}", t("0.bias", "F33", "[3]", 0, 12)),
                &f32s(3),
            ),
            "unknown variant",
        ),
        (header_file("{\"0.bias\":", &[]), "EOF"),
        (framed(b"{\"\xff\":0}".to_vec(), vec![], None), "utf-8"),
        (framed(b"{}".to_vec(), vec![], Some(u64::MAX)), "header"),
        (framed(b"{}".to_vec(), vec![], Some(1 << 63)), "header"),
        (framed(b"{}".to_vec(), vec![], Some(100_000_001)), "header"),
        (framed(b"{}".to_vec(), vec![], Some(3)), "header"),
    ];
    for (bytes, part) in &cases {
        match load(bytes) {
            Err(Error::Safetensors { reason }) => assert!(
                reason.to_lowercase().contains(&part.to_lowercase()),
                "{part:?} not in {reason:?} for {:?}",
                String::from_utf8_lossy(bytes)
            ),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
        run(bytes);
    }
}
