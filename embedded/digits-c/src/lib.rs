//! The digits classifier of `examples/digits.rs` as a `no_std` static library with a C ABI.
//!
//! Its interface is documented in `cnn_digits.h`, next to this package's `Cargo.toml`;
//! `main.c` beside it classifies the test split with it and `embedded/run.sh` checks that the
//! predictions equal the `std` example's and that the library holds no allocator and no `std`.
//!
//! The weights are `Digits::EMBEDDED`, static read-only data; a classification runs
//! `forward_in` on the caller's image and workspace and a 10-float output on the stack.

#![no_std]

use cnn::cnn;

cnn! {
    /// A LeNet-style classifier for 8x8 grey-scale digits (the declaration of
    /// `examples/digits.rs`).
    #[weights = "../../models/digits.safetensors"]
    pub struct Digits {
        input(1, 8, 8)
        conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
    }
}

/// `image` or `workspace` is null or misaligned, or they overlap.
pub const ERR_POINTER: i32 = -1;
/// The image is not `Digits::INPUT_LEN` floats.
pub const ERR_INPUT_LEN: i32 = -2;
/// The workspace is shorter than `Digits::WORKSPACE_LEN` floats.
pub const ERR_WORKSPACE_LEN: i32 = -3;
/// Any other error `forward_in` returns.
pub const ERR_OTHER: i32 = -4;

/// The C header, whose `#define`s are checked against this crate at compile time.
const HEADER: &str = include_str!("../cnn_digits.h");

/// The value of `#define NAME VALUE` in `header`, `VALUE` being a decimal integer, optionally
/// negative and in parentheses; a compile error (in const context) if it is missing or malformed.
const fn define(header: &str, name: &str) -> i64 {
    let h = header.as_bytes();
    let n = name.as_bytes();
    let prefix = b"#define ";
    let mut i = 0;
    while i + prefix.len() + n.len() < h.len() {
        let line_start = i == 0 || h[i - 1] == b'\n';
        let mut matches = line_start;
        let mut k = 0;
        while matches && k < prefix.len() {
            matches = h[i + k] == prefix[k];
            k += 1;
        }
        k = 0;
        while matches && k < n.len() {
            matches = h[i + prefix.len() + k] == n[k];
            k += 1;
        }
        let mut j = i + prefix.len() + n.len();
        if matches && h[j] == b' ' {
            while j < h.len() && h[j] == b' ' {
                j += 1;
            }
            let paren = j < h.len() && h[j] == b'(';
            if paren {
                j += 1;
            }
            let negative = j < h.len() && h[j] == b'-';
            if negative {
                j += 1;
            }
            let mut value: i64 = 0;
            let mut digits = 0;
            while j < h.len() && h[j].is_ascii_digit() {
                value = value * 10 + (h[j] - b'0') as i64;
                digits += 1;
                j += 1;
            }
            assert!(
                digits > 0 && digits < 19,
                "cnn_digits.h: a #define without a number"
            );
            if paren {
                assert!(
                    j < h.len() && h[j] == b')',
                    "cnn_digits.h: unclosed parenthesis"
                );
                j += 1;
            }
            assert!(
                j == h.len() || h[j] == b'\n',
                "cnn_digits.h: text after a #define's number"
            );
            return if negative { -value } else { value };
        }
        i += 1;
    }
    panic!("cnn_digits.h: a #define this crate checks is missing")
}

const _: () = {
    assert!(
        define(HEADER, "CNN_DIGITS_INPUT_LEN") == Digits::INPUT_LEN as i64,
        "cnn_digits.h: CNN_DIGITS_INPUT_LEN is not Digits::INPUT_LEN"
    );
    assert!(
        define(HEADER, "CNN_DIGITS_CLASSES") == Digits::OUTPUT_LEN as i64,
        "cnn_digits.h: CNN_DIGITS_CLASSES is not Digits::OUTPUT_LEN"
    );
    assert!(
        define(HEADER, "CNN_DIGITS_WORKSPACE_LEN") == Digits::WORKSPACE_LEN as i64,
        "cnn_digits.h: CNN_DIGITS_WORKSPACE_LEN is not Digits::WORKSPACE_LEN"
    );
    assert!(define(HEADER, "CNN_DIGITS_ERR_POINTER") == ERR_POINTER as i64);
    assert!(define(HEADER, "CNN_DIGITS_ERR_INPUT_LEN") == ERR_INPUT_LEN as i64);
    assert!(define(HEADER, "CNN_DIGITS_ERR_WORKSPACE_LEN") == ERR_WORKSPACE_LEN as i64);
    assert!(define(HEADER, "CNN_DIGITS_ERR_OTHER") == ERR_OTHER as i64);
};

