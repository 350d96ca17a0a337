//! Where a layer's tensors live: static read-only data (weights embedded at compile time) or,
//! with `std`, the heap (loaded, initialised or trained weights); and the scratch buffers the
//! kernels borrow.

#[cfg(feature = "std")]
use std::vec::Vec;

/// The values of one tensor, `[f32]` either way: `Static` for data the `cnn!` macro laid out at
/// compile time (no copy, no allocation, usable in a `static`), `Owned` for data made at run
/// time. Writing to a `Static` tensor (training an embedded network) copies it to the heap
/// first.
#[derive(Clone)]
pub enum Buf {
    /// Read-only data in the binary.
    Static(&'static [f32]),
    /// Data on the heap.
    #[cfg(feature = "std")]
    Owned(Vec<f32>),
}

impl Buf {
    /// `Some(Static(t))` for `Some(t)`: an optional tensor of an embedded network.
    pub const fn from_static(t: Option<&'static [f32]>) -> Option<Buf> {
        match t {
            Some(t) => Some(Buf::Static(t)),
            None => None,
        }
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Buf::Static(s) => s,
            #[cfg(feature = "std")]
            Buf::Owned(v) => v,
        }
    }

    /// The values, writable: a `Static` tensor is copied to the heap first.
    #[cfg(feature = "std")]
    pub fn make_mut(&mut self) -> &mut [f32] {
        if let Buf::Static(s) = *self {
            *self = Buf::Owned(s.to_vec());
        }
        match self {
            Buf::Owned(v) => v,
            Buf::Static(_) => unreachable!("made owned just above"),
        }
    }
}

impl core::ops::Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.as_slice()
    }
}

/// Writing copies a `Static` tensor to the heap first ([`Buf::make_mut`]), as `Cow::to_mut`.
#[cfg(feature = "std")]
impl core::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        self.make_mut()
    }
}

impl core::fmt::Debug for Buf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl PartialEq for Buf {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

#[cfg(feature = "std")]
impl FromIterator<f32> for Buf {
    fn from_iter<I: IntoIterator<Item = f32>>(iter: I) -> Self {
        Buf::Owned(iter.into_iter().collect())
    }
}

#[cfg(feature = "std")]
impl From<Vec<f32>> for Buf {
    fn from(v: Vec<f32>) -> Self {
        Buf::Owned(v)
    }
}

/// A kernel's scratch space: a `Vec` that grows as needed (the batch executor's), or a slice of
/// the caller's workspace that must already be long enough (`forward_in`'s).
pub trait Scratch {
    /// At least `len` elements.
    ///
    /// # Panics
    /// For a slice shorter than `len` (the workspace size is checked before any kernel runs).
    fn at_least(&mut self, len: usize) -> &mut [f32];
}

#[cfg(feature = "std")]
impl Scratch for Vec<f32> {
    /// From the first 64-byte boundary of the buffer, which grows by [`LINE`]` − 1` elements
    /// more than asked for to have one.
    fn at_least(&mut self, len: usize) -> &mut [f32] {
        // Never shrunk: a later layer would pay to zero it again on growth.
        if self.len() < len + LINE - 1 {
            self.resize(len + LINE - 1, 0.0);
        }
        let at = to_line(self);
        &mut self[at..]
    }
}

/// A growable `f32` buffer whose contents start on a cache line (the executor's activations:
/// the kernels write their outputs there, and an AMX tile stored across lines, or a vector
/// store split over two, runs slower). It holds [`LINE`]` − 1` elements more than it shows;
/// growing it keeps its contents, moved to the new allocation's first line.
#[cfg(feature = "std")]
#[derive(Debug, Default)]
pub(crate) struct Lined(Vec<f32>);

#[cfg(feature = "std")]
impl Lined {
    /// Room for `len` elements from a line's start, none of them there yet.
    pub(crate) fn with_capacity(len: usize) -> Self {
        Lined(Vec::with_capacity(len + LINE - 1))
    }

