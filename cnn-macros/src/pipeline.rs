//! parse -> check -> shape -> (embed, prepare) -> budget -> expand, over `proc_macro2` types
//! so unit tests can drive it.

use proc_macro2::TokenStream;

use crate::ast::{Network, Networks};
use crate::ctxt::Ctxt;
use crate::shape::Plan;
use crate::{budget, check, embed, expand, fallback, prepare, shape};

/// Checks one network and plans its shapes, reporting every error found (a malformed
/// `#[budget]` with the rest).
pub fn plan(net: &Network) -> syn::Result<Plan> {
    let items = net.body.as_ref().map_err(|e| {
        let mut e = e.clone();
        if let Err(b) = &net.budget {
            e.combine(b.clone());
        }
        if let Err(b) = &net.bf16 {
            e.combine(b.clone());
        }
        e
    })?;
    let mut cx = Ctxt::new();
    if let Err(e) = &net.budget {
        cx.push(e.clone());
    }
    if let Err(e) = &net.bf16 {
        cx.push(e.clone());
    }
    let planned = check::input_and_layers(&mut cx, net, items)
        .and_then(|(input, layers)| shape::plan(&mut cx, input, layers));
    cx.check()?;
    planned.ok_or_else(|| syn::Error::new(net.ident.span(), "internal error: no plan and no error"))
}

/// Generated code for every network; networks with errors become stubs next to the errors.
pub fn expand(networks: &Networks) -> TokenStream {
    let mut out = TokenStream::new();
    let mut errors: Option<syn::Error> = None;
    for net in &networks.networks {
        let checked = plan(net).and_then(|plan| {
            let embedded = match &net.weights {
                Some((attr, path)) => Some(embed::check(
                    attr,
                    path,
                    &plan,
                    networks.source_file.as_deref(),
                )?),
                None => None,
            };
            let statics = embedded.as_ref().map(|file| {
                prepare::embedded(&net.ident, &plan, file, net.bf16.as_ref().is_ok_and(|b| *b))
            });
            let figures = budget::figures(net, &plan, statics.as_ref().map(|s| s.1))?;
            if let Ok(Some(limits)) = &net.budget {
                budget::check(net, limits, &figures, &plan)?;
            }
            let embedded = embedded.zip(statics.map(|s| s.0));
            Ok((plan, embedded, figures))
        });
        match checked {
            Ok((plan, embedded, figures)) => out.extend(expand::network(
                net,
                &plan,
                embedded.as_ref().map(|(file, statics)| (file, statics)),
                &figures,
            )),
            Err(e) => {
                out.extend(fallback::stub(net));
                match &mut errors {
                    Some(all) => all.combine(e),
                    None => errors = Some(e),
                }
            }
        }
    }
    if let Some(e) = errors {
        out.extend(e.to_compile_error());
    }
    out
}
