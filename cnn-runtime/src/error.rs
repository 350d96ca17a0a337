use core::fmt;
#[cfg(feature = "std")]
use std::{string::String, vec, vec::Vec};

/// Everything that can go wrong at run time: loading weights and feeding inputs.
///
/// Shapes are written as PyTorch prints them, `[16, 3, 3, 3]`.
#[cfg(feature = "std")]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a valid safetensors file (truncated, bad header, bad offsets, …).
    Safetensors {
        /// What the safetensors parser reported.
        reason: String,
    },
    /// A tensor the network needs is not in the file.
    MissingTensor {
        /// The `state_dict` key, e.g. `0.weight`.
        key: String,
    },
    /// The file holds a tensor the network has no place for.
    UnexpectedTensor {
        /// The `state_dict` key found in the file.
        key: String,
    },
    /// A tensor has the wrong shape.
    ShapeMismatch {
        /// The `state_dict` key.
        key: String,
        /// The shape the network declares.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored with a dtype the loader does not accept for it.
    Dtype {
        /// The `state_dict` key.
        key: String,
        /// The dtype the loader expects, e.g. `F32`.
        expected: String,
        /// The dtype stored in the file, e.g. `I8`.
        found: String,
    },
    /// The input batch does not have the declared `[C, H, W]`.
    InputShape {
        /// `[N, C, H, W]` with the declared C, H, W and the batch's N.
        expected: Vec<usize>,
        /// The shape of the batch passed in.
        found: Vec<usize>,
    },
    /// The output array passed to `forward_into` does not have the network's output shape.
    OutputShape {
        /// `[N, …]` with the batch's N and the network's output shape.
        expected: Vec<usize>,
        /// The shape of the array passed in.
        found: Vec<usize>,
    },
    /// A `bn` layer normalising with batch statistics (every `bn` in training, a
    /// `bn(track_running_stats=false)` also in inference) needs more than one value per
    /// channel (PyTorch raises the same error).
    BatchStatistics {
        /// The `state_dict` key prefix of the batch-norm layer (`"3"`, `"3.body.1"`).
        layer: &'static str,
        /// `[N, C, H, W]` of the tensor reaching it in inference; `[N, C, H·W]` in training.
        shape: Vec<usize>,
    },
    /// Class targets that do not fit the network's output or the loss: a count other than the
    /// batch size, a class index out of range, class weights of the wrong length, a label
    /// smoothing outside `[0, 1]`, or a loss over class indices on a network whose output is
    /// a feature map.
    Targets {
        /// What the loss needed.
        expected: String,
        /// What it was given.
        found: String,
    },
    /// A training object used with another network or batch than the one it was made for: a
    /// [`TrainCache`](crate::TrainCache) from another network, an output gradient of the wrong
    /// shape, gradients of another network, a layer index the network does not have.
    Mismatch {
        /// What was being checked (`"cache"`, `"d_out"`, `"grads"`, `"layer"`).
        what: &'static str,
        /// What this network or batch expected.
        expected: String,
        /// What it was given.
        found: String,
    },
    /// An optimizer hyper-parameter that PyTorch rejects too (a negative learning rate, a beta
    /// outside `[0, 1)`, Nesterov momentum without momentum, …).
    Hyperparameter {
        /// `"SGD"`, `"Adam"` or `"AdamW"`.
        optimizer: &'static str,
        /// The argument's PyTorch name.
        name: &'static str,
        /// Its value, as written by `{}`.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
}

#[cfg(feature = "std")]
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Safetensors { reason } => write!(f, "invalid safetensors file: {reason}"),
            Error::MissingTensor { key } => write!(f, "missing tensor `{key}` in the weight file"),
            Error::UnexpectedTensor { key } => {
                write!(f, "unexpected tensor `{key}` in the weight file; the network has no such parameter")
            }
            Error::ShapeMismatch { key, expected, found } => write!(
                f,
                "tensor `{key}` has shape {found:?}, expected {expected:?}"
            ),
            Error::Dtype { key, expected, found } => {
                write!(f, "tensor `{key}` has dtype {found}, expected {expected}")
            }
            Error::InputShape { expected, found } => {
                write!(f, "input has shape {found:?}, expected {expected:?}")
            }
            Error::OutputShape { expected, found } => {
                write!(f, "output array has shape {found:?}, expected {expected:?}")
            }
            Error::BatchStatistics { layer, shape } => write!(
                f,
                "layer {layer} `bn` needs more than one value per channel to compute batch statistics (in training, or with track_running_stats=false), got input of shape {shape:?}"
            ),
            Error::Targets { expected, found } => {
                write!(f, "loss targets: expected {expected}, found {found}")
            }
            Error::Mismatch {
                what,
                expected,
                found,
            } => write!(f, "{what}: expected {expected}, found {found}"),
            Error::Hyperparameter {
                optimizer,
                name,
                value,
                expected,
            } => write!(f, "{optimizer}: `{name}` is {value}, expected {expected}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// What `forward_in` refuses: a slice of the wrong length, or a batch-norm layer that needs
/// batch statistics on a single value per channel. It holds no heap data, so it exists
/// without `std`; with `std` it converts into [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SliceError {
    /// The input slice does not hold one sample (`C·H·W` values).
    Input {
        /// The network's `INPUT_LEN`.
        expected: usize,
        /// The slice's length.
        found: usize,
    },
    /// The output slice does not hold one result.
    Output {
        /// The network's `OUTPUT_LEN`.
        expected: usize,
        /// The slice's length.
        found: usize,
    },
    /// The workspace is shorter than the network's `WORKSPACE_LEN` (longer is fine).
    Workspace {
        /// The network's `WORKSPACE_LEN`, the least it needs.
        expected: usize,
        /// The slice's length.
        found: usize,
    },
    /// A `bn(track_running_stats=false)` sees one value per channel (a 1×1 map of one
    /// sample) and cannot compute batch statistics.
    BatchStatistics {
        /// The layer's `state_dict` key.
        layer: &'static str,
        /// Its channels.
        channels: usize,
    },
}

impl fmt::Display for SliceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SliceError::Input { expected, found } => {
                write!(f, "input slice has {found} values, expected {expected}")
            }
            SliceError::Output { expected, found } => {
                write!(f, "output slice has {found} values, expected {expected}")
            }
            SliceError::Workspace { expected, found } => write!(
                f,
                "workspace slice has {found} values, expected at least {expected}"
            ),
            SliceError::BatchStatistics { layer, channels } => write!(
                f,
                "layer {layer} `bn` needs more than one value per channel to compute batch statistics (track_running_stats=false), got input of shape [1, {channels}, 1, 1]"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SliceError {}

#[cfg(feature = "std")]
impl From<SliceError> for Error {
    /// The same complaint as [`Error::InputShape`], [`Error::OutputShape`],
    /// [`Error::Mismatch`] (the workspace) or [`Error::BatchStatistics`].
    fn from(e: SliceError) -> Self {
        match e {
            SliceError::Input { expected, found } => Error::InputShape {
                expected: vec![expected],
                found: vec![found],
            },
            SliceError::Output { expected, found } => Error::OutputShape {
                expected: vec![expected],
                found: vec![found],
            },
            SliceError::Workspace { expected, found } => Error::Mismatch {
                what: "workspace",
                expected: std::format!("at least {expected} values"),
                found: std::format!("{found}"),
            },
            SliceError::BatchStatistics { layer, channels } => Error::BatchStatistics {
                layer,
                shape: vec![1, channels, 1, 1],
            },
        }
    }
}
