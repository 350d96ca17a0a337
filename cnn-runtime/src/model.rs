//! The trait every `cnn!` network implements, and its compile-time layer table.

use std::fmt;

use ndarray::{Array, ArrayView4, ArrayViewMut, Dimension};

use crate::exec::{Workspace, WorkspaceLayout};
use crate::Precision;

use crate::Error;

/// A network declared with `cnn!`: fixed input and output shapes, PyTorch-compatible weights.
///
/// Every method and constant of a generated network lives here: bring the trait into scope with
/// `use cnn::{cnn, Model};`.
pub trait Model: Sized + Clone + fmt::Debug + Send + Sync + 'static {
    /// One sample, `[[[f32; W]; H]; C]`.
    type Input;
    /// One sample's result: `[f32; K]` for a flat output, `Box<[[[f32; W]; H]; C]>` for a
    /// feature map (boxed so a large map never lives on the stack).
    type Output;
    /// `Ix2` (`[N, K]`) or `Ix4` (`[N, C, H, W]`): the rank of [`Model::forward_batch`]'s result.
    type Dim: Dimension;

    /// The struct's name.
    const NAME: &'static str;
    /// `[C, H, W]` of one input sample.
    const INPUT_SHAPE: [usize; 3];
    /// Shape of one output sample: `[K]` or `[C, H, W]`.
    const OUTPUT_SHAPE: &'static [usize];
    /// Learnable parameters (what `sum(p.numel() for p in model.parameters())` gives).
    const PARAMS: usize;
    /// Multiply-accumulates of one forward pass over one sample.
    const MACS: usize;
    /// Every layer in `state_dict` order, including the implicit flatten; a block comes before
    /// the layers inside it (which have a larger `depth`).
    const LAYERS: &'static [LayerInfo];
    /// Buffer sizes of [`Model::forward_into`] for one chunk of samples.
    const WORKSPACE: WorkspaceLayout;
    /// Bytes of a [`Workspace`] for this model (`WORKSPACE.bytes()`).
    const WORKSPACE_BYTES: usize = Self::WORKSPACE.bytes();
    /// Bytes of RAM one sample's `forward_in` needs, exactly: `4 × (WORKSPACE_LEN +
    /// INPUT_LEN + OUTPUT_LEN)`, the workspace ([`WorkspaceLayout::sample_len`]), the input and
    /// the output as `f32`. The figure `#[budget(ram = …)]` limits; `cnn!` sets it to the
    /// value it checked.
    const RAM_BYTES: usize = 4
        * (Self::WORKSPACE.sample_len()
            + Self::INPUT_SHAPE[0] * Self::INPUT_SHAPE[1] * Self::INPUT_SHAPE[2]
            + product(Self::OUTPUT_SHAPE));
    /// Bytes of weights in flash: with `#[weights]`, the static data `EMBEDDED` reads (laid
    /// out for the kernels: Winograd's transformed filters, packed panels, folded batch norms,
    /// 64-byte aligned), else 4 bytes per parameter (the default).
    const WEIGHT_BYTES: usize = 4 * Self::PARAMS;
    /// Bytes of flash, about: [`WEIGHT_BYTES`](Self::WEIGHT_BYTES) plus `cnn!`'s estimate of the
    /// code of the kernels the network uses, measured for x86-64 release `no_std` builds
    /// (other targets differ). The figure `#[budget(flash = …)]` limits. The default (for a
    /// hand-written implementation) counts the weights only.
    const FLASH_BYTES: usize = Self::WEIGHT_BYTES;
    /// The equivalent PyTorch module. For a network without blocks, a Python expression that
    /// evaluates to an `nn.Sequential` after `import torch` and `from torch import nn`; for one
    /// with `residual`/`concat` blocks, Python source (to `exec` after those imports) that
    /// defines the two block modules `Residual` and `Concat` and then `model`. Its `state_dict()`
    /// keys and shapes are exactly the ones [`Model::from_safetensors`] expects.
    const TORCH: &'static str;

    /// Loads weights saved from the equivalent `nn.Sequential` (`safetensors.torch.save_file(
    /// model.state_dict(), …)`).
    ///
    /// # Errors
    /// A malformed file, or a missing, extra, mis-shaped or mistyped tensor, named in the error.
    fn from_safetensors(bytes: &[u8]) -> Result<Self, Error>;

    /// The weights as a safetensors file with PyTorch `state_dict` keys.
    fn to_safetensors(&self) -> Vec<u8>;

    /// A network initialised as PyTorch initialises a new `nn.Sequential` (uniform
    /// `±1/√fan_in` for conv and linear layers, identity batch norms), from a seed.
    fn seeded(seed: u64) -> Self;

    /// Inference (`model.eval()`) on a batch `[N, C, H, W]` with any strides.
    ///
    /// # Errors
    /// [`Error::InputShape`] when C, H, W differ from [`Model::INPUT_SHAPE`];
    /// [`Error::BatchStatistics`] when a `bn(track_running_stats=false)` sees one value per
    /// channel.
    fn forward_batch(&self, x: ArrayView4<'_, f32>) -> Result<Array<f32, Self::Dim>, Error>;

    /// Inference into a caller-provided output `[N, …]` (any strides) using `workspace`'s
    /// buffers, on the calling thread: allocation-free once the workspace has been used, e.g.
    /// `let mut ws = Workspace::new(Net::WORKSPACE);`.
    ///
    /// # Errors
    /// As [`Model::forward_batch`], plus [`Error::OutputShape`] when `out` does not have the
    /// batch's output shape.
    fn forward_into(
        &self,
        x: ArrayView4<'_, f32>,
        out: ArrayViewMut<'_, f32, Self::Dim>,
        workspace: &mut Workspace,
    ) -> Result<(), Error>;

    /// Inference on one sample, with the shapes checked by the type system.
    ///
    /// # Panics
    /// Only if the network holds a `bn(track_running_stats=false)` that sees a 1×1 feature map:
    /// batch statistics over one value are undefined (PyTorch raises too). Use
    /// [`Model::forward_batch`] to get an `Err` instead.
    fn forward(&self, x: &Self::Input) -> Self::Output;

    /// Makes every convolution and linear layer multiply in `precision` (see [`Precision`]):
    /// [`Precision::Bf16`] rounds the operands of their products to bfloat16 and sums in f32,
    /// about twice as fast on a CPU with AVX512_BF16. The bf16 copy of the weights is made
    /// once per layer, on its first use in bf16. A network declared with
    /// `#[precision(bf16)]` starts in bf16 (`from_safetensors`, `seeded`); training
    /// (`forward_train`, `backward`) always computes in f32. The facade crate's documentation
    /// (`cnn`, "Precision") has an example.
    fn set_precision(&mut self, precision: Precision);

    /// What the network's convolutions and linear layers multiply in: that of its first such
    /// layer ([`Precision::F32`] for a network without one).
    fn precision(&self) -> Precision;

    /// [`set_precision`](Model::set_precision), for building: `Net::seeded(0).with_precision(Precision::Bf16)`.
    fn with_precision(mut self, precision: Precision) -> Self
    where
        Self: Sized,
    {
        self.set_precision(precision);
        self
    }

    /// A table of the layers, their PyTorch keys, output shapes, parameters and MACs.
    fn summary(&self) -> Summary {
        Summary {
            name: Self::NAME,
            input: Self::INPUT_SHAPE,
            layers: Self::LAYERS,
            ram_bytes: Self::RAM_BYTES,
            weight_bytes: Self::WEIGHT_BYTES,
            flash_bytes: Self::FLASH_BYTES,
        }
    }
}

