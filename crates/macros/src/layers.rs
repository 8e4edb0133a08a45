//! The built-in layers as the macro knows them: their Keras arguments, their shape rules
//! (evaluated while expanding, so a mismatch is a compile error on the offending layer)
//! and the code that constructs them.
//!
//! The shape rules mirror each layer's `Layer::build` in the kiln crate; the generated
//! `try_new` compares both and reports a disagreement, and kiln's tests build every
//! layer both ways.

use crate::parse::{Arg, LayerDef};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use std::collections::HashMap;
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
    /// The built-in layer's class ("Conv2D"), empty for custom layers.
    pub class: &'static str,
}

struct Spec {
    class: &'static str,
    aliases: &'static [&'static str],
    base: &'static str,
    /// Argument names, positional ones first in Keras's order.
    params: &'static [&'static str],
    positional: usize,
}

const SPECS: &[Spec] = &[
    Spec {
        class: "Dense",
        aliases: &[],
        base: "dense",
        params: &["units", "activation", "use_bias", "kernel_initializer", "bias_initializer"],
        positional: 1,
    },
    Spec {
        class: "Conv2D",
        aliases: &["Convolution2D"],
        base: "conv2d",
        params: &[
            "filters",
            "kernel",
            "strides",
            "padding",
            "activation",
            "use_bias",
            "kernel_initializer",
            "bias_initializer",
            "kernel_size",
        ],
        positional: 2,
    },
    Spec {
        class: "MaxPool2D",
        aliases: &["MaxPooling2D"],
        base: "max_pooling2d",
        params: &["pool", "strides", "padding", "pool_size"],
        positional: 1,
    },
    Spec {
        class: "AveragePooling2D",
        aliases: &["AvgPool2D"],
        base: "average_pooling2d",
        params: &["pool", "strides", "padding", "pool_size"],
        positional: 1,
    },
    Spec {
        class: "GlobalAveragePooling2D",
        aliases: &["GlobalAvgPool2D"],
        base: "global_average_pooling2d",
        params: &[],
        positional: 0,
    },
    Spec { class: "Flatten", aliases: &[], base: "flatten", params: &[], positional: 0 },
    Spec {
        class: "Reshape",
        aliases: &[],
        base: "reshape",
        params: &["target_shape"],
        positional: 1,
    },
    Spec { class: "Dropout", aliases: &[], base: "dropout", params: &["rate"], positional: 1 },
    Spec {
        class: "BatchNormalization",
        aliases: &[],
        base: "batch_normalization",
        params: &["momentum", "epsilon"],
        positional: 0,
    },
    Spec {
        class: "LayerNormalization",
        aliases: &[],
        base: "layer_normalization",
        params: &["epsilon"],
        positional: 0,
    },
    Spec {
        class: "Embedding",
        aliases: &[],
        base: "embedding",
        params: &["input_dim", "output_dim"],
        positional: 2,
    },
    Spec {
        class: "Activation",
        aliases: &[],
        base: "activation",
        params: &["activation"],
        positional: 1,
    },
    Spec { class: "ReLU", aliases: &[], base: "re_lu", params: &[], positional: 0 },
    Spec {
        class: "LeakyReLU",
        aliases: &[],
        base: "leaky_re_lu",
        params: &["negative_slope"],
        positional: 1,
    },
    Spec { class: "ELU", aliases: &[], base: "elu", params: &["alpha"], positional: 1 },
    Spec { class: "SELU", aliases: &[], base: "selu", params: &[], positional: 0 },
    Spec { class: "GELU", aliases: &[], base: "gelu", params: &["approximate"], positional: 1 },
    Spec { class: "Sigmoid", aliases: &[], base: "sigmoid", params: &[], positional: 0 },
    Spec { class: "Tanh", aliases: &[], base: "tanh", params: &[], positional: 0 },
    Spec { class: "Softmax", aliases: &[], base: "softmax", params: &[], positional: 0 },
    Spec { class: "Softplus", aliases: &[], base: "softplus", params: &[], positional: 0 },
    Spec { class: "Swish", aliases: &[], base: "swish", params: &[], positional: 0 },
];

