//! Strict safetensors loading: every missing, extra, mis-shaped or mistyped tensor is an error
//! naming the key, half and double precision are converted, malformed bytes are an `Err` and
//! never a panic, and `to_safetensors` round-trips exactly.

use std::collections::HashMap;

use cnn::ndarray::Array4;
use cnn::{cnn, Error, Model};
use safetensors::{serialize, tensor::TensorView, Dtype, SafeTensors};

cnn! {
    /// One conv, one batch norm and one linear layer: every kind of key.
    struct Net {
        input(2, 4, 4)
        conv(2 -> 3, k3) bn relu fc(2)
    }
    /// A batch norm that keeps no running statistics.
    struct NoStats {
        input(2, 4, 4)
        conv(2 -> 3, k3) bn(track_running_stats=false)
    }
}

/// A tensor to write: key, dtype, shape and the values as f64 (converted to the dtype).
struct T {
    key: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    values: Vec<f64>,
}

/// Multiples of 1/8 in [-2, 2]: exact in F16, BF16, F32 and F64.
fn exact_values(len: usize, seed: usize) -> Vec<f64> {
    (0..len)
        .map(|i| ((i * 7 + seed * 5) % 33) as f64 / 8.0 - 2.0)
        .collect()
}

/// `Net`'s `state_dict` in PyTorch's shapes, with F32 floats.
fn net_tensors() -> Vec<T> {
    let t = |key, shape: Vec<usize>, seed| {
        let len = shape.iter().product();
        T {
            key,
            dtype: Dtype::F32,
            shape,
            values: exact_values(len, seed),
        }
    };
    let mut var = t("1.running_var", vec![3], 0);
    var.values = vec![0.5, 1.25, 2.0];
    vec![
        t("0.weight", vec![3, 2, 3, 3], 1),
        t("0.bias", vec![3], 2),
        t("1.weight", vec![3], 3),
        t("1.bias", vec![3], 4),
        t("1.running_mean", vec![3], 5),
        var,
        T {
            key: "1.num_batches_tracked",
            dtype: Dtype::I64,
            shape: vec![],
            values: vec![12345.0],
        },
        t("4.weight", vec![2, 12], 6),
        t("4.bias", vec![2], 7),
    ]
}

/// IEEE binary16 bits of `v`, which must be exactly representable as a normal half or zero.
fn f16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    if v == 0.0 {
        return sign;
    }
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    assert!((1..31).contains(&exp), "{v} is not a normal half");
    assert_eq!(bits & 0x1fff, 0, "{v} is not exact in half precision");
    sign | ((exp as u16) << 10) | ((bits >> 13) & 0x3ff) as u16
}

/// bfloat16 bits of `v`, which must be exact in bfloat16.
fn bf16_bits(v: f32) -> u16 {
    assert_eq!(v.to_bits() & 0xffff, 0, "{v} is not exact in bfloat16");
    (v.to_bits() >> 16) as u16
}

fn encode(dtype: Dtype, values: &[f64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| match dtype {
            Dtype::F64 => v.to_le_bytes().to_vec(),
            Dtype::F32 => (v as f32).to_le_bytes().to_vec(),
            Dtype::F16 => f16_bits(v as f32).to_le_bytes().to_vec(),
            Dtype::BF16 => bf16_bits(v as f32).to_le_bytes().to_vec(),
            Dtype::I64 => (v as i64).to_le_bytes().to_vec(),
            Dtype::I8 => (v as i8).to_le_bytes().to_vec(),
            other => panic!("no encoder for {other:?}"),
        })
        .collect()
}

/// A safetensors file written by the reference `safetensors` crate.
fn file(tensors: &[T]) -> Vec<u8> {
    file_with_raw(tensors, "", Dtype::F32, &[])
}