/// The product of `dims`, usable in constants.
const fn product(dims: &[usize]) -> usize {
    let mut p = 1;
    let mut i = 0;
    while i < dims.len() {
        p *= dims[i];
        i += 1;
    }
    p
}

/// One layer of a network as the macro planned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// Module index in the list that holds it (the network's, or a block path's).
    pub index: usize,
    /// The `state_dict` key prefix: `"3"` at the top, `"3.body.0"`, `"3.shortcut.1"` or
    /// `"5.branches.1.0"` inside blocks.
    pub key: &'static str,
    /// How many blocks hold this layer (0 at the top).
    pub depth: usize,
    /// The layer as written in `cnn!` (`"(implicit flatten)"` for the inserted flatten); for a
    /// block its head, such as `"residual(shortcut { … }) { … }"` or `"concat { 3 branches }"`.
    pub dsl: &'static str,
    /// The equivalent PyTorch module, e.g. `nn.Conv2d(3, 16, kernel_size=(3, 3), padding=(1, 1))`;
    /// for a block, its class and the size of its paths.
    pub torch: &'static str,
    /// Shape of one sample after this layer.
    pub output: &'static [usize],
    /// Learnable parameters of the layer (of every layer inside, for a block).
    pub params: usize,
    /// Multiply-accumulates per sample (of every layer inside, for a block).
    pub macs: usize,
}