const ACTIVATIONS: &[&str] = &[
    "linear",
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "sigmoid",
    "hard_sigmoid",
    "tanh",
    "softplus",
    "softsign",
    "swish",
    "silu",
    "softmax",
];
const INITIALIZERS: &[&str] = &[
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "zeros",
    "ones",
];
const PADDINGS: &[&str] = &["valid", "same"];

/// The closest candidate within a few edits (transpositions count one), for "did you
/// mean". (kiln-train has the same rule for run-time names; a proc-macro crate cannot
/// share it without building the training crate for the host.)
pub fn did_you_mean<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let a: Vec<char> = name.to_ascii_lowercase().chars().collect();
    let dist = |c: &str| {
        let b: Vec<char> = c.to_ascii_lowercase().chars().collect();
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        for (j, v) in d[0].iter_mut().enumerate() {
            *v = j;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                d[i][j] = (d[i - 1][j - 1] + cost).min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
                }
            }
        }
        d[a.len()][b.len()]
    };
    candidates
        .iter()
        .map(|c| (dist(c), *c))
        .min()
        .filter(|(d, _)| *d <= (name.len() / 3).max(1) + usize::from(name.len() > 6))
        .map(|(_, c)| c)
}

fn err<T>(span: Span, msg: impl std::fmt::Display) -> syn::Result<T> {
    Err(syn::Error::new(span, msg))
}

fn suggestion(name: &str, candidates: &[&str]) -> String {
    did_you_mean(name, candidates).map(|s| format!("did you mean `{s}`? ")).unwrap_or_default()
}

/// Arguments of one layer, by name.
struct Args<'a> {
    class: &'static str,
    map: HashMap<&'static str, &'a Expr>,
}

impl<'a> Args<'a> {
    fn collect(spec: &Spec, args: &'a [Arg], at: Span) -> syn::Result<Self> {
        let mut map = HashMap::new();
        let mut pos = 0;
        for a in args {
            let name: &'static str = match &a.name {
                None => {
                    if pos >= spec.positional {
                        return err(
                            a.value.span(),
                            format!(
                                "{} takes {} positional argument(s); name the others, as in `{}`",
                                spec.class,
                                spec.positional,
                                example(spec)
                            ),
                        );
                    }
                    pos += 1;
                    spec.params[pos - 1]
                }
                Some(n) => {
                    let s = n.to_string();
                    match spec.params.iter().find(|p| **p == s) {
                        Some(p) => p,
                        None => {
                            let valid: Vec<&str> = spec
                                .params
                                .iter()
                                .copied()
                                .filter(|p| !p.ends_with("_size"))
                                .collect();
                            return err(
                                n.span(),
                                if valid.is_empty() {
                                    format!("{} takes no arguments", spec.class)
                                } else {
                                    format!(
                                        "{} has no argument `{s}`; {}its arguments are: {}",
                                        spec.class,
                                        suggestion(&s, spec.params),
                                        valid.join(", ")
                                    )
                                },
                            );
                        }
                    }
                }
            };
            let canonical = match name {
                "kernel_size" => "kernel",
                "pool_size" => "pool",
                n => n,
            };
            if map.insert(canonical, &a.value).is_some() {
                return err(a.value.span(), format!("{} gets `{canonical}` twice", spec.class));
            }
        }
        let _ = at;
        Ok(Args { class: spec.class, map })
    }

    fn get(&self, name: &str) -> Option<&'a Expr> {
        self.map.get(name).copied()
    }

    fn required(&self, name: &str, at: Span) -> syn::Result<&'a Expr> {
        self.get(name).ok_or_else(|| syn::Error::new(at, format!("{} needs `{name}`", self.class)))
    }
}

fn example(spec: &Spec) -> String {
    match spec.class {
        "Dense" => "Dense(10, activation = softmax)".into(),
        "Conv2D" => "Conv2D(32, kernel = 3, activation = relu)".into(),
        c => format!("{c}(...)"),
    }
}