    /// `v` copied to a line's start.
    pub(crate) fn from_vec(v: &[f32]) -> Self {
        let mut l = Lined::default();
        l.grow(v.len());
        l[..v.len()].copy_from_slice(v);
        l
    }

    /// Elements from the first line's start.
    fn start(&self) -> usize {
        to_line(&self.0).min(self.0.len())
    }

    /// Grows to at least `len` elements from a line's start (never shrinks), keeping the
    /// contents: the first `len` of them, or all there were.
    pub(crate) fn grow(&mut self, len: usize) {
        if self.len() >= len {
            return;
        }
        let (from, kept) = (self.start(), self.len());
        self.0.resize(len + LINE - 1, 0.0);
        let to = to_line(&self.0);
        shift(&mut self.0, (from, to), kept);
    }

    /// The allocation's start (not the first line's), to tell whether it changed.
    #[cfg(test)]
    pub(crate) fn allocation(&self) -> *const f32 {
        self.0.as_ptr()
    }

    /// Elements allocated, the room to reach a line included.
    pub(crate) fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

/// Moves the `kept` values at `from` to `to` in `v`, zero where they were and no longer are.
#[cfg(feature = "std")]
fn shift(v: &mut [f32], (from, to): (usize, usize), kept: usize) {
    if to != from {
        v.copy_within(from..from + kept, to);
        // What the copy left behind past the contents shows as zero, as new elements do.
        if from > to {
            v[to + kept..from + kept].fill(0.0);
        }
    }
}

#[cfg(feature = "std")]
impl core::ops::Deref for Lined {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.0[self.start()..]
    }
}

#[cfg(feature = "std")]
impl core::ops::DerefMut for Lined {
    fn deref_mut(&mut self) -> &mut [f32] {
        let at = self.start();
        &mut self.0[at..]
    }
}

impl Scratch for [f32] {
    /// From the slice's first 64-byte boundary when what follows it is long enough (a
    /// workspace sized with [`LINE`]` − 1` elements to spare), else from its start.
    fn at_least(&mut self, len: usize) -> &mut [f32] {
        assert!(self.len() >= len, "scratch too short");
        let at = to_line(self);
        if self.len() >= at + len {
            &mut self[at..]
        } else {
            self
        }
    }
}

/// Four-byte elements in a 64-byte cache line.
///
/// Kernels take their buffers from a line's start where they can (scratch, the bf16 GEMM's
/// weights and panels): a vector load then never spans two lines, and an AMX tile load from
/// an address off a line's start runs several times slower (measured in `docs/benchmarks.md`).
pub(crate) const LINE: usize = 16;

/// Elements from the start of `s` to its first 64-byte boundary: `0..LINE`.
pub(crate) fn to_line<T>(s: &[T]) -> usize {
    debug_assert_eq!(core::mem::size_of::<T>(), 4, "four-byte elements");
    (64 - s.as_ptr() as usize % 64) % 64 / 4
}

/// 64-byte aligned storage for embedded bytes (`Aligned(*b"…")`), so that [`f32s`] may view
/// them as `f32`s and the kernels read whole cache lines.
#[repr(C, align(64))]
pub struct Aligned<const N: usize>(pub [u8; N]);

/// The `len` little-endian `f32`s at byte `start` of an embedded blob: the `cnn!` macro emits a
/// network's prepared tensors as one [`Aligned`] byte string and each tensor as a constant view
/// into it. Refuses (a compile error, since it runs in a constant) a range outside the blob, a
/// start that is not a multiple of 4, or a big-endian target.
pub const fn f32s<const N: usize>(
    blob: &'static Aligned<N>,
    start: usize,
    len: usize,
) -> &'static [f32] {
    const {
        assert!(
            cfg!(target_endian = "little"),
            "embedded weights are little-endian f32: this target is big-endian"
        )
    };
    assert!(start.is_multiple_of(4), "embedded tensor: misaligned");
    assert!(
        len <= N / 4 && start <= N - 4 * len,
        "embedded tensor: outside its blob"
    );
    // SAFETY: the blob is `'static` and immutable; `start..start + 4·len` lies inside it
    // (checked above) at a multiple of 4 from its 64-aligned start, so the pointer is aligned
    // for `f32`; every bit pattern is a valid `f32`, and on a little-endian target (checked
    // above) the bytes read as the values the macro wrote.
    unsafe { core::slice::from_raw_parts(blob.0.as_ptr().add(start).cast::<f32>(), len) }
}