/// A printable layer table, built from constants only.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// The network's name.
    pub name: &'static str,
    /// `[C, H, W]` of the input.
    pub input: [usize; 3],
    /// The layers, in order.
    pub layers: &'static [LayerInfo],
    /// [`Model::RAM_BYTES`]: what `forward_in` needs (workspace, input and output), exactly.
    pub ram_bytes: usize,
    /// [`Model::WEIGHT_BYTES`]: the weights in flash.
    pub weight_bytes: usize,
    /// [`Model::FLASH_BYTES`]: the weights plus the code estimate (x86-64).
    pub flash_bytes: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = |s: &[usize]| {
            let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
            format!("[{}]", dims.join(", "))
        };
        let rows: Vec<[String; 6]> = self
            .layers
            .iter()
            .map(|l| {
                [
                    format!("{}{}", "  ".repeat(l.depth), l.key),
                    l.dsl.to_string(),
                    l.torch.to_string(),
                    shape(l.output),
                    l.params.to_string(),
                    l.macs.to_string(),
                ]
            })
            .collect();
        let head = ["key", "layer", "pytorch", "output", "params", "macs"];
        let mut width = head.map(str::len);
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let total = width.iter().sum::<usize>() + 2 * (width.len() - 1);
        writeln!(f, "{} (input {})", self.name, shape(&self.input))?;
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                let sep = if i + 1 == cells.len() { "" } else { "  " };
                if i >= 4 {
                    write!(f, "{c:>w$}{sep}")?;
                } else {
                    write!(f, "{c:<w$}{sep}")?;
                }
            }
            writeln!(f)
        };
        line(f, &head.map(String::from))?;
        writeln!(f, "{}", "-".repeat(total))?;
        for r in &rows {
            line(f, r)?;
        }
        writeln!(f, "{}", "-".repeat(total))?;
        // Blocks count the layers inside them: sum the top level only.
        let top = || self.layers.iter().filter(|l| l.depth == 0);
        let params: usize = top().map(|l| l.params).sum();
        let macs: usize = top().map(|l| l.macs).sum();
        writeln!(f, "total: {params} parameters, {macs} MACs per sample")?;
        let code = self.flash_bytes.saturating_sub(self.weight_bytes);
        write!(
            f,
            "RAM: {} bytes (forward_in: workspace, input and output); flash: about {} bytes (weights {} + code {}, an x86-64 estimate)",
            self.ram_bytes, self.flash_bytes, self.weight_bytes, code
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn layer(key: &'static str, depth: usize, params: usize, macs: usize) -> LayerInfo {
        LayerInfo {
            index: 0,
            key,
            depth,
            dsl: "x",
            torch: "nn.X()",
            output: &[2, 3],
            params,
            macs,
        }
    }

    /// The totals count each top-level entry once: a block's figures already hold the layers
    /// inside it, which the table lists indented.
    #[test]
    fn the_summary_totals_the_top_level_only() {
        static LAYERS: [LayerInfo; 4] = [
            layer("0", 0, 10, 100),
            layer("1", 0, 7, 30),
            layer("1.body.0", 1, 7, 30),
            layer("2", 0, 5, 1),
        ];
        let s = Summary {
            name: "Net",
            input: [1, 4, 4],
            layers: &LAYERS,
            ram_bytes: 123,
            weight_bytes: 88,
            flash_bytes: 1000,
        };
        let text = s.to_string();
        assert!(text.starts_with("Net (input [1, 4, 4])\n"), "{text}");
        assert!(
            text.contains("total: 22 parameters, 131 MACs per sample"),
            "{text}"
        );
        assert!(
            text.contains("RAM: 123 bytes (forward_in: workspace, input and output); flash: about 1000 bytes (weights 88 + code 912"),
            "{text}"
        );
        assert!(text.contains("\n  1.body.0 "), "indented by depth: {text}");
        // The rules under the header and under the rows are as wide as the columns.
        let lines: Vec<&str> = text.lines().collect();
        let width = lines[1].chars().count();
        assert!(lines[2].chars().all(|c| c == '-'), "{text}");
        assert_eq!(lines[2].len(), width, "{text}");
        assert_eq!(lines[7], lines[2], "{text}");
        assert!(
            lines[3..7].iter().all(|l| l.chars().count() == width),
            "{text}"
        );
    }
}
