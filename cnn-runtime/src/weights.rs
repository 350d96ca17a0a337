//! Strict safetensors loading and writing with PyTorch `state_dict` keys.

use std::cell::RefCell;

use safetensors::{Dtype, SafeTensors};

use crate::Error;

/// A parsed safetensors file whose tensors are taken one key at a time.
///
/// Every key taken is recorded, and [`Weights::finish`] rejects the keys nobody took, so a file
/// with a stray tensor is an error rather than silently ignored.
pub struct Weights<'a> {
    tensors: SafeTensors<'a>,
    names: Vec<String>,
    taken: RefCell<Vec<bool>>,
}

impl std::fmt::Debug for Weights<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("names", &self.names)
            .finish()
    }
}

impl<'a> Weights<'a> {
    /// Parses the header of a safetensors file.
    ///
    /// # Errors
    /// [`Error::Safetensors`] when the bytes are not a well-formed safetensors file (truncated,
    /// a header that is not JSON, offsets outside the data or overlapping, …).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        // The header's JSON parser briefly holds up to ~48× the header's size (a hostile
        // `shape` of 16,385 zeros measured 47.9×): cap it far above any real network's header
        // (vgg's is 2 KB) so a hostile file cannot make a load hold gigabytes.
        if let Some(len) = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
        {
            if len > MAX_HEADER_BYTES {
                return Err(Error::Safetensors {
                    reason: format!("the header claims {len} bytes, more than the {MAX_HEADER_BYTES}-byte limit"),
                });
            }
        }
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| Error::Safetensors {
            reason: e.to_string(),
        })?;
        if let Some(key) = header_text(bytes).and_then(duplicate_key) {
            return Err(Error::Safetensors {
                reason: format!("duplicate key `{key}` in the header"),
            });
        }
        let mut names: Vec<String> = tensors.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        let taken = RefCell::new(vec![false; names.len()]);
        Ok(Weights {
            tensors,
            names,
            taken,
        })
    }

    fn take(&self, key: &str) -> Result<safetensors::tensor::TensorView<'a>, Error> {
        let Ok(i) = self.names.binary_search_by(|n| n.as_str().cmp(key)) else {
            return Err(Error::MissingTensor { key: key.into() });
        };
        self.taken.borrow_mut()[i] = true;
        self.tensors.tensor(key).map_err(|e| Error::Safetensors {
            reason: e.to_string(),
        })
    }

    /// The tensor `key` as `f32`, checked to have exactly `shape`.
    ///
    /// F32 is read as is; F64, F16 and BF16 are converted (PyTorch users often save half
    /// precision).
    ///
    /// # Errors
    /// [`Error::MissingTensor`], [`Error::ShapeMismatch`] or [`Error::Dtype`].
    pub fn f32(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>, Error> {
        let view = self.take(key)?;
        if view.shape() != shape {
            return Err(Error::ShapeMismatch {
                key: key.into(),
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let data = view.data();
        // The `unwrap`s below cannot fail: `chunks_exact(N)` yields slices of exactly N bytes.
        let values = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| crate::store::f16_to_f32(u16::from_le_bytes(b.try_into().unwrap())))
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes(b.try_into().unwrap()) as u32) << 16))
                .collect(),
            other => {
                return Err(Error::Dtype {
                    key: key.into(),
                    expected: "F32 (or F64, F16, BF16)".into(),
                    found: format!("{other:?}"),
                })
            }
        };
        Ok(values)
    }

    /// The integer scalar `key` (BatchNorm's `num_batches_tracked`, which PyTorch saves as an
    /// I64 of shape `[]`); shape `[1]` and the other integer dtypes are accepted too.
    ///
    /// # Errors
    /// [`Error::MissingTensor`], [`Error::ShapeMismatch`] or [`Error::Dtype`].
    pub fn int_scalar(&self, key: &str) -> Result<i64, Error> {
        let view = self.take(key)?;
        if !(view.shape().is_empty() || view.shape() == [1]) {
            return Err(Error::ShapeMismatch {
                key: key.into(),
                expected: vec![],
                found: view.shape().to_vec(),
            });
        }
        let d = view.data();
        let value = match (view.dtype(), d.len()) {
            (Dtype::I64, 8) => i64::from_le_bytes(d.try_into().unwrap_or_default()),
            (Dtype::I32, 4) => i32::from_le_bytes(d.try_into().unwrap_or_default()) as i64,
            (Dtype::I16, 2) => i16::from_le_bytes(d.try_into().unwrap_or_default()) as i64,
            (Dtype::I8, 1) => d[0] as i8 as i64,
            (Dtype::U8, 1) => d[0] as i64,
            (other, _) => {
                return Err(Error::Dtype {
                    key: key.into(),
                    expected: "I64".into(),
                    found: format!("{other:?}"),
                })
            }
        };
        Ok(value)
    }

    /// Every tensor's key and element count, in sorted key order.
    pub(crate) fn names_and_lens(&self) -> Vec<(String, usize)> {
        self.names
            .iter()
            .map(|name| {
                let len = self
                    .tensors
                    .tensor(name)
                    .map_or(0, |t| t.shape().iter().product());
                (name.clone(), len)
            })
            .collect()
    }

    /// Checks that every tensor in the file was taken.
    ///
    /// # Errors
    /// [`Error::UnexpectedTensor`] naming the first key (in sorted order) nobody took.
    pub fn finish(self) -> Result<(), Error> {
        let taken = self.taken.borrow();
        match self.names.iter().zip(taken.iter()).find(|(_, &t)| !t) {
            Some((key, _)) => Err(Error::UnexpectedTensor { key: key.clone() }),
            None => Ok(()),
        }
    }
}