/// Like [`file`], with the tensor `key` stored as the raw `bytes` of `dtype`.
fn file_with_raw(tensors: &[T], key: &str, dtype: Dtype, bytes: &[u8]) -> Vec<u8> {
    let encoded: Vec<Vec<u8>> = tensors.iter().map(|t| encode(t.dtype, &t.values)).collect();
    let views = tensors.iter().zip(&encoded).map(|(t, b)| {
        let (dtype, b) = if t.key == key {
            (dtype, bytes)
        } else {
            (t.dtype, b.as_slice())
        };
        let view = TensorView::new(dtype, t.shape.clone(), b).expect("consistent test tensor");
        (t.key, view)
    });
    serialize(views, None).unwrap()
}

fn with(mut tensors: Vec<T>, key: &str, edit: impl FnOnce(&mut T)) -> Vec<T> {
    edit(tensors.iter_mut().find(|t| t.key == key).expect("key"));
    tensors
}

fn input(n: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, 2, 4, 4), |(s, c, y, x)| {
        ((s * 37 + c * 11 + y * 5 + x * 3) % 17) as f32 / 4.0 - 2.0
    })
}

fn bits(a: &[f32]) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// `Net` computed in f64 from the tensors as written: conv, batch norm (eps 1e-5, running
/// statistics), ReLU, flatten, linear.
fn reference(tensors: &[T], x: &Array4<f32>) -> Vec<f64> {
    let get = |key: &str| &tensors.iter().find(|t| t.key == key).expect(key).values;
    let (w, b) = (get("0.weight"), get("0.bias"));
    let (gamma, beta, mean, var) = (
        get("1.weight"),
        get("1.bias"),
        get("1.running_mean"),
        get("1.running_var"),
    );
    let (fw, fb) = (get("4.weight"), get("4.bias"));
    let mut out = Vec::new();
    for s in 0..x.shape()[0] {
        let mut features = Vec::new();
        for o in 0..3 {
            for y in 0..2 {
                for xo in 0..2 {
                    let mut acc = b[o];
                    for c in 0..2 {
                        for i in 0..3 {
                            for j in 0..3 {
                                acc += w[((o * 2 + c) * 3 + i) * 3 + j]
                                    * x[[s, c, y + i, xo + j]] as f64;
                            }
                        }
                    }
                    let bn = (acc - mean[o]) / (var[o] + 1e-5).sqrt() * gamma[o] + beta[o];
                    features.push(bn.max(0.0));
                }
            }
        }
        for o in 0..2 {
            let dot: f64 = (0..12).map(|i| fw[o * 12 + i] * features[i]).sum();
            out.push(fb[o] + dot);
        }
    }
    out
}