/// The `len` little-endian `u32`s at byte `start` of an embedded blob: an embedded network's
/// bf16 weights (pairs of bf16 values, [`f32s`]'s rules).
pub const fn u32s<const N: usize>(
    blob: &'static Aligned<N>,
    start: usize,
    len: usize,
) -> &'static [u32] {
    let f = f32s(blob, start, len);
    // SAFETY: `f` is a `'static` immutable slice of `len` `f32`s; `u32` has the size and
    // alignment of `f32` and every bit pattern is a valid `u32`.
    unsafe { core::slice::from_raw_parts(f.as_ptr().cast::<u32>(), len) }
}

/// IEEE 754 half precision to single precision, exact for every input.
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: m · 2^-24, renormalised.
            let value = m as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -value } else { value };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// One little-endian value of a safetensors float dtype (`F32`, `F64`, `F16`, `BF16`) as
/// `f32`, converted as the run-time loader converts it; `None` for another dtype or a length
/// that does not match it. The `cnn!` macro decodes embedded weights with it.
pub fn float_value(dtype: &str, bytes: &[u8]) -> Option<f32> {
    Some(match (dtype, bytes.len()) {
        ("F32", 4) => f32::from_le_bytes(bytes.try_into().ok()?),
        ("F64", 8) => f64::from_le_bytes(bytes.try_into().ok()?) as f32,
        ("F16", 2) => f16_to_f32(u16::from_le_bytes(bytes.try_into().ok()?)),
        ("BF16", 2) => f32::from_bits(u32::from(u16::from_le_bytes(bytes.try_into().ok()?)) << 16),
        _ => return None,
    })
}