fn usize_of(e: &Expr, what: &str) -> syn::Result<usize> {
    match e {
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse(),
        _ => err(e.span(), format!("{what} must be a whole number literal")),
    }
}

fn pair_of(e: &Expr, what: &str) -> syn::Result<(usize, usize)> {
    match e {
        Expr::Tuple(t) if t.elems.len() == 2 => {
            Ok((usize_of(&t.elems[0], what)?, usize_of(&t.elems[1], what)?))
        }
        Expr::Paren(p) => pair_of(&p.expr, what),
        _ => usize_of(e, what).map(|v| (v, v)).map_err(|_| {
            syn::Error::new(e.span(), format!("{what} must be a number or a pair `(h, w)`"))
        }),
    }
}

fn f64_of(e: &Expr, what: &str) -> syn::Result<f64> {
    match e {
        Expr::Lit(ExprLit { lit: Lit::Float(f), .. }) => f.base10_parse(),
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse(),
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => f64_of(&u.expr, what).map(|v| -v),
        _ => err(e.span(), format!("{what} must be a number literal")),
    }
}

fn bool_of(e: &Expr, what: &str) -> syn::Result<bool> {
    match e {
        Expr::Lit(ExprLit { lit: Lit::Bool(b), .. }) => Ok(b.value),
        _ => err(e.span(), format!("{what} must be `true` or `false`")),
    }
}

/// A bare name (`relu`) or a string (`"relu"`) from a fixed set.
fn choice_of(e: &Expr, what: &str, valid: &[&str]) -> syn::Result<String> {
    let name = match e {
        Expr::Path(p) if p.path.get_ident().is_some() => {
            p.path.get_ident().map(|i| i.to_string()).unwrap_or_default()
        }
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => s.value(),
        _ => return err(e.span(), format!("{what} must be a name, one of: {}", valid.join(", "))),
    };
    if !valid.contains(&name.as_str()) {
        return err(
            e.span(),
            format!(
                "unknown {what} `{name}`; {}valid: {}",
                suggestion(&name, valid),
                valid.join(", ")
            ),
        );
    }
    Ok(name)
}

fn dims_of(e: &Expr, what: &str) -> syn::Result<Vec<usize>> {
    match e {
        Expr::Array(a) => a.elems.iter().map(|x| usize_of(x, what)).collect(),
        _ => err(e.span(), format!("{what} must be an array such as [7, 7, 16]")),
    }
}

