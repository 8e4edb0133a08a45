//! [`Sequential`]: a network assembled at run time from boxed layers.
//!
//! It implements the same [`Model`] trait as the networks `model!` generates, with the
//! same layer code; its shapes are checked when it is built rather than when the
//! program compiles. Use it when layer widths come from configuration (a sweep, a file
//! of recorded Keras models).

use crate::Seed;
use crate::error::{Error, Result};
use crate::init::param_seed;
use crate::layers::{Layer, Params, ParamsMut};
use kiln_tape::Scalar;
use kiln_tape::kernels::{sigmoid, softmax, softmax_backward};
use kiln_train::{Dyn, Model, OutputActivation, ParamDecl, ParamStore, TrainOutput};
use std::ops::Range;

struct Slot<T: Scalar> {
    layer: Box<dyn Layer<T>>,
    name: String,
    output: Vec<usize>,
    out_len: usize,
    ranges: Vec<Range<usize>>,
}

/// A Sequential network whose shapes are known at run time.
pub struct Sequential<T: Scalar = f32> {
    name: String,
    input: Vec<usize>,
    in_len: usize,
    slots: Vec<Slot<T>>,
    params: ParamStore<T>,
    out_act: OutputActivation,
    acts: Vec<Vec<T>>,
    out: Vec<T>,
    grad: [Vec<T>; 2],
}

/// Collects layers for a [`Sequential`]; [`SequentialBuilder::build`] checks the shapes.
pub struct SequentialBuilder<T: Scalar> {
    name: String,
    input: Vec<usize>,
    layers: Vec<(Option<String>, Box<dyn Layer<T>>)>,
}

// `add` is Keras's name for appending a layer; it is a builder method, not arithmetic.
#[allow(clippy::should_implement_trait)]
impl<T: Scalar> SequentialBuilder<T> {
    /// Starts a model called `name` taking samples of shape `input`.
    pub fn new(name: &str, input: &[usize]) -> Self {
        SequentialBuilder { name: name.into(), input: input.to_vec(), layers: Vec::new() }
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

    /// Appends an already boxed layer.
    pub fn add_boxed(mut self, layer: Box<dyn Layer<T>>) -> Self {
        self.layers.push((None, layer));
        self
    }

    /// Builds every layer in order, checking each input shape, and draws the initial
    /// parameters from `seed`.
    pub fn build(self, seed: Seed) -> Result<Sequential<T>> {
        if self.layers.is_empty() {
            return Err(Error::Layer {
                layer: self.name,
                message: "a Sequential model needs at least one layer".into(),
            });
        }
        let mut shape = self.input.clone();
        let mut counts = std::collections::HashMap::<&'static str, usize>::new();
        let mut slots = Vec::new();
        let mut decls = Vec::new();
        let last = self.layers.len() - 1;
        let mut out_act = OutputActivation::Linear;
        for (i, (name, mut layer)) in self.layers.into_iter().enumerate() {
            let name = name.unwrap_or_else(|| {
                let c = counts.entry(layer.base_name()).or_insert(0);
                let n = if *c == 0 {
                    layer.base_name().to_string()
                } else {
                    format!("{}_{c}", layer.base_name())
                };
                *c += 1;
                n
            });
            let output = layer.build(&shape).map_err(|message| Error::Layer {
                layer: format!("{name} ({})", layer.class_name()),
                message,
            })?;
            for spec in layer.param_specs() {
                let full = format!("{name}/{}", spec.name);
                let init = spec.init.sample(&spec.shape, param_seed(seed, &full));
                decls.push(ParamDecl {
                    name: full,
                    shape: spec.shape,
                    trainable: spec.trainable,
                    kind: spec.kind,
                    init,
                });
            }
            if i == last {
                out_act = layer.split_output_activation();
            }
            let out_len = output.iter().product();
            slots.push(Slot { layer, name, output: output.clone(), out_len, ranges: Vec::new() });
            shape = output;
        }
        let params = ParamStore::new(decls)?;
        for slot in &mut slots {
            let prefix = format!("{}/", slot.name);
            slot.ranges = params
                .entries()
                .iter()
                .filter(|e| e.name.starts_with(&prefix))
                .map(|e| e.range())
                .collect();
        }
        let in_len = self.input.iter().product();
        Ok(Sequential {
            name: self.name,
            input: self.input,
            in_len,
            acts: (0..slots.len()).map(|_| Vec::new()).collect(),
            slots,
            params,
            out_act,
            out: Vec::new(),
            grad: [Vec::new(), Vec::new()],
        })
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
        self.slots.iter().map(|s| s.name.as_str()).collect()
    }

    /// Every layer's output shape in order.
    pub fn layer_shapes(&self) -> Vec<&[usize]> {
        self.slots.iter().map(|s| s.output.as_slice()).collect()
    }

    fn run(
        &mut self,
        x: &[T],
        batch: usize,
        training: bool,
    ) -> kiln_train::Result<TrainOutput<'_, T>> {
        if x.len() < batch * self.in_len {
            return Err(kiln_train::TrainError::InvalidArgument {
                name: "x",
                message: format!("{} values for {batch} samples of {} each", x.len(), self.in_len),
            });
        }
        let values = self.params.values_mut();
        for i in 0..self.slots.len() {
            let (before, rest) = self.acts.split_at_mut(i);
            let y = &mut rest[0];
            let slot = &mut self.slots[i];
            y.resize(batch * slot.out_len, T::zero());
            let input = if i == 0 { &x[..batch * self.in_len] } else { &before[i - 1][..] };
            if training {
                slot.layer.forward_train(ParamsMut::new(values, &slot.ranges), input, batch, y)?;
            } else {
                slot.layer.forward(Params::new(values, &slot.ranges), input, batch, y)?;
            }
        }
        let last = self.acts.last().map(|v| &v[..]).unwrap_or(&[]);
        let w = self.slots.last().map_or(0, |s| s.out_len);
        match self.out_act {
            OutputActivation::Linear => Ok(TrainOutput { outputs: last, logits: None }),
            act => {
                self.out.resize(last.len(), T::zero());
                if act == OutputActivation::Softmax {
                    softmax(last, w, &mut self.out)?;
                } else {
                    self.out.iter_mut().zip(last).for_each(|(o, &z)| *o = sigmoid(z));
                }
                Ok(TrainOutput { outputs: &self.out, logits: Some(last) })
            }
        }
    }
}

