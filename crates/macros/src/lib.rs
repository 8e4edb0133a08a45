//! kiln-macros: the `model!` proc macro, which declares a network once — a stack of
//! layers, with residual and merge blocks where it branches — checks every layer's and
//! every branch's shape while the program compiles and generates its constructor and
//! its forward and backward passes.
//!
//! Use it through the `kiln` crate (`kiln::model!`); the generated code names items
//! under `::kiln`.

mod graph;
mod parse;
mod plan;

use parse::ModelDef;
use proc_macro::TokenStream;
use quote::quote;

/// Declares a network whose shapes are checked at compile time.
///
/// ```ignore
/// kiln::model! {
///     /// The Keras "simple MNIST convnet".
///     pub struct ConvNet: [28, 28, 1] => [
///         Conv2D(32, kernel = 3, activation = relu),
///         MaxPool2D(2),
///         Conv2D(64, kernel = 3, activation = relu),
///         MaxPool2D(2),
///         Flatten,
///         Dropout(0.5),
///         Dense(10, activation = softmax),
///     ]
/// }
/// ```
///
/// It generates the struct with one public field per layer (named as Keras names
/// layers: `conv2d`, `conv2d_1`, ...), `Name::new(Seed(..))`, `Name::try_new`,
/// `summary()`, and the `kiln::Model` implementation with input and output shape types.
/// A layer that does not fit its input is a compile error on that layer, saying the
/// shapes and the fix.
///
/// Blocks nest anywhere in the list: `Residual[ layers ]` adds the block's input to
/// what its layers give (they must keep the shape), `Residual[ layers ] + shortcut[
/// layers ]` adds a projection of it instead, and a merge over bracketed branches that
/// all read the block's input — `Add[[..], [..]]`, `Subtract`, `Multiply`, `Average`,
/// `Maximum`, `Minimum`, `Concatenate(axis = -1)[[..], [..]]`, `[]` being the identity —
/// joins them as Keras's merge layers do. A branch that does not fit is a compile error
/// on the block, naming both shapes and the fix:
///
/// ```ignore
/// kiln::model! {
///     pub struct ResNet: [28, 28, 1] => [
///         Conv2D(32, kernel = 3, padding = same, activation = relu),
///         Residual[
///             Conv2D(32, kernel = 3, padding = same, use_bias = false),
///             BatchNormalization, ReLU,
///             Conv2D(32, kernel = 3, padding = same, use_bias = false),
///             BatchNormalization,
///         ],
///         ReLU,
///         Residual[
///             Conv2D(64, kernel = 3, strides = 2, padding = same, activation = relu),
///             Conv2D(64, kernel = 3, padding = same),
///         ] + shortcut[ Conv2D(64, kernel = 1, strides = 2) ],
///         GlobalAveragePooling2D,
///         Dense(10, activation = softmax),
///     ]
/// }
/// ```
///
/// Every built-in layer of `kiln::layers` can be written with its Keras class name and
/// Keras's arguments (positional ones in Keras's order); kiln-spec holds each layer's
/// table and shape rule, so the macro knows no layer by name. The network computes in
/// `f32` (Keras's default) unless the declaration carries `#[dtype(f64)]`.
#[proc_macro]
pub fn model(input: TokenStream) -> TokenStream {
    let def = syn::parse_macro_input!(input as ModelDef);
    match expand(def) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(def: ModelDef) -> syn::Result<proc_macro2::TokenStream> {
    let ModelDef { mut attrs, vis, name, input, input_span, layers } = def;
    if layers.is_empty() {
        return Err(syn::Error::new(name.span(), "a model needs at least one layer"));
    }
    let scalar = dtype(&mut attrs)?;
    let input_type = plan::shape_type(&input, input_span)?;
    let mut graph = graph::Graph::new(&input, &scalar);
    let end = graph.seq(&layers, graph::Src::Input)?;
    let nodes = graph.nodes;
    let shape = match end {
        graph::Src::Node(j) => nodes[j].output().to_vec(),
        graph::Src::Input => input.clone(),
    };
    if end != graph::Src::Node(nodes.len() - 1) || nodes.is_empty() {
        return Err(syn::Error::new(name.span(), "a model needs at least one layer"));
    }
    let output_type = plan::shape_type(&shape, layers.last().map_or(name.span(), |l| l.span()))?;
    let model_name = kiln_spec::snake_case(&name.to_string());
    let planned: Vec<&plan::Planned> = nodes
        .iter()
        .filter_map(|n| match n {
            graph::Node::Layer { planned, .. } => Some(planned),
            graph::Node::Merge { .. } => None,
        })
        .collect();
    let fields: Vec<_> = planned.iter().map(|p| p.field.clone()).collect();
    // Every layer that reads the raw inputs checks them.
    let check_inputs: Vec<proc_macro2::TokenStream> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match n {
            graph::Node::Layer { planned, src: graph::Src::Input } => {
                let f = &planned.field;
                Some(quote!(self.__kiln_core.check_input_of(#i, &self.#f, x)?;))
            }
            _ => None,
        })
        .collect();
    let tys: Vec<_> = planned.iter().map(|p| p.ty.clone()).collect();
    let ctors: Vec<_> = planned.iter().map(|p| p.ctor.clone()).collect();
    let checks: Vec<_> = planned.iter().filter_map(|p| p.check.clone()).collect();
    let docs: Vec<String> = planned
        .iter()
        .map(|p| format!("Layer `{}`, output shape {:?}.", p.name, p.output))
        .collect();
    let shapes: Vec<proc_macro2::TokenStream> = nodes
        .iter()
        .map(|n| {
            let d = n.output();
            quote!(&[#(#d),*])
        })
        .collect();
    let defs: Vec<proc_macro2::TokenStream> = nodes
        .iter()
        .map(|n| {
            let name = n.name();
            match n {
                graph::Node::Layer { planned, src } => {
                    let f = &planned.field;
                    let s = src.tokens();
                    quote!(::kiln::NodeDef {
                        name: ::core::option::Option::Some(#name),
                        op: ::kiln::NodeOp::Layer(&mut #f as &mut dyn ::kiln::layers::Layer<#scalar>),
                        inputs: ::std::vec![#s],
                        residual: ::core::option::Option::None,
                    })
                }
                graph::Node::Merge { merge, inputs, residual, .. } => {
                    let m = graph::merge_tokens(merge);
                    let ins = inputs.iter().map(|s| s.tokens());
                    let r = match residual {
                        Some(s) => {
                            let s = s.tokens();
                            quote!(::core::option::Option::Some(#s))
                        }
                        None => quote!(::core::option::Option::None),
                    };
                    quote!(::kiln::NodeDef {
                        name: ::core::option::Option::Some(#name),
                        op: ::kiln::NodeOp::Merge(#m),
                        inputs: ::std::vec![#(#ins),*],
                        residual: #r,
                    })
                }
            }
        })
        .collect();
    // Every node gets its step; ModelCore runs a layer that its predecessor absorbed
    // (a fused pair) inside that predecessor and skips its own step.
    let step = |i: usize, train: bool| match &nodes[i] {
        graph::Node::Layer { planned, .. } => {
            let f = &planned.field;
            quote!(self.__kiln_core.forward_layer(#i, &mut self.#f, x, #train)?;)
        }
        graph::Node::Merge { .. } => quote!(self.__kiln_core.forward_merge(#i, x)?;),
    };
    let infer: Vec<_> = (0..nodes.len()).map(|i| step(i, false)).collect();
    let train: Vec<_> = (0..nodes.len()).map(|i| step(i, true)).collect();
    let back: Vec<_> = (0..nodes.len())
        .rev()
        .map(|i| match &nodes[i] {
            graph::Node::Layer { planned, .. } => {
                let f = &planned.field;
                quote!(self.__kiln_core.backward_layer(#i, &mut self.#f, x, grads)?;)
            }
            graph::Node::Merge { .. } => quote!(self.__kiln_core.backward_merge(#i, x)?;),
        })
        .collect();
    let reseed: Vec<_> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match n {
            graph::Node::Layer { planned, .. } => {
                let f = &planned.field;
                Some(quote!(self.__kiln_core.reseed_layer(#i, &mut self.#f, seed);))
            }
            graph::Node::Merge { .. } => None,
        })
        .collect();
    let n = nodes.len();

    Ok(quote! {
        #(#attrs)*
        #vis struct #name {
            #(
                #[doc = #docs]
                pub #fields: #tys,
            )*
            __kiln_core: ::kiln::ModelCore<#scalar>,
        }

        impl #name {
            /// Builds the network with weights drawn from `seed` (same seed, same weights).
            ///
            /// # Panics
            /// Only if a custom layer's `build` rejects the input shape its `ShapedLayer`
            /// declares; [`Self::try_new`] returns that as an error instead.
            #vis fn new(seed: ::kiln::Seed) -> Self {
                match Self::try_new(seed) {
                    ::core::result::Result::Ok(m) => m,
                    ::core::result::Result::Err(e) => ::core::panic!("{}", e),
                }
            }

            /// Builds the network, returning an error if a custom layer rejects its input.
            #vis fn try_new(seed: ::kiln::Seed) -> ::kiln::Result<Self> {
                #( let mut #fields: #tys = #ctors; )*
                #( #checks )*
                let __kiln_core = ::kiln::ModelCore::build_graph(
                    #model_name,
                    &[#(#input),*],
                    &mut [#(#defs),*],
                    seed,
                    true,
                )?;
                let __kiln_expected: [&[usize]; #n] = [#(#shapes),*];
                ::kiln::core::check_shapes(&__kiln_core, &__kiln_expected)?;
                ::core::result::Result::Ok(Self { #(#fields,)* __kiln_core })
            }

            /// Keras's `model.summary()` table (print it with `{}`).
            #vis fn summary(&self) -> ::kiln::Summary {
                self.__kiln_core.summary()
            }

            /// Number of parameters (trainable and not).
            #vis fn count_params(&self) -> usize {
                self.__kiln_core.params().len()
            }
        }

        impl ::kiln::Model for #name {
            type Scalar = #scalar;
            type Input = #input_type;
            type Output = #output_type;

            fn name(&self) -> &str {
                self.__kiln_core.name()
            }
            fn input_shape(&self) -> &[usize] {
                self.__kiln_core.input_shape()
            }
            fn output_shape(&self) -> &[usize] {
                self.__kiln_core.output_shape()
            }
            fn params(&self) -> &::kiln::ParamStore<#scalar> {
                self.__kiln_core.params()
            }
            fn params_mut(&mut self) -> &mut ::kiln::ParamStore<#scalar> {
                self.__kiln_core.params_mut()
            }
            fn output_activation(&self) -> ::kiln::OutputActivation {
                self.__kiln_core.output_activation()
            }
            fn forward_infer(&mut self, x: &[#scalar], batch: usize) -> ::kiln::train::Result<::kiln::TrainOutput<'_, #scalar>> {
                self.__kiln_core.begin(x.len(), batch)?;
                #( #infer )*
                self.__kiln_core.output()
            }
            fn forward_train(&mut self, x: &[#scalar], batch: usize) -> ::kiln::train::Result<::kiln::TrainOutput<'_, #scalar>> {
                self.__kiln_core.begin(x.len(), batch)?;
                #( #train )*
                self.__kiln_core.output()
            }
            fn backward(&mut self, x: &[#scalar], d: &[#scalar], wrt_logits: bool, grads: &mut [#scalar]) -> ::kiln::train::Result<()> {
                self.__kiln_core.backward_begin(d, wrt_logits, grads)?;
                #( #back )*
                ::core::result::Result::Ok(())
            }
            fn reseed(&mut self, seed: u64) {
                #( #reseed )*
            }
            fn check_inputs(&self, x: &[#scalar]) -> ::kiln::train::Result<()> {
                #( #check_inputs )*
                ::core::result::Result::Ok(())
            }
        }
    })
}

/// The scalar type from a `#[dtype(f64)]` attribute (removed from the attributes
/// passed through), `f32` without one.
fn dtype(attrs: &mut Vec<syn::Attribute>) -> syn::Result<proc_macro2::TokenStream> {
    let mut scalar = quote!(f32);
    let mut keep = Vec::new();
    for a in attrs.drain(..) {
        if !a.path().is_ident("dtype") {
            keep.push(a);
            continue;
        }
        let ty: syn::Expr = a.parse_args()?;
        let name = match &ty {
            syn::Expr::Path(p) => p.path.get_ident().map(|i| i.to_string()).unwrap_or_default(),
            syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => s.value(),
            _ => String::new(),
        };
        scalar = match name.as_str() {
            "f32" | "float32" => quote!(f32),
            "f64" | "float64" => quote!(f64),
            _ => {
                return Err(syn::Error::new_spanned(
                    &ty,
                    "dtype must be f32 or f64 (Keras's \"float32\" or \"float64\")",
                ));
            }
        };
    }
    *attrs = keep;
    Ok(scalar)
}
