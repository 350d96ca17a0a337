//! Rules over the layer list as a whole, before shapes are inferred.

use crate::args::{self, Layer, Sp};
use crate::ast::{Item, Network};
use crate::ctxt::Ctxt;
use crate::symbol;

/// `input(C, H, W)` comes first and once: `struct N { conv(3 -> 8, k3) }` is missing it, and
/// `input(3, 8, 8) relu input(3, 8, 8)` repeats it.
pub fn input_and_layers(
    cx: &mut Ctxt,
    network: &Network,
    items: &[Item],
) -> Option<([Sp<usize>; 3], Vec<Layer>)> {
    let is_input = |item: &Item| item.name == symbol::INPUT;
    let before = cx.len();
    let first = items.first();
    let input = match first {
        Some(item) if is_input(item) => args::decode_input(cx, item),
        Some(item) => {
            let msg = if items.iter().any(is_input) {
                "`input(C, H, W)` must come first, before any layer"
            } else {
                "missing `input(C, H, W)`; a network starts with the shape of one sample, e.g. `input(3, 32, 32)`"
            };
            cx.error_at(item.name.span(), msg);
            None
        }
        None => {
            cx.error_at(
                network.ident.span(),
                format!(
                    "network `{}` is empty; it needs `input(C, H, W)` and its layers",
                    network.ident
                ),
            );
            None
        }
    };
    let mut layers = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if is_input(item) {
            if i > 0 && first.is_some_and(is_input) {
                cx.error_at(
                    item.name.span(),
                    "repeated `input`; a network has exactly one input",
                );
            }
            continue;
        }
        if let Some(layer) = args::decode(cx, item) {
            layers.push(layer);
        }
    }
    if cx.len() > before {
        return None;
    }
    Some((input?, layers))
}