/// One little-endian value of a safetensors integer dtype (`I64`, `I32`, `I16`, `I8`, `U8`)
/// as `i64`, as the run-time loader reads `num_batches_tracked`; `None` otherwise.
pub fn int_value(dtype: &str, bytes: &[u8]) -> Option<i64> {
    Some(match (dtype, bytes.len()) {
        ("I64", 8) => i64::from_le_bytes(bytes.try_into().ok()?),
        ("I32", 4) => i64::from(i32::from_le_bytes(bytes.try_into().ok()?)),
        ("I16", 2) => i64::from(i16::from_le_bytes(bytes.try_into().ok()?)),
        ("I8", 1) => i64::from(bytes[0] as i8),
        ("U8", 1) => i64::from(bytes[0]),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    static BLOB: Aligned<16> = Aligned([
        0, 0, 128, 63, // 1.0
        0, 0, 0, 192, // -2.0
        0, 0, 192, 127, // NaN
        0, 0, 0, 0, // 0.0
    ]);

    #[test]
    fn a_shift_moves_the_contents_either_way_and_leaves_zeros() {
        let v = |x: &[f32]| x.to_vec();
        let mut a = v(&[0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0]);
        shift(&mut a, (3, 0), 3);
        assert_eq!(
            a,
            v(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
            "towards the start"
        );
        let mut a = v(&[0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0]);
        shift(&mut a, (1, 0), 3);
        assert_eq!(
            a,
            v(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
            "overlapping"
        );
        let mut a = v(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        shift(&mut a, (0, 4), 3);
        assert_eq!(
            a,
            v(&[1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0]),
            "towards the end"
        );
        let mut a = v(&[5.0, 1.0, 2.0, 7.0]);
        shift(&mut a, (1, 1), 2);
        assert_eq!(a, v(&[5.0, 1.0, 2.0, 7.0]), "in place, untouched");
    }

    #[test]
    fn lined_starts_on_a_line_and_keeps_its_contents_as_it_grows() {
        let mut l = Lined::with_capacity(3);
        assert_eq!(l.capacity(), 3 + LINE - 1);
        assert!(l.is_empty());
        l.grow(0);
        assert!(l.is_empty(), "nothing asked, nothing shown");
        let mut expect: Vec<f32> = Vec::new();
        // Growing from every length to a larger one, through reallocations: the contents so
        // far stay (at the new line's start), the rest is zero.
        for len in [1, 2, 17, 40, 41, 300, 1000, 5000] {
            l.grow(len);
            assert_eq!(to_line(&l), 0, "from a line's start at {len}");
            assert!(
                l.len() >= len && l.len() < len + LINE,
                "length {} for {len}",
                l.len()
            );
            assert_eq!(&l[..expect.len()], &expect[..], "contents kept at {len}");
            assert!(l[expect.len()..len].iter().all(|&v| v == 0.0));
            // LOOP over the new elements: numbered
            for i in expect.len()..len {
                l[i] = i as f32 + 0.5;
                expect.push(i as f32 + 0.5);
            }
        }
        // Never shrunk; a shorter request changes nothing.
        let (ptr, len) = (l.as_ptr(), l.len());
        l.grow(10);
        assert_eq!((l.as_ptr(), l.len()), (ptr, len));
        assert_eq!(&l[..expect.len()], &expect[..]);
        // A copy of a vector, from a line's start, equal to it.
        let v: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let c = Lined::from_vec(&v);
        assert_eq!((to_line(&c), &c[..37]), (0, &v[..]));
        assert_eq!(Lined::from_vec(&[]).len(), 0);
        // The contents move when the new allocation's first line is not as far from its start
        // as the old one's was: seen at least once over growths from small to large.
        let mut moved = false;
        for attempt in 0..200 {
            let mut l = Lined::default();
            let _spacer = vec![0u8; attempt % 7 * 16 + 1];
            l.grow(5);
            l[..5].copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0]);
            let from = to_line(&l.0);
            l.grow(100_000 + attempt);
            moved |= to_line(&l.0) != from;
            assert_eq!(&l[..5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
            assert!(
                l[5..40].iter().all(|&v| v == 0.0),
                "left behind past the contents"
            );
        }
        assert!(moved, "never moved: the case is not tested");
    }

    #[test]
    fn u32s_views_the_same_bytes_as_little_endian_words() {
        assert_eq!(u32s(&BLOB, 0, 2), [0x3f80_0000, 0xc000_0000]);
        assert_eq!(u32s(&BLOB, 8, 2), [0x7fc0_0000, 0]);
        assert_eq!(u32s(&BLOB, 16, 0), [0u32; 0]);
        for (start, len) in [(2, 1), (0, 5), (12, 2)] {
            let r = std::panic::catch_unwind(|| u32s(&BLOB, start, len));
            assert!(r.is_err(), "start {start}, len {len} accepted");
        }
    }

    #[test]
    fn f32s_views_the_blob_at_any_multiple_of_four() {
        assert_eq!(f32s(&BLOB, 0, 2), [1.0, -2.0]);
        assert_eq!(f32s(&BLOB, 4, 1), [-2.0]);
        assert_eq!(f32s(&BLOB, 12, 1), [0.0]);
        assert!(f32s(&BLOB, 8, 1)[0].is_nan());
        assert_eq!(f32s(&BLOB, 16, 0), [0.0f32; 0]);
        for (start, len) in [(2, 1), (0, 5), (12, 2), (20, 0)] {
            let r = std::panic::catch_unwind(|| f32s(&BLOB, start, len));
            assert!(r.is_err(), "start {start}, len {len} accepted");
        }
    }

    #[test]
    fn a_static_buffer_is_copied_on_first_write() {
        static DATA: [f32; 3] = [1.0, 2.0, 3.0];
        let mut b = Buf::Static(&DATA);
        let c = b.clone();
        b.make_mut()[1] = 5.0;
        assert_eq!(*b, [1.0, 5.0, 3.0]);
        assert_eq!(*c, [1.0, 2.0, 3.0]);
        assert_eq!(DATA, [1.0, 2.0, 3.0]);
        assert!(matches!(b, Buf::Owned(_)));
        assert_eq!(Buf::from(vec![1.0, 2.0, 3.0]), c);
        assert_ne!(b, c);
        // Writing through `DerefMut` copies too, and Debug shows the values.
        let mut d = Buf::from_static(Some(&DATA)).unwrap();
        assert!(matches!(d, Buf::Static(_)));
        d[2] = -4.0;
        assert_eq!(*d, [1.0, 2.0, -4.0]);
        assert!(matches!(d, Buf::Owned(_)));
        assert_eq!(format!("{d:?}"), "[1.0, 2.0, -4.0]");
        assert_eq!(format!("{c:?}"), "[1.0, 2.0, 3.0]");
        assert!(Buf::from_static(None).is_none());
    }

    #[test]
    fn a_slice_scratch_must_be_long_enough_and_a_vec_grows() {
        let mut s = [0.0f32; 4];
        assert_eq!(s.at_least(4).len(), 4);
        assert!(std::panic::catch_unwind(move || {
            let mut s = [0.0f32; 4];
            s.at_least(5).len()
        })
        .is_err());
        let mut v = vec![7.0f32; 2];
        let got = v.at_least(5);
        assert!(got.len() >= 5);
        assert_eq!(to_line(got), 0, "from a line's start");
        assert_eq!(v.len(), 5 + LINE - 1, "grown with room to reach a line");
        assert_eq!(
            v.at_least(3).len(),
            5 + LINE - 1 - to_line(&v),
            "never shrunk"
        );
        assert_eq!(v[..2], [7.0, 7.0]);
        // Exactly as long as asked with a line's room, or one longer: left as it is.
        for len in [4 + LINE - 1, 4 + LINE] {
            let mut v = vec![0.0f32; len];
            v.at_least(4);
            assert_eq!(v.len(), len, "resized");
        }
        // A slice five elements short of a line: from the line when 15 fit past it, else
        // from its start.
        let mut buf = vec![0.0f32; 64];
        let off = (0..LINE).find(|&o| to_line(&buf[o..]) == 5).unwrap();
        let s = &mut buf[off..off + 20];
        let got = s.at_least(15);
        assert_eq!((to_line(got), got.len()), (0, 15));
        let got = s.at_least(16);
        assert_eq!((to_line(got), got.len()), (5, 20));
    }

    #[test]
    fn dtypes_decode_as_the_loader_reads_them() {
        assert_eq!(float_value("F32", &1.5f32.to_le_bytes()), Some(1.5));
        assert_eq!(float_value("F64", &(-0.25f64).to_le_bytes()), Some(-0.25));
        assert_eq!(float_value("F16", &0x3c00u16.to_le_bytes()), Some(1.0));
        // Subnormal halves keep their sign.
        assert_eq!(f16_to_f32(0x8001), -5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(float_value("BF16", &0xc040u16.to_le_bytes()), Some(-3.0));
        assert_eq!(float_value("F32", &[0, 0]), None);
        assert_eq!(float_value("I32", &[0, 0, 0, 0]), None);
        assert_eq!(int_value("I64", &(-3i64).to_le_bytes()), Some(-3));
        assert_eq!(int_value("I32", &7i32.to_le_bytes()), Some(7));
        assert_eq!(int_value("I16", &(-2i16).to_le_bytes()), Some(-2));
        assert_eq!(int_value("I8", &[0xff]), Some(-1));
        assert_eq!(int_value("U8", &[0xff]), Some(255));
        assert_eq!(int_value("I64", &[0; 4]), None);
        assert_eq!(int_value("F32", &[0; 4]), None);
    }
}
