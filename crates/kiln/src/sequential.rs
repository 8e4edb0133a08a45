//! [`Sequential`]: a network assembled at run time from boxed layers.
//!
//! It implements the same [`Model`] trait as the networks `model!` generates, on the
//! same [`ModelCore`] engine and layer code; its shapes are checked when it is built
//! rather than when the program compiles. Use it when layer widths come from
//! configuration (a sweep, a file of recorded Keras models). It fuses the same layer
//! pairs as `model!` does (see [`crate::layers::Epilogue`]), so it runs as fast.

use crate::Seed;
use crate::core::{ModelCore, Summary};
use crate::error::Result;
use crate::layers::Layer;
use kiln_tape::Scalar;
use kiln_train::{Dyn, Model, OutputActivation, ParamStore, TrainOutput};

/// A Sequential network whose shapes are known at run time.
pub struct Sequential<T: Scalar = f32> {
    layers: Vec<Box<dyn Layer<T>>>,
    core: ModelCore<T>,
}

/// Collects layers for a [`Sequential`]; [`SequentialBuilder::build`] checks the shapes.
pub struct SequentialBuilder<T: Scalar> {
    name: String,
    input: Vec<usize>,
    layers: Vec<(Option<String>, Box<dyn Layer<T>>)>,
    fuse: bool,
}

// `add` is Keras's name for appending a layer; it is a builder method, not arithmetic.
#[allow(clippy::should_implement_trait)]
impl<T: Scalar> SequentialBuilder<T> {
    /// Starts a model called `name` taking samples of shape `input`.
    pub fn new(name: &str, input: &[usize]) -> Self {
        SequentialBuilder {
            name: name.into(),
            input: input.to_vec(),
            layers: Vec::new(),
            fuse: true,
        }
    }

    /// Whether layers that can run fused do (the default); `false` runs every layer by
    /// itself, which computes the same values (tests compare the two).
    pub fn fuse(mut self, fuse: bool) -> Self {
        self.fuse = fuse;
        self
    }

    /// Appends a built-in layer by its Keras class name and Keras-style arguments, as
    /// `model!` writes them: `.add_builtin("Dense", &[(None, 10.into()), (Some("activation"), "relu".into())])`.
    pub fn add_builtin(
        mut self,
        class: &str,
        args: &[(Option<&str>, kiln_spec::Value)],
    ) -> Result<Self> {
        self.layers.push((None, crate::layers::builtin(class, args)?));
        Ok(self)
    }

    /// Appends a layer, named Keras-style (`dense`, `dense_1`, ...).
    pub fn add(mut self, layer: impl Layer<T> + 'static) -> Self {
        self.layers.push((None, Box::new(layer)));
        self
    }

    /// Appends a layer under an explicit name (its parameters become `name/kernel`, ...).
    pub fn add_named(mut self, name: &str, layer: impl Layer<T> + 'static) -> Self {
        self.layers.push((Some(name.to_string()), Box::new(layer)));
        self
    }

    /// Appends an already boxed layer under an explicit name.
    pub fn add_named_boxed(mut self, name: &str, layer: Box<dyn Layer<T>>) -> Self {
        self.layers.push((Some(name.to_string()), layer));
        self
    }

    /// Appends an already boxed layer.
    pub fn add_boxed(mut self, layer: Box<dyn Layer<T>>) -> Self {
        self.layers.push((None, layer));
        self
    }

    /// Builds every layer in order, checking each input shape, and draws the initial
    /// parameters from `seed`.
    pub fn build(self, seed: Seed) -> Result<Sequential<T>> {
        let names: Vec<Option<String>> = self.layers.iter().map(|(n, _)| n.clone()).collect();
        let mut layers: Vec<Box<dyn Layer<T>>> = self.layers.into_iter().map(|(_, l)| l).collect();
        let mut refs: Vec<(Option<&str>, &mut dyn Layer<T>)> = names
            .iter()
            .map(|n| n.as_deref())
            .zip(layers.iter_mut().map(|l| -> &mut dyn Layer<T> { l.as_mut() }))
            .collect();
        let core = ModelCore::build_with(&self.name, &self.input, &mut refs, seed, self.fuse)?;
        Ok(Sequential { layers, core })
    }
}

impl Sequential<f32> {
    /// Starts an f32 model (Keras's default) called `name` taking samples of shape
    /// `input`; [`SequentialBuilder::new`] builds one of another scalar type.
    pub fn builder(name: &str, input: &[usize]) -> SequentialBuilder<f32> {
        SequentialBuilder::new(name, input)
    }
}

impl<T: Scalar> Sequential<T> {
    /// Layer names in order.
    pub fn layer_names(&self) -> Vec<&str> {
        self.core.layer_names()
    }

    /// Every layer's output shape in order.
    pub fn layer_shapes(&self) -> Vec<&[usize]> {
        self.core.layer_shapes()
    }

    /// The names of the layers that run fused into the layer before them.
    pub fn fused_layers(&self) -> Vec<&str> {
        self.core.fused_layers()
    }

    /// Keras's `model.summary()` table (print it with `{}`).
    pub fn summary(&self) -> Summary {
        self.core.summary()
    }

    fn run(
        &mut self,
        x: &[T],
        batch: usize,
        training: bool,
    ) -> kiln_train::Result<TrainOutput<'_, T>> {
        self.core.begin(x.len(), batch)?;
        for (i, l) in self.layers.iter_mut().enumerate() {
            self.core.forward_layer(i, &mut **l, x, training)?;
        }
        self.core.output()
    }
}

impl<T: Scalar> Model for Sequential<T> {
    type Scalar = T;
    type Input = Dyn;
    type Output = Dyn;

    fn name(&self) -> &str {
        self.core.name()
    }
    fn input_shape(&self) -> &[usize] {
        self.core.input_shape()
    }
    fn output_shape(&self) -> &[usize] {
        self.core.output_shape()
    }
    fn params(&self) -> &ParamStore<T> {
        self.core.params()
    }
    fn params_mut(&mut self) -> &mut ParamStore<T> {
        self.core.params_mut()
    }
    fn output_activation(&self) -> OutputActivation {
        self.core.output_activation()
    }
    fn forward_infer(&mut self, x: &[T], batch: usize) -> kiln_train::Result<TrainOutput<'_, T>> {
        self.run(x, batch, false)
    }
    fn forward_train(&mut self, x: &[T], batch: usize) -> kiln_train::Result<TrainOutput<'_, T>> {
        self.run(x, batch, true)
    }
    fn backward(
        &mut self,
        x: &[T],
        d: &[T],
        wrt_logits: bool,
        grads: &mut [T],
    ) -> kiln_train::Result<()> {
        self.core.backward_begin(d, wrt_logits, grads)?;
        for (i, l) in self.layers.iter_mut().enumerate().rev() {
            self.core.backward_layer(i, &mut **l, x, grads)?;
        }
        Ok(())
    }
    fn reseed(&mut self, seed: u64) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            self.core.reseed_layer(i, &mut **l, seed);
        }
    }
    fn check_inputs(&self, x: &[T]) -> kiln_train::Result<()> {
        match self.layers.first() {
            Some(l) => self.core.check_input(&**l, x),
            None => Ok(()),
        }
    }
}
