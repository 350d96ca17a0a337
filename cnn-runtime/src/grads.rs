//! The gradients of a network's parameters, by `state_dict` key, and the visitor through which
//! an optimizer updates the parameters they belong to.

use crate::weights::TensorWriter;
use crate::Error;

/// One learnable parameter tensor of a network, as `cnn!` lists them (in `state_dict` order).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    /// The `state_dict` key, `3.body.0.weight`.
    pub key: &'static str,
    /// PyTorch's shape of the tensor.
    pub shape: &'static [usize],
    /// The index of the top-level layer that holds it (`3` for `3.body.0.weight`): what
    /// freezing works by.
    pub top: usize,
}

/// The gradients of a network's loss with respect to its parameters, one tensor per
/// `state_dict` key, made by [`Train::backward`](crate::Train::backward).
///
/// A frozen layer's parameters have no gradient ([`Grads::get`] returns `None`); every other
/// parameter has one, with its PyTorch shape ([`Grads::shape`]).
///
/// The `cnn` crate's documentation shows them in use.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    specs: &'static [ParamSpec],
    data: Vec<Vec<f32>>,
    present: Vec<bool>,
}

impl Grads {
    /// Gradients for the parameters `specs`, all absent until a backward pass writes them.
    #[doc(hidden)]
    pub fn new(specs: &'static [ParamSpec]) -> Self {
        Grads {
            specs,
            data: specs
                .iter()
                .map(|s| vec![0.0; s.shape.iter().product()])
                .collect(),
            present: vec![false; specs.len()],
        }
    }

    /// The gradient of parameter `key` (a `state_dict` key such as `0.weight`), row-major in
    /// the parameter's shape; `None` for a key the network does not have or a frozen layer's
    /// parameter.
    pub fn get(&self, key: &str) -> Option<&[f32]> {
        let i = self.specs.iter().position(|s| s.key == key)?;
        self.by_index(i)
    }

    /// The PyTorch shape of parameter `key`, `None` for a key the network does not have.
    pub fn shape(&self, key: &str) -> Option<&'static [usize]> {
        self.specs.iter().find(|s| s.key == key).map(|s| s.shape)
    }

    /// Every gradient present, in `state_dict` order: `(key, shape, values)`.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'static [usize], &[f32])> + '_ {
        self.specs
            .iter()
            .zip(&self.data)
            .zip(&self.present)
            .filter(|(_, &p)| p)
            .map(|((s, d), _)| (s.key, s.shape, d.as_slice()))
    }

    /// How many gradients are present.
    pub fn len(&self) -> usize {
        self.present.iter().filter(|&&p| p).count()
    }

    /// Whether no gradient is present (every layer frozen).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The gradients as a safetensors file, `grad.{key}` per tensor with the parameter's shape
    /// (the fixtures' naming; `safetensors.torch.load_file` reads it).
    pub fn to_safetensors(&self) -> Vec<u8> {
        let mut out = TensorWriter::new();
        for (key, shape, values) in self.iter() {
            out.f32(format!("grad.{key}"), shape, values);
        }
        out.finish()
    }

    /// Bytes of the gradient buffers and presence flags.
    pub(crate) fn capacity_bytes(&self) -> usize {
        let data: usize = self.data.iter().map(|d| d.capacity() * 4).sum();
        data + self.present.capacity()
    }

    /// The gradient of the `i`-th parameter in `state_dict` order, when present.
    pub(crate) fn by_index(&self, i: usize) -> Option<&[f32]> {
        self.present
            .get(i)
            .copied()
            .unwrap_or(false)
            .then(|| self.data[i].as_slice())
    }

    /// The parameter table these gradients were made for.
    pub(crate) fn specs(&self) -> &'static [ParamSpec] {
        self.specs
    }

    /// Marks every gradient absent (before a backward pass writes them again).
    pub(crate) fn clear(&mut self) {
        self.present.fill(false);
    }

    /// The buffers of parameter `w` and, when the layer has one, its bias `w + 1`, marked
    /// present: a backward kernel overwrites them.
    pub(crate) fn weight_bias(&mut self, w: usize, bias: bool) -> (&mut [f32], Option<&mut [f32]>) {
        self.present[w] = true;
        if bias {
            self.present[w + 1] = true;
        }
        let (head, tail) = self.data.split_at_mut(w + 1);
        let b = if bias {
            Some(tail[0].as_mut_slice())
        } else {
            None
        };
        (head[w].as_mut_slice(), b)
    }
}

/// What [`Parameters::visit_params_mut`] calls on each parameter tensor: `(index, key,
/// values)`.
pub type ParamVisitor<'a> = dyn FnMut(usize, &'static str, &mut [f32]) -> Result<(), Error> + 'a;

/// A network whose learnable parameters can be visited in place: what an
/// [`Optimizer`](crate::optim::Optimizer) updates. Every `cnn!` network implements it.
pub trait Parameters {
    /// Calls `f(index, key, values)` for every learnable parameter tensor, in `state_dict`
    /// order (`index` counts from 0 in that order), stopping at the first error.
    ///
    /// # Errors
    /// The first error `f` returns.
    fn visit_params_mut(&mut self, f: &mut ParamVisitor<'_>) -> Result<(), Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[ParamSpec] = &[
        ParamSpec {
            key: "0.weight",
            shape: &[2, 3],
            top: 0,
        },
        ParamSpec {
            key: "0.bias",
            shape: &[2],
            top: 0,
        },
        ParamSpec {
            key: "2.weight",
            shape: &[4],
            top: 2,
        },
    ];

    #[test]
    fn gradients_are_absent_until_written_and_keep_their_shapes() {
        let mut g = Grads::new(SPECS);
        assert!(g.is_empty());
        assert_eq!(g.get("0.weight"), None);
        assert_eq!(g.shape("0.bias"), Some(&[2][..]));
        assert_eq!(g.shape("1.weight"), None);
        let (w, b) = g.weight_bias(0, true);
        w.copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        b.unwrap().copy_from_slice(&[7.0, 8.0]);
        assert_eq!(g.len(), 2);
        assert!(!g.is_empty());
        assert_eq!(g.get("0.weight"), Some(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0][..]));
        assert_eq!(g.get("0.bias"), Some(&[7.0, 8.0][..]));
        assert_eq!(g.get("2.weight"), None);
        let (w, b) = g.weight_bias(2, false);
        assert!(b.is_none());
        w.fill(-1.0);
        let keys: Vec<_> = g.iter().map(|(k, s, _)| (k, s.len())).collect();
        assert_eq!(keys, [("0.weight", 2), ("0.bias", 1), ("2.weight", 1)]);
        g.clear();
        assert!(g.is_empty() && g.by_index(0).is_none());
    }

    #[test]
    fn safetensors_names_each_gradient_after_its_parameter() {
        let mut g = Grads::new(SPECS);
        let (w, _) = g.weight_bias(2, false);
        w.copy_from_slice(&[0.5, -0.5, 1.5, 2.0]);
        let bytes = g.to_safetensors();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.names(), ["grad.2.weight"]);
        let t = st.tensor("grad.2.weight").unwrap();
        assert_eq!(t.shape(), [4]);
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(v, [0.5, -0.5, 1.5, 2.0]);
    }
}