/// `Digits::INPUT_LEN`: the floats of one image (`CNN_DIGITS_INPUT_LEN`).
#[unsafe(no_mangle)]
pub extern "C" fn cnn_digits_input_len() -> usize {
    Digits::INPUT_LEN
}

/// `Digits::WORKSPACE_LEN`: the floats of workspace `cnn_digits_classify` needs
/// (`CNN_DIGITS_WORKSPACE_LEN`).
#[unsafe(no_mangle)]
pub extern "C" fn cnn_digits_workspace_len() -> usize {
    Digits::WORKSPACE_LEN
}

/// Classifies one image: the index of the largest logit (the last of equal ones, by
/// `f32::total_cmp`, as `examples/digits.rs` picks it), or a negative `ERR_*` code.
///
/// # Safety
///
/// `image` must be null or valid for reading `len` floats, and `workspace` null or valid for
/// reading and writing `ws_len` floats, for the duration of the call, and no other thread may
/// write them meanwhile. Null, misaligned and overlapping pointers and wrong lengths are
/// detected and return an error code.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cnn_digits_classify(
    image: *const f32,
    len: usize,
    workspace: *mut f32,
    ws_len: usize,
) -> i32 {
    if image.is_null() || workspace.is_null() || !image.is_aligned() || !workspace.is_aligned() {
        return ERR_POINTER;
    }
    if len != Digits::INPUT_LEN {
        return ERR_INPUT_LEN;
    }
    if ws_len < Digits::WORKSPACE_LEN {
        return ERR_WORKSPACE_LEN;
    }
    // Only the floats the network uses are borrowed, so a large `ws_len` never reaches
    // `from_raw_parts` (whose length must fit in `isize` bytes).
    let ws_len = Digits::WORKSPACE_LEN;
    let (image_start, ws_start) = (image as usize, workspace as usize);
    let image_end = image_start.saturating_add(len * size_of::<f32>());
    let ws_end = ws_start.saturating_add(ws_len * size_of::<f32>());
    if image_start < ws_end && ws_start < image_end {
        return ERR_POINTER;
    }
    // SAFETY: `image` is non-null and aligned (checked above), and the caller guarantees it is
    // valid for reading `len` floats, which is `Digits::INPUT_LEN`, a few hundred bytes, so the
    // length fits in `isize`; no one writes it during the call, and `workspace` (the only
    // `&mut` borrow here) does not overlap it (checked above).
    let image = unsafe { core::slice::from_raw_parts(image, len) };
    // SAFETY: `workspace` is non-null and aligned (checked above), and the caller guarantees it
    // is valid for reading and writing `ws_len >= Digits::WORKSPACE_LEN` floats, of which we take
    // the network's exact figure, a compile-time constant that fits in `isize`; it does not
    // overlap `image` (checked above), and no one else accesses it during the call.
    let workspace = unsafe { core::slice::from_raw_parts_mut(workspace, ws_len) };
    classify(image, workspace)
}

/// The safe half of `cnn_digits_classify`.
fn classify(image: &[f32], workspace: &mut [f32]) -> i32 {
    let mut logits = [0f32; Digits::OUTPUT_LEN];
    match Digits::EMBEDDED.forward_in(image, &mut logits, workspace) {
        Ok(()) => {}
        Err(cnn::SliceError::Input { .. }) => return ERR_INPUT_LEN,
        Err(cnn::SliceError::Workspace { .. }) => return ERR_WORKSPACE_LEN,
        Err(_) => return ERR_OTHER,
    }
    // The expression of examples/digits.rs, so that ties (none are expected) go the same way.
    (0..Digits::OUTPUT_LEN)
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .map_or(ERR_OTHER, |class| class as i32)
}

/// A static description of an error code of `cnn_digits_classify`, or of a class.
#[unsafe(no_mangle)]
pub extern "C" fn cnn_digits_strerror(code: i32) -> *const core::ffi::c_char {
    let text: &'static core::ffi::CStr = match code {
        0.. => c"no error (a class)",
        ERR_POINTER => c"image or workspace is null, misaligned, or they overlap",
        ERR_INPUT_LEN => c"the image is not CNN_DIGITS_INPUT_LEN floats",
        ERR_WORKSPACE_LEN => c"the workspace is shorter than CNN_DIGITS_WORKSPACE_LEN floats",
        ERR_OTHER => c"the network returned an unexpected error",
        _ => c"unknown error code",
    };
    text.as_ptr()
}

unsafe extern "C" {
    /// The C library's `abort`: the program that links this library is a hosted C program.
    fn abort() -> !;
}

/// Without `std` the crate must say what a panic does. The C ABI reports every bad argument as
/// an error code, so a panic is a bug: end the process loudly (`SIGABRT`) rather than hang or
/// return garbage. On a bare-metal target, put the board's reset or halt here.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: `abort` takes no arguments, has no preconditions and does not return.
    unsafe { abort() }
}
