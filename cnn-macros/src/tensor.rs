//! The shape of one sample's tensor between two layers: what `check.rs` tests a layer against
//! and `shape.rs` infers.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Chw { c: usize, h: usize, w: usize },
    Flat(usize),
}

impl Shape {
    pub fn dims(&self) -> Vec<usize> {
        match *self {
            Shape::Chw { c, h, w } => vec![c, h, w],
            Shape::Flat(k) => vec![k],
        }
    }

    /// Elements per sample; the planner has checked the product fits in `usize`.
    pub fn len(&self) -> usize {
        self.dims().iter().product()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Chw { c, h, w } => write!(f, "[{c}, {h}, {w}]"),
            Shape::Flat(k) => write!(f, "[{k}]"),
        }
    }
}
