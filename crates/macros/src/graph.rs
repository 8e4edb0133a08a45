//! Turning a `model!` layer list with blocks into the flat program the engine runs:
//! one node per layer and per merge, each reading earlier nodes (or the model's
//! input). Residual blocks and merges are checked here, while the macro expands: the
//! body against the skip, every branch against the others, with kiln-spec's rules
//! (the same sentences `Sequential` gives at run time).

use crate::parse::LayerDef;
use crate::plan::{self, Planned};
use kiln_spec::{Merge, MergeKind, Namer, Value, did_you_mean, merge_lookup, merge_names};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::spanned::Spanned;

/// Where a node reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    Input,
    Node(usize),
}

impl Src {
    pub fn tokens(self) -> TokenStream {
        match self {
            Src::Input => quote!(::kiln::Src::Input),
            Src::Node(j) => quote!(::kiln::Src::Node(#j)),
        }
    }
}

/// One node of the flat program.
pub enum Node {
    /// A layer (a field of the generated struct).
    Layer { planned: Planned, src: Src },
    /// A merge, run by the engine (no field).
    Merge {
        name: String,
        merge: Merge,
        inputs: Vec<Src>,
        residual: Option<Src>,
        output: Vec<usize>,
    },
}

impl Node {
    pub fn name(&self) -> &str {
        match self {
            Node::Layer { planned, .. } => &planned.name,
            Node::Merge { name, .. } => name,
        }
    }
    pub fn output(&self) -> &[usize] {
        match self {
            Node::Layer { planned, .. } => &planned.output,
            Node::Merge { output, .. } => output,
        }
    }
}

/// The tokens that rebuild merge `m`.
pub fn merge_tokens(m: &Merge) -> TokenStream {
    let kind = match m.kind {
        MergeKind::Add => quote!(Add),
        MergeKind::Subtract => quote!(Subtract),
        MergeKind::Multiply => quote!(Multiply),
        MergeKind::Average => quote!(Average),
        MergeKind::Maximum => quote!(Maximum),
        MergeKind::Minimum => quote!(Minimum),
        MergeKind::Concatenate => quote!(Concatenate),
    };
    let axis = m.axis;
    quote!(::kiln::Merge { kind: ::kiln::MergeKind::#kind, axis: #axis })
}

/// The program being planned.
pub struct Graph<'a> {
    pub nodes: Vec<Node>,
    input: Vec<usize>,
    namer: Namer,
    scalar: &'a TokenStream,
}

impl<'a> Graph<'a> {
    pub fn new(input: &[usize], scalar: &'a TokenStream) -> Self {
        Graph { nodes: Vec::new(), input: input.to_vec(), namer: Namer::new(), scalar }
    }

    fn shape(&self, s: Src) -> Vec<usize> {
        match s {
            Src::Input => self.input.clone(),
            Src::Node(j) => self.nodes[j].output().to_vec(),
        }
    }

    /// Plans `defs` in order, the first reading `src`; returns what the last gives
    /// (`src` itself for an empty list: the identity).
    pub fn seq(&mut self, defs: &[LayerDef], mut src: Src) -> syn::Result<Src> {
        for def in defs {
            match def {
                LayerDef::Builtin { .. } | LayerDef::Custom { .. } => {
                    let input = self.shape(src);
                    let index = self.nodes.len();
                    let planned = plan::plan(def, &input, index, &mut self.namer, self.scalar)?;
                    self.nodes.push(Node::Layer { planned, src });
                }
                LayerDef::Residual { ident, body, shortcut } => {
                    let input = self.shape(src);
                    let end = self.seq(body, src)?;
                    let skip = match shortcut {
                        Some((kw, layers)) => Some((kw.span(), self.seq(layers, src)?)),
                        None => None,
                    };
                    let body_out = self.shape(end);
                    let skip_out = skip.map(|(_, s)| self.shape(s));
                    kiln_spec::residual_output(&input, &body_out, skip_out.as_deref()).map_err(
                        |e| {
                            let at = skip.map_or(ident.span(), |(s, _)| s);
                            syn::Error::new(at, format!("Residual block: {}", e.message))
                        },
                    )?;
                    let name = self.namer.next("add");
                    self.nodes.push(Node::Merge {
                        name,
                        merge: Merge::ADD,
                        inputs: vec![end, skip.map_or(src, |(_, s)| s)],
                        residual: Some(src),
                        output: body_out,
                    });
                }
                LayerDef::Merge { ident, args, branches } => {
                    let written = ident.to_string();
                    let Some(entry) = merge_lookup(&written) else {
                        let mut names = merge_names();
                        names.push("Residual");
                        let hint = did_you_mean(&written, &names)
                            .map(|s| format!("did you mean `{s}`? "))
                            .unwrap_or_default();
                        return Err(syn::Error::new(
                            ident.span(),
                            format!(
                                "unknown block `{written}`; {hint}a block is `Residual[ .. ]` or a merge of bracketed branches ({}), as in `Add[[..], [..]]`",
                                names[..names.len() - 1].join(", ")
                            ),
                        ));
                    };
                    let mut given: Vec<(Option<String>, Value)> = Vec::new();
                    for a in args {
                        given.push((
                            a.name.as_ref().map(|n| n.to_string()),
                            plan::value_of(&a.value)?,
                        ));
                    }
                    let given: Vec<(Option<&str>, Value)> =
                        given.iter().map(|(n, v)| (n.as_deref(), v.clone())).collect();
                    let arg_span = |name: Option<&str>| -> Span {
                        args.iter()
                            .find(|a| a.name.as_ref().map(|n| n.to_string()).as_deref() == name)
                            .or(args.first())
                            .map_or(ident.span(), |a| a.value.span())
                    };
                    let merge = Merge::from_written(entry.class, &given).map_err(|e| {
                        let at = if e.arg.is_some() || e.written.is_some() {
                            arg_span(e.arg)
                        } else {
                            ident.span()
                        };
                        syn::Error::new(at, e.message)
                    })?;
                    let mut ends = Vec::new();
                    for b in branches {
                        ends.push(self.seq(b, src)?);
                    }
                    let shapes: Vec<Vec<usize>> = ends.iter().map(|&e| self.shape(e)).collect();
                    let refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
                    let output = merge.output(&refs).map_err(|e| {
                        let at = if e.arg.is_some() { arg_span(e.arg) } else { ident.span() };
                        syn::Error::new(at, e.message)
                    })?;
                    let name = self.namer.next(entry.base_name);
                    self.nodes.push(Node::Merge {
                        name,
                        merge,
                        inputs: ends,
                        residual: None,
                        output,
                    });
                }
            }
            src = Src::Node(self.nodes.len() - 1);
        }
        Ok(src)
    }
}