impl<T: Scalar> Model for Sequential<T> {
    type Scalar = T;
    type Input = Dyn;
    type Output = Dyn;

    fn name(&self) -> &str {
        &self.name
    }
    fn input_shape(&self) -> &[usize] {
        &self.input
    }
    fn output_shape(&self) -> &[usize] {
        self.slots.last().map_or(&self.input, |s| &s.output)
    }
    fn params(&self) -> &ParamStore<T> {
        &self.params
    }
    fn params_mut(&mut self) -> &mut ParamStore<T> {
        &mut self.params
    }
    fn output_activation(&self) -> OutputActivation {
        self.out_act
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
        let n = self.slots.len();
        let w = self.slots[n - 1].out_len;
        let batch = self.acts[n - 1].len() / w.max(1);
        grads.fill(T::zero());
        let [mut dy, mut dx] = std::mem::take(&mut self.grad);
        // The gradient w.r.t. the last layer's own output: the logits when the model
        // split off its final activation.
        dy.resize(batch * w, T::zero());
        match (self.out_act, wrt_logits) {
            (OutputActivation::Linear, _) | (_, true) => dy.copy_from_slice(&d[..batch * w]),
            (OutputActivation::Softmax, false) => {
                softmax_backward(&self.out, &d[..batch * w], w, &mut dy)?
            }
            (OutputActivation::Sigmoid, false) => {
                for ((g, &dv), &p) in dy.iter_mut().zip(d).zip(&self.out) {
                    *g = dv * p * (T::one() - p);
                }
            }
        }
        let values = self.params.values();
        for i in (0..n).rev() {
            let slot = &mut self.slots[i];
            let input: &[T] = if i == 0 { &x[..batch * self.in_len] } else { &self.acts[i - 1] };
            let g = ParamsMut::new(grads, &slot.ranges);
            // The first layer computes no input gradient.
            let want = if i > 0 {
                dx.resize(input.len(), T::zero());
                Some(&mut dx[..])
            } else {
                None
            };
            slot.layer.backward(
                Params::new(values, &slot.ranges),
                input,
                &self.acts[i],
                &dy,
                batch,
                g,
                want,
            )?;
            std::mem::swap(&mut dy, &mut dx);
        }
        self.grad = [dy, dx];
        Ok(())
    }
    fn reseed(&mut self, seed: u64) {
        for (i, s) in self.slots.iter_mut().enumerate() {
            s.layer.reseed(seed.wrapping_add(i as u64));
        }
    }
}