/// The JSON header of a file `SafeTensors::deserialize` has accepted.
/// The largest safetensors header [`Weights::parse`] reads: 1 MiB, room for about 10,000
/// tensors.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

fn header_text(bytes: &[u8]) -> Option<&str> {
    let n: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let end = usize::try_from(u64::from_le_bytes(n))
        .ok()?
        .checked_add(8)?;
    std::str::from_utf8(bytes.get(8..end)?).ok()
}

// The format forbids duplicate keys, but `safetensors` keeps the last one: with
// `{"w": U8 [4], "w": F32 [1]}` over the same 4 bytes, readers that keep the first see another
// tensor. Keys are compared as decoded, so `"0.bias"` and `"0\u002ebias"` are the same key.
/// The first key (in sorted order) that appears twice at the top level of a JSON object
/// `serde_json` has accepted; every string at that level is a key, since values are objects.
fn duplicate_key(header: &str) -> Option<String> {
    let mut keys: Vec<Vec<u16>> = Vec::new();
    let (mut depth, mut chars) = (0usize, header.chars());
    while let Some(c) = chars.next() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            '"' => {
                let mut key = Vec::new();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('u') => {
                                let hex: String = chars.by_ref().take(4).collect();
                                key.push(u16::from_str_radix(&hex, 16).unwrap_or_default());
                            }
                            Some('b') => key.push(0x08),
                            Some('f') => key.push(0x0c),
                            Some('n') => key.push(0x0a),
                            Some('r') => key.push(0x0d),
                            Some('t') => key.push(0x09),
                            Some(c) => key.extend(c.encode_utf16(&mut [0; 2]).iter()),
                            None => break,
                        },
                        c => key.extend(c.encode_utf16(&mut [0; 2]).iter()),
                    }
                }
                if depth == 1 {
                    keys.push(key);
                }
            }
            _ => {}
        }
    }
    keys.sort_unstable();
    keys.windows(2)
        .find(|w| w[0] == w[1])
        .map(|w| String::from_utf16_lossy(&w[0]))
}

