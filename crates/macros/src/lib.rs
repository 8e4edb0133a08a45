//! kiln-macros: the `model!` proc macro, which declares a Sequential network once,
//! checks every layer's shape while the program compiles and generates its
//! constructor and its forward and backward passes.
//!
//! Use it through the `kiln` crate (`kiln::model!`); the generated code names items
//! under `::kiln`.

mod layers;
mod parse;

use parse::ModelDef;
use proc_macro::TokenStream;
use quote::quote;
use std::collections::HashMap;

/// Declares a Sequential network whose shapes are checked at compile time.
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
#[proc_macro]
pub fn model(input: TokenStream) -> TokenStream {
    let def = syn::parse_macro_input!(input as ModelDef);
    match expand(def) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(def: ModelDef) -> syn::Result<proc_macro2::TokenStream> {
    let ModelDef { attrs, vis, name, input, input_span, layers } = def;
    if layers.is_empty() {
        return Err(syn::Error::new(name.span(), "a model needs at least one layer"));
    }
    let input_type = layers::shape_type(&input, input_span)?;
    let mut counts = HashMap::new();
    let mut shape = input.clone();
    let mut planned = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = layers::plan(l, &shape, i, &mut counts)?;
        shape = p.output.clone();
        planned.push(p);
    }
    let output_type = layers::shape_type(&shape, layers.last().map_or(name.span(), |l| l.span()))?;
    let model_name = layers::model_name(&name.to_string());
    let fields: Vec<_> = planned.iter().map(|p| p.field.clone()).collect();
    let names: Vec<_> = planned.iter().map(|p| p.name.clone()).collect();
    let tys: Vec<_> = planned.iter().map(|p| p.ty.clone()).collect();
    let ctors: Vec<_> = planned.iter().map(|p| p.ctor.clone()).collect();
    let checks: Vec<_> = planned.iter().filter_map(|p| p.check.clone()).collect();
    let docs: Vec<String> = planned
        .iter()
        .map(|p| format!("Layer `{}`, output shape {:?}.", p.name, p.output))
        .collect();
    let shapes: Vec<proc_macro2::TokenStream> = planned
        .iter()
        .map(|p| {
            let d = &p.output;
            quote!(&[#(#d),*])
        })
        .collect();
    // The passes walk "steps": one layer, or a Conv2D and the MaxPool2D after it, which
    // ModelCore runs fused when their settings allow.
    let mut steps = Vec::new();
    let mut i = 0;
    while i < planned.len() {
        let pair = planned[i].class == "Conv2D"
            && planned.get(i + 1).is_some_and(|p| p.class == "MaxPool2D");
        steps.push((i, pair));
        i += if pair { 2 } else { 1 };
    }
    let step = |training: proc_macro2::TokenStream| {
        steps
            .iter()
            .map(|&(i, pair)| {
                let f = &fields[i];
                if pair {
                    let g = &fields[i + 1];
                    quote!(self.__kiln_core.forward_conv_pool(#i, &mut self.#f, &mut self.#g, x, #training)?;)
                } else {
                    quote!(self.__kiln_core.forward_layer(#i, &mut self.#f, x, #training)?;)
                }
            })
            .collect::<Vec<_>>()
    };
    let (infer_steps, train_steps) = (step(quote!(false)), step(quote!(true)));
    let back_steps: Vec<_> = steps
        .iter()
        .rev()
        .map(|&(i, pair)| {
            let f = &fields[i];
            if pair {
                let g = &fields[i + 1];
                quote!(self.__kiln_core.backward_conv_pool(#i, &mut self.#f, &mut self.#g, x, grads)?;)
            } else {
                quote!(self.__kiln_core.backward_layer(#i, &mut self.#f, x, grads)?;)
            }
        })
        .collect();
    let idx: Vec<usize> = (0..planned.len()).collect();
    let n = planned.len();

    Ok(quote! {
        #(#attrs)*
        #vis struct #name {
            #(
                #[doc = #docs]
                pub #fields: #tys,
            )*
            __kiln_core: ::kiln::ModelCore<f32>,
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
                let __kiln_core = ::kiln::ModelCore::build(
                    #model_name,
                    &[#(#input),*],
                    &mut [#( (::core::option::Option::Some(#names), &mut #fields as &mut dyn ::kiln::layers::Layer<f32>) ),*],
                    seed,
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
            type Scalar = f32;
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
            fn params(&self) -> &::kiln::ParamStore<f32> {
                self.__kiln_core.params()
            }
            fn params_mut(&mut self) -> &mut ::kiln::ParamStore<f32> {
                self.__kiln_core.params_mut()
            }
            fn output_activation(&self) -> ::kiln::OutputActivation {
                self.__kiln_core.output_activation()
            }
            fn forward_infer(&mut self, x: &[f32], batch: usize) -> ::kiln::train::Result<::kiln::TrainOutput<'_, f32>> {
                self.__kiln_core.begin(x.len(), batch)?;
                #( #infer_steps )*
                self.__kiln_core.output()
            }
            fn forward_train(&mut self, x: &[f32], batch: usize) -> ::kiln::train::Result<::kiln::TrainOutput<'_, f32>> {
                self.__kiln_core.begin(x.len(), batch)?;
                #( #train_steps )*
                self.__kiln_core.output()
            }
            fn backward(&mut self, x: &[f32], d: &[f32], wrt_logits: bool, grads: &mut [f32]) -> ::kiln::train::Result<()> {
                self.__kiln_core.backward_begin(d, wrt_logits, grads)?;
                #( #back_steps )*
                ::core::result::Result::Ok(())
            }
            fn reseed(&mut self, seed: u64) {
                #( self.__kiln_core.reseed_layer(#idx, &mut self.#fields, seed); )*
            }
        }
    })
}
