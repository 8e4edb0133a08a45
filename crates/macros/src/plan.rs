//! Planning each layer of a `model!`: bind its written arguments to the layer's
//! kiln-spec table, evaluate its shape rule on the input shape (so a mismatch is a
//! compile error on the offending layer or argument), name it, and produce its type
//! and constructor.
//!
//! Nothing here knows a concrete layer: every built-in layer is found in
//! `kiln_spec::registry()`, its arguments are turned into `kiln_spec::Value`s by their
//! syntax alone, and the generated code names the layer's type as
//! `::kiln::layers::LayerOf<T, ::kiln::spec::layers::Ident>`. The runtime layer's
//! `build` evaluates the same shape rule; the generated `try_new` compares both.

use crate::parse::{Arg, LayerDef};
use kiln_spec::{Args, Namer, SpecError, Value, did_you_mean, layer_names, lookup};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit};

/// A layer after planning: its field, type, constructor and output shape.
pub struct Planned {
    pub field: Ident,
    pub name: String,
    pub ty: TokenStream,
    pub ctor: TokenStream,
    pub output: Vec<usize>,
    pub check: Option<TokenStream>,
}

fn err<T>(span: Span, msg: impl std::fmt::Display) -> syn::Result<T> {
    Err(syn::Error::new(span, msg))
}

/// A written argument as a value, by its syntax alone: number, `true`/`false`, a bare
/// name or a string, or a tuple/array of those.
pub fn value_of(e: &Expr) -> syn::Result<Value> {
    Ok(match e {
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => Value::Int(i.base10_parse()?),
        Expr::Lit(ExprLit { lit: Lit::Float(f), .. }) => Value::Float(f.base10_parse()?),
        Expr::Lit(ExprLit { lit: Lit::Bool(b), .. }) => Value::Bool(b.value),
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Value::Name(s.value()),
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => match value_of(&u.expr)? {
            Value::Int(i) => Value::Int(-i),
            Value::Float(f) => Value::Float(-f),
            _ => return err(e.span(), "only a number can be negated"),
        },
        Expr::Path(p) if p.path.get_ident().is_some() => {
            Value::Name(p.path.get_ident().map(|i| i.to_string()).unwrap_or_default())
        }
        Expr::Paren(p) => value_of(&p.expr)?,
        // A layer as an argument (`Bidirectional(LSTM(64))`): its class and arguments.
        Expr::Call(c) => {
            let Expr::Path(f) = &*c.func else {
                return err(c.func.span(), "a layer argument is written as `Layer(args)`");
            };
            let class = f.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
            let mut args = Vec::new();
            for a in &c.args {
                match a {
                    Expr::Assign(asg) => {
                        let Expr::Path(n) = &*asg.left else {
                            return err(asg.left.span(), "an argument name must be a plain name");
                        };
                        let name = n.path.get_ident().map(|i| i.to_string());
                        args.push((name, value_of(&asg.right)?));
                    }
                    other => args.push((None, value_of(other)?)),
                }
            }
            Value::Layer(class, args)
        }
        Expr::Tuple(t) => Value::List(t.elems.iter().map(value_of).collect::<syn::Result<_>>()?),
        Expr::Array(a) => Value::List(a.elems.iter().map(value_of).collect::<syn::Result<_>>()?),
        _ => {
            return err(
                e.span(),
                "a layer argument must be a literal: a number, true/false, a name such as relu, or a tuple/array of them",
            );
        }
    })
}