/// The file's values land where PyTorch's keys say: the output is the f64 network computed
/// from the same tensors.
#[test]
fn test_reference_file_loads() {
    let tensors = net_tensors();
    let net = Net::from_safetensors(&file(&tensors)).unwrap();
    let x = input(2);
    let out = net.forward_batch(x.view()).unwrap();
    assert_eq!(out.shape(), [2, 2]);
    let want = reference(&tensors, &x);
    for (got, want) in out.iter().zip(&want) {
        assert!(
            (*got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "got {out:?}, f64 gives {want:?}"
        );
    }
    // A swapped pair of running statistics changes the output: the test sees the keys.
    let swapped = with(net_tensors(), "1.running_var", |t| t.values.reverse());
    let other = Net::from_safetensors(&file(&swapped)).unwrap();
    let out2 = other.forward_batch(x.view()).unwrap();
    assert_ne!(out, out2);
    let want2 = reference(&swapped, &x);
    for (got, want) in out2.iter().zip(&want2) {
        assert!((*got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()));
    }
}

#[test]
fn test_header_metadata_is_not_a_tensor() {
    // `safetensors.torch.save_model` and `transformers` write `{"format": "pt"}`.
    let tensors = net_tensors();
    let encoded: Vec<Vec<u8>> = tensors.iter().map(|t| encode(t.dtype, &t.values)).collect();
    let views = tensors.iter().zip(&encoded).map(|(t, b)| {
        let view = TensorView::new(t.dtype, t.shape.clone(), b).unwrap();
        (t.key, view)
    });
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = serialize(views, Some(metadata)).unwrap();
    assert!(SafeTensors::read_metadata(&bytes)
        .unwrap()
        .1
        .metadata()
        .is_some());
    let net = Net::from_safetensors(&bytes).unwrap();
    assert_eq!(net, Net::from_safetensors(&file(&tensors)).unwrap());
}

#[test]
fn test_missing_tensor() {
    let mut tensors = net_tensors();
    tensors.retain(|t| t.key != "1.running_var");
    let err = Net::from_safetensors(&file(&tensors)).unwrap_err();
    assert_eq!(
        err,
        Error::MissingTensor {
            key: "1.running_var".into()
        }
    );
    assert!(err.to_string().contains("`1.running_var`"), "{err}");
}

#[test]
fn test_missing_num_batches_tracked() {
    let mut tensors = net_tensors();
    tensors.retain(|t| t.key != "1.num_batches_tracked");
    assert_eq!(
        Net::from_safetensors(&file(&tensors)),
        Err(Error::MissingTensor {
            key: "1.num_batches_tracked".into()
        })
    );
}

#[test]
fn test_unexpected_tensor() {
    let mut tensors = net_tensors();
    tensors.push(T {
        key: "9.weight",
        dtype: Dtype::F32,
        shape: vec![2],
        values: vec![1.0, 2.0],
    });
    let err = Net::from_safetensors(&file(&tensors)).unwrap_err();
    assert_eq!(
        err,
        Error::UnexpectedTensor {
            key: "9.weight".into()
        }
    );
    assert!(err.to_string().contains("`9.weight`"), "{err}");
}

#[test]
fn test_running_stats_without_tracking_are_unexpected() {
    let mut tensors: Vec<T> = net_tensors()
        .into_iter()
        .filter(|t| t.key.starts_with("0.") || t.key.starts_with("1."))
        .collect();
    tensors.retain(|t| t.key != "1.running_mean" && t.key != "1.running_var");
    assert_eq!(
        NoStats::from_safetensors(&file(&tensors)),
        Err(Error::UnexpectedTensor {
            key: "1.num_batches_tracked".into()
        })
    );
    tensors.retain(|t| t.key != "1.num_batches_tracked");
    assert!(NoStats::from_safetensors(&file(&tensors)).is_ok());
}

#[test]
fn test_wrong_shape() {
    let tensors = with(net_tensors(), "0.weight", |t| t.shape = vec![3, 2, 9]);
    let err = Net::from_safetensors(&file(&tensors)).unwrap_err();
    assert_eq!(
        err,
        Error::ShapeMismatch {
            key: "0.weight".into(),
            expected: vec![3, 2, 3, 3],
            found: vec![3, 2, 9],
        }
    );
    let msg = err.to_string();
    for part in ["`0.weight`", "[3, 2, 3, 3]", "[3, 2, 9]"] {
        assert!(msg.contains(part), "{msg:?} lacks {part}");
    }
}

#[test]
fn test_transposed_linear_weight() {
    let tensors = with(net_tensors(), "4.weight", |t| t.shape = vec![12, 2]);
    let err = Net::from_safetensors(&file(&tensors)).unwrap_err();
    assert_eq!(
        err,
        Error::ShapeMismatch {
            key: "4.weight".into(),
            expected: vec![2, 12],
            found: vec![12, 2],
        }
    );
    let msg = err.to_string();
    for part in ["`4.weight`", "[2, 12]", "[12, 2]"] {
        assert!(msg.contains(part), "{msg:?} lacks {part}");
    }
}

#[test]
fn test_num_batches_tracked_with_a_vector_shape() {
    let tensors = with(net_tensors(), "1.num_batches_tracked", |t| {
        t.shape = vec![2];
        t.values = vec![1.0, 2.0];
    });
    let err = Net::from_safetensors(&file(&tensors)).unwrap_err();
    assert_eq!(
        err,
        Error::ShapeMismatch {
            key: "1.num_batches_tracked".into(),
            expected: vec![],
            found: vec![2],
        }
    );
    let msg = err.to_string();
    for part in ["`1.num_batches_tracked`", "[]", "[2]"] {
        assert!(msg.contains(part), "{msg:?} lacks {part}");
    }
}

#[test]
fn test_integer_weight_is_a_dtype_error() {
    let tensors = with(net_tensors(), "0.weight", |t| t.dtype = Dtype::I8);
    let err = Net::from_safetensors(&file(&tensors)).unwrap_err();
    match &err {
        Error::Dtype {
            key,
            expected,
            found,
        } => {
            assert_eq!(key, "0.weight");
            assert_eq!(found, "I8");
            assert!(expected.contains("F32"), "{expected}");
        }
        other => panic!("expected Error::Dtype, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("`0.weight`") && msg.contains("I8"), "{msg}");
}

#[test]
fn test_float_num_batches_tracked_is_a_dtype_error() {
    let tensors = with(net_tensors(), "1.num_batches_tracked", |t| {
        t.dtype = Dtype::F32
    });
    let err = Net::from_safetensors(&file(&tensors)).unwrap_err();
    match &err {
        Error::Dtype {
            key,
            expected,
            found,
        } => {
            assert_eq!(key, "1.num_batches_tracked");
            assert_eq!(found, "F32");
            assert!(expected.contains("I64"), "{expected}");
        }
        other => panic!("expected Error::Dtype, got {other:?}"),
    }
    assert!(err.to_string().contains("`1.num_batches_tracked`"), "{err}");
}

fn all_floats_as(dtype: Dtype) -> Vec<T> {
    let mut tensors = net_tensors();
    for t in &mut tensors {
        if t.dtype == Dtype::F32 {
            t.dtype = dtype;
        }
    }
    tensors
}

#[test]
fn test_half_precision_is_converted() {
    let reference = Net::from_safetensors(&file(&net_tensors())).unwrap();
    for dtype in [Dtype::F16, Dtype::BF16] {
        let net = Net::from_safetensors(&file(&all_floats_as(dtype))).unwrap();
        assert_eq!(net, reference, "{dtype:?}");
    }
}

#[test]
fn test_half_precision_special_values() {
    // 1, −2, the largest half 65504, the smallest subnormal 2^−24, −0 and +∞.
    let halves: [(u16, f32); 6] = [
        (0x3c00, 1.0),
        (0xc000, -2.0),
        (0x7bff, 65504.0),
        (0x0001, 2f32.powi(-24)),
        (0x8000, -0.0),
        (0x7c00, f32::INFINITY),
    ];
    for chunk in halves.chunks(3) {
        let raw: Vec<u8> = chunk.iter().flat_map(|(h, _)| h.to_le_bytes()).collect();
        let bytes = file_with_raw(&net_tensors(), "0.bias", Dtype::F16, &raw);
        let saved = Net::from_safetensors(&bytes).unwrap().to_safetensors();
        let saved = SafeTensors::deserialize(&saved).unwrap();
        let bias = saved.tensor("0.bias").unwrap();
        assert_eq!(bias.dtype(), Dtype::F32);
        let want: Vec<u8> = chunk.iter().flat_map(|(_, f)| f.to_le_bytes()).collect();
        assert_eq!(bias.data(), want, "{chunk:?}");
    }
}

#[test]
fn test_double_precision_is_rounded_to_f32() {
    let thirds = |len: usize, seed: usize| -> Vec<f64> {
        (0..len)
            .map(|i| ((i + seed) as f64 - 7.0) / 3.0 + 1e-9)
            .collect()
    };
    let mut doubles = net_tensors();
    for (i, t) in doubles.iter_mut().enumerate() {
        if t.dtype == Dtype::F32 && t.key != "1.running_var" {
            t.values = thirds(t.values.len(), i);
        }
    }
    let singles: Vec<T> = doubles
        .iter()
        .map(|t| T {
            key: t.key,
            dtype: t.dtype,
            shape: t.shape.clone(),
            values: t.values.iter().map(|&v| v as f32 as f64).collect(),
        })
        .collect();
    for t in &mut doubles {
        if t.dtype == Dtype::F32 {
            t.dtype = Dtype::F64;
        }
    }
    let from_f64 = Net::from_safetensors(&file(&doubles)).unwrap();
    let from_f32 = Net::from_safetensors(&file(&singles)).unwrap();
    assert_eq!(from_f64, from_f32);
}

#[test]
fn test_num_batches_tracked_i64_scalar_is_kept() {
    let net = Net::from_safetensors(&file(&net_tensors())).unwrap();
    let saved = net.to_safetensors();
    let saved = SafeTensors::deserialize(&saved).unwrap();
    let t = saved.tensor("1.num_batches_tracked").unwrap();
    assert_eq!(t.dtype(), Dtype::I64);
    assert_eq!(t.shape(), [0usize; 0]);
    assert_eq!(t.data(), 12345i64.to_le_bytes());
}

#[test]
fn test_num_batches_tracked_of_shape_one_is_accepted() {
    let tensors = with(net_tensors(), "1.num_batches_tracked", |t| {
        t.shape = vec![1]
    });
    let net = Net::from_safetensors(&file(&tensors)).unwrap();
    assert_eq!(net, Net::from_safetensors(&file(&net_tensors())).unwrap());
}

#[test]
fn test_every_truncation_is_an_error() {
    let bytes = file(&net_tensors());
    for len in 0..bytes.len() {
        match Net::from_safetensors(&bytes[..len]) {
            Err(Error::Safetensors { .. }) => {}
            other => panic!("length {len} of {}: {other:?}", bytes.len()),
        }
    }
    assert!(Net::from_safetensors(&bytes).is_ok());
}

#[test]
fn test_garbage_is_an_error() {
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"not a safetensors file at all".to_vec(),
        vec![0xff; 64],
        // A header length of 1000 in a file of 10 bytes.
        [1000u64.to_le_bytes().as_slice(), b"{}"].concat(),
        // A header length near u64::MAX.
        [u64::MAX.to_le_bytes().as_slice(), b"{}"].concat(),
        // A header that is not JSON.
        [8u64.to_le_bytes().as_slice(), b"{{{{{{{{"].concat(),
        // Offsets past the end of the data.
        {
            let header = br#"{"0.bias":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}"#;
            let mut v = (header.len() as u64).to_le_bytes().to_vec();
            v.extend_from_slice(header);
            v.extend_from_slice(&[0; 4]);
            v
        },
    ];
    for bytes in &cases {
        match Net::from_safetensors(bytes) {
            Err(Error::Safetensors { reason }) => {
                assert!(!reason.is_empty());
                let msg = Error::Safetensors { reason }.to_string();
                assert!(msg.contains("safetensors"), "{msg}");
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }
}

#[test]
fn test_round_trip() {
    for net in [
        Net::seeded(7),
        Net::from_safetensors(&file(&net_tensors())).unwrap(),
    ] {
        let bytes = net.to_safetensors();
        let back = Net::from_safetensors(&bytes).unwrap();
        assert_eq!(back, net);
        assert_eq!(back.to_safetensors(), bytes);
        let x = input(3);
        let (a, b) = (
            net.forward_batch(x.view()).unwrap(),
            back.forward_batch(x.view()).unwrap(),
        );
        assert_eq!(bits(a.as_slice().unwrap()), bits(b.as_slice().unwrap()));
    }
}

#[test]
fn test_round_trip_preserves_every_value() {
    let tensors = net_tensors();
    let net = Net::from_safetensors(&file(&tensors)).unwrap();
    let saved = net.to_safetensors();
    let saved = SafeTensors::deserialize(&saved).unwrap();
    let mut names = saved.names();
    names.sort();
    let mut want: Vec<&str> = tensors.iter().map(|t| t.key).collect();
    want.sort();
    assert_eq!(names, want);
    for t in &tensors {
        let got = saved.tensor(t.key).unwrap();
        assert_eq!(got.dtype(), t.dtype, "{}", t.key);
        assert_eq!(got.shape(), t.shape, "{}", t.key);
        assert_eq!(got.data(), encode(t.dtype, &t.values), "{}", t.key);
    }
}
