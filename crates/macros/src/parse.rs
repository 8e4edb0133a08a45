//! Parsing `model! { #[attrs] vis struct Name: [dims] => [ layers ] }`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Ident, LitInt, Token, Visibility, bracketed, parenthesized};

/// One `name = value` or positional argument of a layer.
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(Ident) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
            let name: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            Ok(Arg { name: Some(name), value: input.parse()? })
        } else {
            Ok(Arg { name: None, value: input.parse()? })
        }
    }
}

/// A layer as written.
pub enum LayerDef {
    /// `Dense(10, activation = softmax)` or `Flatten`.
    Builtin { ident: Ident, args: Vec<Arg> },
    /// `layer(Type::new(..)) -> [dims]` (hand-written) or `tape(Module { .. }) -> [dims]`.
    Custom { kw: Ident, expr: Expr, output: Option<(Vec<usize>, Span)>, tape: bool },
    /// `Residual[ body ]`, `Residual[ body ] + shortcut[ layers ]`.
    Residual { ident: Ident, body: Vec<LayerDef>, shortcut: Option<(Ident, Vec<LayerDef>)> },
    /// `Add[[..], [..]]`, `Concatenate(axis = -1)[[..], [..]]`: a merge of branches
    /// that all read the block's input.
    Merge { ident: Ident, args: Vec<Arg>, branches: Vec<Vec<LayerDef>> },
}

impl LayerDef {
    pub fn span(&self) -> Span {
        match self {
            LayerDef::Builtin { ident, .. } => ident.span(),
            LayerDef::Custom { kw, .. } => kw.span(),
            LayerDef::Residual { ident, .. } | LayerDef::Merge { ident, .. } => ident.span(),
        }
    }
}

fn dims(input: ParseStream) -> syn::Result<(Vec<usize>, Span)> {
    let content;
    let b = bracketed!(content in input);
    let lits: Punctuated<LitInt, Token![,]> = content.parse_terminated(LitInt::parse, Token![,])?;
    let mut out = Vec::new();
    for l in &lits {
        out.push(l.base10_parse::<usize>()?);
    }
    Ok((out, b.span.join()))
}

/// A bracketed, comma-separated list of layers (`[]` is allowed: the identity).
fn layer_list(input: ParseStream) -> syn::Result<Vec<LayerDef>> {
    let content;
    bracketed!(content in input);
    let layers: Punctuated<LayerDef, Token![,]> =
        content.parse_terminated(LayerDef::parse, Token![,])?;
    Ok(layers.into_iter().collect())
}

impl Parse for LayerDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let ident: Ident = input.parse()?;
        let custom = (ident == "layer" || ident == "tape") && input.peek(syn::token::Paren);
        let content;
        let args = if input.peek(syn::token::Paren) {
            parenthesized!(content in input);
            Some(content)
        } else {
            None
        };
        if custom {
            let content = args.expect("peeked a parenthesis");
            let expr: Expr = content.parse()?;
            let output = if input.peek(Token![->]) {
                input.parse::<Token![->]>()?;
                Some(dims(input)?)
            } else {
                None
            };
            return Ok(LayerDef::Custom { tape: ident == "tape", kw: ident, expr, output });
        }
        let args = match args {
            Some(c) => Punctuated::<Arg, Token![,]>::parse_terminated(&c)?.into_iter().collect(),
            None => Vec::new(),
        };
        if ident == "Residual" {
            if !input.peek(syn::token::Bracket) {
                return Err(syn::Error::new(
                    ident.span(),
                    "a residual block lists its body in brackets: `Residual[ Conv2D(..), .. ]`",
                ));
            }
            if !args.is_empty() {
                return Err(syn::Error::new(ident.span(), "Residual takes no arguments"));
            }
            let body = layer_list(input)?;
            let shortcut = if input.peek(Token![+]) {
                input.parse::<Token![+]>()?;
                let kw: Ident = input.parse()?;
                if kw != "shortcut" {
                    return Err(syn::Error::new(
                        kw.span(),
                        "after `Residual[ .. ] +` comes the projection: `shortcut[ Conv2D(64, kernel = 1, strides = 2) ]`",
                    ));
                }
                Some((kw, layer_list(input)?))
            } else {
                None
            };
            return Ok(LayerDef::Residual { ident, body, shortcut });
        }
        if input.peek(syn::token::Bracket) {
            let content;
            bracketed!(content in input);
            let mut branches = Vec::new();
            while !content.is_empty() {
                if !content.peek(syn::token::Bracket) {
                    return Err(content.error(format!(
                        "each branch of {ident} is a bracketed list of layers: `{ident}[[Dense(4)], [Dense(3)]]` (`[]` is the identity)"
                    )));
                }
                branches.push(layer_list(&content)?);
                if content.is_empty() {
                    break;
                }
                content.parse::<Token![,]>()?;
            }
            return Ok(LayerDef::Merge { ident, args, branches });
        }
        Ok(LayerDef::Builtin { ident, args })
    }
}

/// The whole declaration.
pub struct ModelDef {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub input: Vec<usize>,
    pub input_span: Span,
    pub layers: Vec<LayerDef>,
}

impl Parse for ModelDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        input.parse::<Token![struct]>()?;
        let name: Ident = input.parse()?;
        input.parse::<Token![:]>().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected `:` and the input shape, as in `struct Net: [784] => [ .. ]`",
            )
        })?;
        let (shape, input_span) = dims(input)?;
        input.parse::<Token![=>]>().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected `=>` and the list of layers, as in `struct Net: [784] => [ Dense(10) ]`",
            )
        })?;
        let content;
        bracketed!(content in input);
        let layers: Punctuated<LayerDef, Token![,]> =
            content.parse_terminated(LayerDef::parse, Token![,])?;
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the layer list"));
        }
        Ok(ModelDef {
            attrs,
            vis,
            name,
            input: shape,
            input_span,
            layers: layers.into_iter().collect(),
        })
    }
}
