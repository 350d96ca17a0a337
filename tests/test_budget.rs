//! `RAM_BYTES`, `FLASH_BYTES` and `#[budget]`: the figures the macro computes (and checks a
//! budget against) are the ones the generated code uses.
//!
//! RAM is `4 × (WORKSPACE_LEN + INPUT_LEN + OUTPUT_LEN)`: the macro computes the workspace as a
//! number and emits it as literals, so `WORKSPACE_LEN` is the macro's figure; the tests below
//! check it against the runtime's `WorkspaceLayout::sample_len` and against what `forward_in`
//! accepts (exactly `WORKSPACE_LEN`, not one value less).

use cnn::{cnn, Model, SliceError, SliceModel};

cnn! {
    /// The digits example with its trained weights, within its budget (RAM 78,376 bytes, flash
    /// about 271,543 bytes, and the MACs exactly at the limit, which is within it).
    #[weights = "models/digits.safetensors"]
    #[budget(ram = "80K", flash = "272K", macs = 337_536)]
    struct Digits {
        input(1, 8, 8)
        conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
    }

    /// Without `#[weights]`: the weights count 4 bytes per parameter.
    #[budget(ram = "256K", macs = 500_000)]
    struct Tiny {
        input(3, 32, 32)
        conv(3 -> 16, k3, p1) bn relu maxpool(2) fc(10)
    }

    /// Blocks (the stack), depthwise, im2col, Winograd, a transposed convolution, upsampling.
    struct Mixed {
        input(3, 16, 16)
        conv(3 -> 16, k3, p1) relu
        residual(shortcut { conv(16 -> 24, k1) }) { conv(16 -> 24, k3, p1) bn relu conv(24 -> 24, k3, p1) }
        concat { branch { conv(24 -> 8, k1) } branch { conv(24 -> 24, k3, p1, groups=24) } branch {} }
        convtranspose(56 -> 8, k2, s2) upsample(2) avgpool(4) softmax
    }
}

/// Every figure of `N`, checked against its definition and against the runtime.
fn figures<N: Model + SliceModel>(ram: usize, flash: usize) {
    let ws = N::WORKSPACE_LEN;
    assert_eq!(ws, N::WORKSPACE.sample_len(), "{}", N::NAME);
    assert_eq!(ram, 4 * (ws + N::INPUT_LEN + N::OUTPUT_LEN), "{}", N::NAME);
    assert_eq!(N::RAM_BYTES, ram, "{}", N::NAME);
    assert_eq!(N::FLASH_BYTES, flash, "{}", N::NAME);
    // The code estimate is at least the executor's 3,430 bytes.
    assert!(flash >= N::WEIGHT_BYTES + 3_430, "{}", N::NAME);
    let summary = N::summary(&N::seeded(0)).to_string();
    let last = summary.lines().last().unwrap_or_default();
    assert!(last.starts_with(&format!("RAM: {ram} bytes")), "{summary}");
    assert!(
        last.contains(&format!(
            "flash: about {flash} bytes (weights {}",
            N::WEIGHT_BYTES
        )),
        "{summary}"
    );
}

#[test]
fn ram_is_workspace_input_and_output() {
    figures::<Digits>(Digits::RAM_BYTES, Digits::FLASH_BYTES);
    figures::<Tiny>(Tiny::RAM_BYTES, Tiny::FLASH_BYTES);
    figures::<Mixed>(Mixed::RAM_BYTES, Mixed::FLASH_BYTES);
}

/// `forward_in` runs in exactly `RAM_BYTES`: the workspace it needs is `WORKSPACE_LEN`, not
/// one value more (and with one value less it refuses).
#[test]
fn forward_in_needs_exactly_the_ram_figure() {
    fn exact<N: SliceModel>(net: &N) {
        let mut input = vec![0.25f32; N::INPUT_LEN];
        input[0] = -1.0;
        let mut out = vec![0f32; N::OUTPUT_LEN];
        let mut ws = vec![f32::NAN; N::WORKSPACE_LEN];
        net.forward_in(&input, &mut out, &mut ws).unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
        let short = net.forward_in(&input, &mut out, &mut ws[1..]);
        assert!(
            matches!(short, Err(SliceError::Workspace { .. })),
            "{short:?}"
        );
    }
    exact(Digits::EMBEDDED);
    exact(&Tiny::seeded(1));
    exact(&Mixed::seeded(2));
}

/// The digits figures, worked out by hand so that a formula that drops or adds a term fails.
#[test]
fn digits_figures_by_hand() {
    // Workspace: two activation buffers of the largest tensor (32·8·8 = 2,048), the largest
    // scratch (the Winograd layer: 16 positions × 16 tiles × (16 + 32) + 16·64 + 32·64 =
    // 15,360), the batch-norm scale and shift of 32 channels (64), no stack.
    assert_eq!(Digits::WORKSPACE_LEN, 2 * 2048 + 15_360 + 2 * 32);
    assert_eq!(Digits::WORKSPACE_LEN, 19_520);
    assert_eq!(Digits::RAM_BYTES, 4 * (19_520 + 64 + 10));
    // `__CORE`, 64-byte aligned: the direct layer's packed weights (2 × 9 × 8 floats, 576 B)
    // and bias (16, 64 B), Winograd's U (16 × 16 × 32 floats, 32,768 B) and bias (128 B),
    // fc(64) (131,072 + 256 B), fc(10) (2,560 + 40 B).
    assert_eq!(
        Digits::WEIGHT_BYTES,
        576 + 64 + 32_768 + 128 + 131_072 + 256 + 2_560 + 40
    );
    assert_eq!(<Digits as Model>::MACS, 9_216 + 294_912 + 32_768 + 640);
    // Without `#[weights]`: 4 bytes per parameter.
    assert_eq!(Tiny::WEIGHT_BYTES, 4 * <Tiny as Model>::PARAMS);
}