fn act_tokens(name: &str) -> TokenStream {
    let el =
        |v: TokenStream| quote!(::kiln::layers::Act::Elementwise(::kiln::tape::Activation::#v));
    match name {
        "softmax" => quote!(::kiln::layers::Act::Softmax),
        "linear" => el(quote!(Linear)),
        "relu" => el(quote!(Relu)),
        "leaky_relu" => el(quote!(LeakyRelu(0.2))),
        "elu" => el(quote!(Elu(1.0))),
        "selu" => el(quote!(Selu)),
        "gelu" => el(quote!(Gelu { approximate: false })),
        "sigmoid" => el(quote!(Sigmoid)),
        "hard_sigmoid" => el(quote!(HardSigmoid)),
        "tanh" => el(quote!(Tanh)),
        "softplus" => el(quote!(Softplus)),
        "softsign" => el(quote!(Softsign)),
        _ => el(quote!(Swish)),
    }
}

fn init_tokens(name: &str) -> TokenStream {
    let v = format_ident!(
        "{}",
        name.split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<String>()
    );
    quote!(::kiln::init::Initializer::#v)
}

fn padding_tokens(same: bool) -> TokenStream {
    if same {
        quote!(::kiln::tape::kernels::Padding::Same)
    } else {
        quote!(::kiln::tape::kernels::Padding::Valid)
    }
}

/// Output size of one spatial axis (Keras's rules), `None` when a valid window does
/// not fit.
fn window(input: usize, k: usize, s: usize, same: bool) -> Option<usize> {
    if same { Some(input.div_ceil(s)) } else { (input >= k).then(|| (input - k) / s + 1) }
}

fn snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The Keras-style model name of a struct (`ConvNet` → `conv_net`).
pub fn model_name(s: &str) -> String {
    snake(s)
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

fn unique_name(base: &str, counts: &mut HashMap<String, usize>) -> String {
    let c = counts.entry(base.to_string()).or_insert(0);
    let n = if *c == 0 { base.to_string() } else { format!("{base}_{c}") };
    *c += 1;
    n
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
    counts: &mut HashMap<String, usize>,
) -> syn::Result<Planned> {
    match def {
        LayerDef::Custom { expr, output, tape, .. } => {
            let path = custom_type(expr)?;
            let last =
                path.segments.last().map(|s| s.ident.to_string()).unwrap_or_else(|| "layer".into());
            let name = unique_name(&snake(&last), counts);
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
            Ok(Planned { field, name, ty, ctor, output: out, check: Some(check), class: "" })
        }
        LayerDef::Builtin { ident, args } => {
            let written = ident.to_string();
            let Some(spec) =
                SPECS.iter().find(|s| s.class == written || s.aliases.contains(&written.as_str()))
            else {
                let all: Vec<&str> = SPECS
                    .iter()
                    .flat_map(|s| std::iter::once(s.class).chain(s.aliases.iter().copied()))
                    .collect();
                let hint = if written.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                    " Custom layers are written `layer(Type::new(..))` or `tape(Module { .. })`."
                } else {
                    ""
                };
                return err(
                    ident.span(),
                    format!(
                        "unknown layer `{written}`; {}built-in layers: {}.{hint}",
                        suggestion(&written, &all),
                        SPECS.iter().map(|s| s.class).collect::<Vec<_>>().join(", ")
                    ),
                );
            };
            let at = ident.span();
            let a = Args::collect(spec, args, at)?;
            let name = unique_name(spec.base, counts);
            let shape_err = |msg: String| -> syn::Error {
                syn::Error::new(at, format!("layer {} `{name}` ({}): {msg}", index + 1, spec.class))
            };
            let act = |a: &Args| -> syn::Result<Option<TokenStream>> {
                a.get("activation")
                    .map(|e| choice_of(e, "activation", ACTIVATIONS).map(|n| act_tokens(&n)))
                    .transpose()
            };
            let inits = |a: &Args| -> syn::Result<TokenStream> {
                let mut t = TokenStream::new();
                for (key, method) in [
                    ("kernel_initializer", quote!(kernel_initializer)),
                    ("bias_initializer", quote!(bias_initializer)),
                ] {
                    if let Some(e) = a.get(key) {
                        let i = init_tokens(&choice_of(e, "initializer", INITIALIZERS)?);
                        t.extend(quote!(.#method(#i)));
                    }
                }
                if let Some(e) = a.get("use_bias") {
                    let b = bool_of(e, "use_bias")?;
                    t.extend(quote!(.use_bias(#b)));
                }
                Ok(t)
            };
            let (ty, ctor, output): (TokenStream, TokenStream, Vec<usize>) = match spec.class {
                "Dense" => {
                    let units = usize_of(a.required("units", at)?, "units")?;
                    if units == 0 {
                        return Err(shape_err("Dense needs at least 1 unit, got 0".into()));
                    }
                    if input.len() != 1 {
                        return Err(shape_err(format!(
                            "Dense needs a flat input but gets {input:?}: add Flatten before it"
                        )));
                    }
                    let mut c = quote!(::kiln::layers::Dense::<f32>::new(#units));
                    if let Some(act) = act(&a)? {
                        c.extend(quote!(.activation(#act)));
                    }
                    c.extend(inits(&a)?);
                    (quote!(::kiln::layers::Dense<f32>), c, vec![units])
                }
                "Conv2D" => {
                    let filters = usize_of(a.required("filters", at)?, "filters")?;
                    let (kh, kw) = pair_of(a.required("kernel", at)?, "kernel")?;
                    let (sh, sw) =
                        a.get("strides").map_or(Ok((1, 1)), |e| pair_of(e, "strides"))?;
                    let same = a.get("padding").map_or(Ok(false), |e| {
                        choice_of(e, "padding", PADDINGS).map(|p| p == "same")
                    })?;
                    if filters == 0 || kh == 0 || kw == 0 || sh == 0 || sw == 0 {
                        return Err(shape_err(format!(
                            "filters, kernel size and strides must be at least 1, got filters {filters}, kernel ({kh}, {kw}), strides ({sh}, {sw})"
                        )));
                    }
                    let &[h, w, _] = input else {
                        return Err(shape_err(format!(
                            "Conv2D needs an input [height, width, channels] but gets {input:?}: add Reshape([h, w, c]) before it"
                        )));
                    };
                    let (Some(oh), Some(ow)) = (window(h, kh, sh, same), window(w, kw, sw, same))
                    else {
                        return Err(shape_err(format!(
                            "the {kh}x{kw} kernel does not fit the {h}x{w} input {input:?} with padding = valid: use padding = same, a smaller kernel, or fewer pooling layers before it"
                        )));
                    };
                    let pad = padding_tokens(same);
                    let mut c = quote!(::kiln::layers::Conv2D::<f32>::new(#filters).kernel(#kh, #kw).strides(#sh, #sw).padding(#pad));
                    if let Some(act) = act(&a)? {
                        c.extend(quote!(.activation(#act)));
                    }
                    c.extend(inits(&a)?);
                    (quote!(::kiln::layers::Conv2D<f32>), c, vec![oh, ow, filters])
                }
                "MaxPool2D" | "AveragePooling2D" => {
                    let (ph, pw) = a.get("pool").map_or(Ok((2, 2)), |e| pair_of(e, "pool size"))?;
                    let (sh, sw) =
                        a.get("strides").map_or(Ok((ph, pw)), |e| pair_of(e, "strides"))?;
                    let same = a.get("padding").map_or(Ok(false), |e| {
                        choice_of(e, "padding", PADDINGS).map(|p| p == "same")
                    })?;
                    if ph == 0 || pw == 0 || sh == 0 || sw == 0 {
                        return Err(shape_err(format!(
                            "pool size and strides must be at least 1, got pool ({ph}, {pw}), strides ({sh}, {sw})"
                        )));
                    }
                    let &[h, w, c] = input else {
                        return Err(shape_err(format!(
                            "{} needs an input [height, width, channels] but gets {input:?}",
                            spec.class
                        )));
                    };
                    let (Some(oh), Some(ow)) = (window(h, ph, sh, same), window(w, pw, sw, same))
                    else {
                        return Err(shape_err(format!(
                            "the {ph}x{pw} window does not fit the {h}x{w} input {input:?} with padding = valid: use padding = same or a smaller pool"
                        )));
                    };
                    let pad = padding_tokens(same);
                    let ty = if spec.class == "MaxPool2D" {
                        quote!(::kiln::layers::MaxPool2D)
                    } else {
                        quote!(::kiln::layers::AveragePooling2D)
                    };
                    (
                        ty.clone(),
                        quote!(#ty::new(1).pool(#ph, #pw).strides(#sh, #sw).padding(#pad)),
                        vec![oh, ow, c],
                    )
                }
                "GlobalAveragePooling2D" => {
                    let &[_, _, c] = input else {
                        return Err(shape_err(format!(
                            "GlobalAveragePooling2D needs an input [height, width, channels] but gets {input:?}"
                        )));
                    };
                    (
                        quote!(::kiln::layers::GlobalAveragePooling2D),
                        quote!(::kiln::layers::GlobalAveragePooling2D::new()),
                        vec![c],
                    )
                }
                "Flatten" => (
                    quote!(::kiln::layers::Flatten),
                    quote!(::kiln::layers::Flatten),
                    vec![input.iter().product()],
                ),
                "Reshape" => {
                    let target = dims_of(a.required("target_shape", at)?, "target shape")?;
                    let (n_in, n_out): (usize, usize) =
                        (input.iter().product(), target.iter().product());
                    if n_in != n_out || target.contains(&0) {
                        return Err(shape_err(format!(
                            "Reshape to {target:?} holds {n_out} values but its input {input:?} holds {n_in}: the element counts must match"
                        )));
                    }
                    (
                        quote!(::kiln::layers::Reshape),
                        quote!(::kiln::layers::Reshape::new(&[#(#target),*])),
                        target,
                    )
                }
                "Dropout" => {
                    let rate = f64_of(a.required("rate", at)?, "rate")?;
                    if !(0.0..1.0).contains(&rate) {
                        return Err(shape_err(format!(
                            "the Dropout rate must be in [0, 1), got {rate}: it is the fraction of inputs dropped"
                        )));
                    }
                    (
                        quote!(::kiln::layers::Dropout<f32>),
                        quote!(::kiln::layers::Dropout::<f32>::new(#rate)),
                        input.to_vec(),
                    )
                }
                "BatchNormalization" => {
                    let m = a.get("momentum").map_or(Ok(0.99), |e| f64_of(e, "momentum"))?;
                    let e = a.get("epsilon").map_or(Ok(1e-3), |e| f64_of(e, "epsilon"))?;
                    if !(0.0..=1.0).contains(&m) || e < 0.0 {
                        return Err(shape_err(format!(
                            "momentum must be in [0, 1] and epsilon ≥ 0, got {m} and {e}"
                        )));
                    }
                    (
                        quote!(::kiln::layers::BatchNormalization<f32>),
                        quote!(::kiln::layers::BatchNormalization::<f32>::new().momentum(#m).epsilon(#e)),
                        input.to_vec(),
                    )
                }
                "LayerNormalization" => {
                    let e = a.get("epsilon").map_or(Ok(1e-3), |e| f64_of(e, "epsilon"))?;
                    (
                        quote!(::kiln::layers::LayerNormalization<f32>),
                        quote!(::kiln::layers::LayerNormalization::<f32>::new().epsilon(#e)),
                        input.to_vec(),
                    )
                }
                "Embedding" => {
                    let vocab = usize_of(a.required("input_dim", at)?, "input_dim")?;
                    let dim = usize_of(a.required("output_dim", at)?, "output_dim")?;
                    if vocab == 0 || dim == 0 {
                        return Err(shape_err(
                            "input_dim and output_dim must be at least 1".into(),
                        ));
                    }
                    let mut out = input.to_vec();
                    out.push(dim);
                    (
                        quote!(::kiln::layers::Embedding),
                        quote!(::kiln::layers::Embedding::new(#vocab, #dim)),
                        out,
                    )
                }
                class => {
                    let ctor = match class {
                        "Activation" => {
                            let act = act_tokens(&choice_of(
                                a.required("activation", at)?,
                                "activation",
                                ACTIVATIONS,
                            )?);
                            quote!(::kiln::layers::Activation::<f32>::new(#act))
                        }
                        "LeakyReLU" => {
                            let s = a
                                .get("negative_slope")
                                .map_or(Ok(0.3), |e| f64_of(e, "negative_slope"))?;
                            quote!(::kiln::layers::Activation::<f32>::leaky_relu(#s))
                        }
                        "ELU" => {
                            let al = a.get("alpha").map_or(Ok(1.0), |e| f64_of(e, "alpha"))?;
                            quote!(::kiln::layers::Activation::<f32>::elu(#al))
                        }
                        "GELU" => {
                            let ap = a
                                .get("approximate")
                                .map_or(Ok(false), |e| bool_of(e, "approximate"))?;
                            quote!(::kiln::layers::Activation::<f32>::gelu(#ap))
                        }
                        other => {
                            let f = format_ident!(
                                "{}",
                                snake(&other.to_ascii_lowercase()).replace("re_lu", "relu")
                            );
                            quote!(::kiln::layers::Activation::<f32>::#f())
                        }
                    };
                    if input.is_empty() {
                        return Err(shape_err("an activation needs a non-empty input".into()));
                    }
                    (quote!(::kiln::layers::Activation<f32>), ctor, input.to_vec())
                }
            };
            Ok(Planned {
                field: format_ident!("{name}"),
                name,
                ty,
                ctor,
                output,
                check: None,
                class: spec.class,
            })
        }
    }
}