/// Builds a safetensors file in memory, in the order tensors are added.
#[derive(Debug, Default)]
pub struct TensorWriter {
    entries: Vec<(String, &'static str, Vec<usize>, Vec<u8>)>,
}

impl TensorWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an F32 tensor.
    pub fn f32(&mut self, key: String, shape: &[usize], values: &[f32]) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.entries.push((key, "F32", shape.to_vec(), bytes));
    }

    /// Adds an I64 scalar (shape `[]`).
    pub fn i64_scalar(&mut self, key: String, value: i64) {
        self.entries
            .push((key, "I64", Vec::new(), value.to_le_bytes().to_vec()));
    }

    /// The safetensors bytes: an 8-byte little-endian header length, the JSON header padded with
    /// spaces to a multiple of 8, then the tensor data.
    pub fn finish(self) -> Vec<u8> {
        let mut header = String::from("{");
        let mut offset = 0usize;
        for (i, (key, dtype, shape, bytes)) in self.entries.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            header.push_str(&format!(
                "\"{key}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
                dims.join(","),
                offset + bytes.len()
            ));
            offset += bytes.len();
        }
        header.push('}');
        while header.len() % 8 != 0 {
            header.push(' ');
        }
        let mut out = Vec::with_capacity(8 + header.len() + offset);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        for (_, _, _, bytes) in &self.entries {
            out.extend_from_slice(bytes);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::f16_to_f32;

    fn file() -> Vec<u8> {
        let mut w = TensorWriter::new();
        w.f32("0.weight".into(), &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        w.i64_scalar("1.num_batches_tracked".into(), 7);
        w.finish()
    }

    #[test]
    fn round_trips_and_is_strict() {
        let bytes = file();
        let w = Weights::parse(&bytes).unwrap();
        assert_eq!(w.f32("0.weight", &[2, 3]).unwrap()[5], 6.0);
        assert_eq!(
            w.f32("0.weight", &[3, 2]),
            Err(Error::ShapeMismatch {
                key: "0.weight".into(),
                expected: vec![3, 2],
                found: vec![2, 3]
            })
        );
        assert_eq!(
            w.f32("0.bias", &[2]),
            Err(Error::MissingTensor {
                key: "0.bias".into()
            })
        );
        assert_eq!(
            w.finish(),
            Err(Error::UnexpectedTensor {
                key: "1.num_batches_tracked".into()
            })
        );
        let w = Weights::parse(&bytes).unwrap();
        assert_eq!(w.int_scalar("1.num_batches_tracked").unwrap(), 7);
        assert!(w.f32("1.num_batches_tracked", &[]).is_err());
        w.f32("0.weight", &[2, 3]).unwrap();
        assert_eq!(w.finish(), Ok(()));
    }

    #[test]
    fn oversized_headers_are_refused_before_parsing() {
        let mut bytes = (MAX_HEADER_BYTES + 1).to_le_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(b' ', (MAX_HEADER_BYTES + 1) as usize));
        let err = Weights::parse(&bytes).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }

    #[test]
    fn truncated_files_are_errors() {
        let bytes = file();
        for len in 0..bytes.len() {
            assert!(Weights::parse(&bytes[..len]).is_err(), "length {len}");
        }
    }

    #[test]
    fn half_precision_converts_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    }

    /// All 65,536 half-precision values against IEEE 754's definition computed in f64:
    /// `(−1)^s · 2^(e − 15) · (1 + m/1024)`, subnormals `(−1)^s · m · 2^−24`, infinities, and
    /// NaNs quieted with their payload kept in the top mantissa bits (as F16C's `vcvtph2ps`).
    #[test]
    fn every_half_converts_as_ieee_defines_it() {
        for h in 0..=u16::MAX {
            let (sign, e, m) = (h >> 15, (h >> 10) & 0x1f, (h & 0x3ff) as u32);
            let got = f16_to_f32(h);
            let want = match e {
                0x1f if m != 0 => {
                    let bits = ((sign as u32) << 31) | 0x7fc0_0000 | (m << 13);
                    assert_eq!(got.to_bits(), bits, "NaN {h:#06x}");
                    continue;
                }
                0x1f => f64::INFINITY,
                0 => m as f64 * 2f64.powi(-24),
                e => 2f64.powi(e as i32 - 15) * (1.0 + m as f64 / 1024.0),
            };
            let want = if sign == 1 { -want } else { want };
            assert_eq!(got.to_bits(), (want as f32).to_bits(), "{h:#06x}");
        }
    }
}