/// The tokens that rebuild `v` in the generated code.
pub fn value_tokens(v: &Value) -> TokenStream {
    match v {
        Value::Int(i) => quote!(::kiln::spec::Value::Int(#i)),
        Value::Float(f) => quote!(::kiln::spec::Value::Float(#f)),
        Value::Bool(b) => quote!(::kiln::spec::Value::Bool(#b)),
        Value::Name(s) => quote!(::kiln::spec::Value::name(#s)),
        Value::List(l) => {
            let items = l.iter().map(value_tokens);
            quote!(::kiln::spec::Value::List(::std::vec![#(#items),*]))
        }
        Value::Layer(class, args) => {
            let items = args.iter().map(|(n, v)| {
                let n = match n {
                    Some(n) => {
                        quote!(::core::option::Option::Some(::std::string::String::from(#n)))
                    }
                    None => quote!(::core::option::Option::None),
                };
                let v = value_tokens(v);
                quote!((#n, #v))
            });
            quote!(::kiln::spec::Value::Layer(::std::string::String::from(#class), ::std::vec![#(#items),*]))
        }
    }
}

/// A shape as a type: `::kiln::S3<28, 28, 1>`.
pub fn shape_type(dims: &[usize], at: Span) -> syn::Result<TokenStream> {
    Ok(match dims {
        [a] => quote!(::kiln::S1<#a>),
        [a, b] => quote!(::kiln::S2<#a, #b>),
        [a, b, c] => quote!(::kiln::S3<#a, #b, #c>),
        [a, b, c, d] => quote!(::kiln::S4<#a, #b, #c, #d>),
        _ => return err(at, format!("sample shapes have rank 1 to 4, but this one is {dims:?}")),
    })
}

/// The type a custom layer's constructor expression builds: `Type::new(..)` → `Type`,
/// `Type { .. }` → `Type`, a unit struct path → itself.
fn custom_type(expr: &Expr) -> syn::Result<syn::Path> {
    let path = match expr {
        Expr::Call(c) => match &*c.func {
            Expr::Path(p) if p.path.segments.len() >= 2 => {
                let mut path = p.path.clone();
                path.segments.pop();
                let last = path.segments.pop().expect("two or more segments").into_value();
                path.segments.push(last);
                path
            }
            _ => {
                return err(
                    expr.span(),
                    "write the custom layer as `Type::constructor(..)` or `Type { .. }`, so that kiln can name its type",
                );
            }
        },
        Expr::Struct(s) => s.path.clone(),
        Expr::Path(p) => p.path.clone(),
        _ => {
            return err(
                expr.span(),
                "write the custom layer as `Type::constructor(..)` or `Type { .. }`, so that kiln can name its type",
            );
        }
    };
    Ok(path)
}

/// Plans one layer given its input shape: checks its arguments and shape, names it.
pub fn plan(
    def: &LayerDef,
    input: &[usize],
    index: usize,
    namer: &mut Namer,
    scalar: &TokenStream,
) -> syn::Result<Planned> {
    match def {
        LayerDef::Custom { expr, output, tape, .. } => {
            let path = custom_type(expr)?;
            let last =
                path.segments.last().map(|s| s.ident.to_string()).unwrap_or_else(|| "layer".into());
            let name = namer.next(&kiln_spec::snake_case(&last));
            let out = output.as_ref().map_or(input.to_vec(), |(d, _)| d.clone());
            let out_span = output.as_ref().map_or(expr.span(), |(_, s)| *s);
            let (ty, ctor) = if *tape {
                (
                    quote!(::kiln::layers::TapeLayer<#path>),
                    quote!(::kiln::layers::TapeLayer::new(#expr)),
                )
            } else {
                (quote!(#path), quote!(#expr))
            };
            let it = shape_type(input, expr.span())?;
            let ot = shape_type(&out, out_span)?;
            let field = format_ident!("{name}");
            let check = quote_spanned!(expr.span()=> ::kiln::layers::check_custom_layer::<_, #it, #ot>(&#field););
            Ok(Planned { field, name, ty, ctor, output: out, check: Some(check) })
        }
        LayerDef::Builtin { ident, args } => plan_builtin(ident, args, input, index, namer, scalar),
        LayerDef::Residual { ident, .. } | LayerDef::Merge { ident, .. } => {
            err(ident.span(), "a block is planned by the graph, not as a layer")
        }
    }
}

fn plan_builtin(
    ident: &Ident,
    args: &[Arg],
    input: &[usize],
    index: usize,
    namer: &mut Namer,
    scalar: &TokenStream,
) -> syn::Result<Planned> {
    let written = ident.to_string();
    let Some(entry) = lookup(&written) else {
        let names = layer_names();
        let hint = did_you_mean(&written, &names)
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        let custom = if written.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            " Custom layers are written `layer(Type::new(..))` or `tape(Module { .. })`."
        } else {
            ""
        };
        return err(
            ident.span(),
            format!(
                "unknown layer `{written}`; {hint}the built-in layers are listed in the docs of `kiln::layers`.{custom}"
            ),
        );
    };
    let mut given = Vec::with_capacity(args.len());
    for a in args {
        given.push((a.name.as_ref().map(|n| n.to_string()), value_of(&a.value)?));
    }
    let given: Vec<(Option<&str>, Value)> =
        given.iter().map(|(n, v)| (n.as_deref(), v.clone())).collect();
    // The span of written argument `w`: its name where it has one and `name` asks.
    let span_of = |w: usize, name: bool| match (&args[w].name, name) {
        (Some(n), true) => n.span(),
        _ => args[w].value.span(),
    };
    let bound = Args::bind(entry.class, entry.args, entry.positional, &given).map_err(|e| {
        syn::Error::new(e.written.map_or(ident.span(), |w| span_of(w, true)), e.message)
    })?;
    let name = namer.next(entry.base_name);
    let output = (entry.output)(&given, input).map_err(|e: SpecError| {
        let at = e.written.or_else(|| e.arg.and_then(|a| bound.written_index(a)));
        match (e.arg, at) {
            // About one written argument: point at it; the span shows the layer.
            (Some(_), Some(w)) => syn::Error::new(span_of(w, false), e.message),
            _ => syn::Error::new(
                ident.span(),
                format!("layer {} `{name}` ({written}): {}", index + 1, e.message),
            ),
        }
    })?;
    let spec_ty = format_ident!("{}", entry.ident);
    let ty = quote!(::kiln::layers::LayerOf<#scalar, ::kiln::spec::layers::#spec_ty>);
    let pairs = given.iter().map(|(n, v)| {
        let n = match n {
            Some(n) => quote!(::core::option::Option::Some(#n)),
            None => quote!(::core::option::Option::None),
        };
        let v = value_tokens(v);
        quote!((#n, #v))
    });
    let ctor = quote!(::kiln::layers::from_args::<#scalar, ::kiln::spec::layers::#spec_ty>(&[#(#pairs),*])?);
    Ok(Planned { field: format_ident!("{name}"), name, ty, ctor, output, check: None })
}
