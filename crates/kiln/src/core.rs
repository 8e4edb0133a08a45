//! [`ModelCore`]: the engine behind every kiln model — parameter arena, per-layer
//! activation buffers, the final softmax/sigmoid split off for fused losses, and the
//! forward and backward walks.
//!
//! Its per-layer steps are generic over the layer type: a `model!` network calls them
//! once per field with the concrete layer (static dispatch, unrolled by the macro);
//! [`crate::Sequential`] calls them in a loop with `dyn Layer`. Buffers grow to the
//! largest batch once and are reused, so a training step allocates nothing after that.

use crate::Seed;
use crate::error::{Error, Result};
use crate::init::param_seed;
use crate::layers::{Conv2D, Layer, MaxPool2D, Params, ParamsMut};
use kiln_tape::Scalar;
use kiln_tape::kernels::{sigmoid, softmax, softmax_backward};
use kiln_train::{OutputActivation, ParamDecl, ParamStore, TrainError, TrainOutput};
use std::fmt;
use std::ops::Range;

/// What the core knows of each layer.
#[derive(Clone, Debug)]
struct Info {
    name: String,
    class: &'static str,
    output: Vec<usize>,
    out_len: usize,
    ranges: Vec<Range<usize>>,
    params: usize,
}

/// Parameter arena, buffers and the forward/backward walks of a Sequential network.
pub struct ModelCore<T: Scalar> {
    name: String,
    input: Vec<usize>,
    in_len: usize,
    layers: Vec<Info>,
    params: ParamStore<T>,
    out_act: OutputActivation,
    acts: Vec<Vec<T>>,
    out: Vec<T>,
    grad: [Vec<T>; 2],
    batch: usize,
    /// The first layer with parameters: no gradient flows below it, so it computes no
    /// input gradient and the parameter-free layers under it (a leading Flatten) are
    /// skipped. For the MNIST MLP this drops a 256×128·128×784 product per step.
    first_trained: usize,
}

impl<T: Scalar> ModelCore<T> {
    /// Builds every layer in order from the per-sample `input` shape, names them
    /// Keras-style unless a name is given, draws the initial parameters from `seed`
    /// and splits a final softmax/sigmoid off the last layer.
    pub fn build(
        name: &str,
        input: &[usize],
        layers: &mut [(Option<&str>, &mut dyn Layer<T>)],
        seed: Seed,
    ) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::Layer {
                layer: name.into(),
                message: "a model needs at least one layer".into(),
            });
        }
        let mut shape = input.to_vec();
        let mut counts = std::collections::HashMap::<&'static str, usize>::new();
        let mut infos = Vec::new();
        let mut decls = Vec::new();
        let last = layers.len() - 1;
        let mut out_act = OutputActivation::Linear;
        for (i, (given, layer)) in layers.iter_mut().enumerate() {
            let name = match given {
                Some(n) => n.to_string(),
                None => {
                    let c = counts.entry(layer.base_name()).or_insert(0);
                    let n = if *c == 0 {
                        layer.base_name().to_string()
                    } else {
                        format!("{}_{c}", layer.base_name())
                    };
                    *c += 1;
                    n
                }
            };
            let output = layer.build(&shape).map_err(|message| Error::Layer {
                layer: format!("{name} ({})", layer.class_name()),
                message,
            })?;
            let mut count = 0;
            for spec in layer.param_specs() {
                let full = format!("{name}/{}", spec.name);
                let init = spec.init.sample(&spec.shape, param_seed(seed, &full));
                count += init.len();
                decls.push(ParamDecl {
                    name: full,
                    shape: spec.shape,
                    trainable: spec.trainable,
                    kind: spec.kind,
                    init,
                });
            }
            layer.reseed(param_seed(seed, &format!("{name}/rng")));
            if i == last {
                out_act = layer.split_output_activation();
            }
            let out_len = output.iter().product();
            infos.push(Info {
                name,
                class: layer.class_name(),
                output: output.clone(),
                out_len,
                ranges: Vec::new(),
                params: count,
            });
            shape = output;
        }
        let params = ParamStore::new(decls)?;
        for info in &mut infos {
            let prefix = format!("{}/", info.name);
            info.ranges = params
                .entries()
                .iter()
                .filter(|e| e.name.starts_with(&prefix))
                .map(|e| e.range())
                .collect();
        }
        let first_trained = infos.iter().position(|i| i.params > 0).unwrap_or(infos.len());
        Ok(ModelCore {
            first_trained,
            name: name.into(),
            input: input.to_vec(),
            in_len: input.iter().product(),
            acts: (0..infos.len()).map(|_| Vec::new()).collect(),
            layers: infos,
            params,
            out_act,
            out: Vec::new(),
            grad: [Vec::new(), Vec::new()],
            batch: 0,
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input
    }
    /// Per-sample output shape.
    pub fn output_shape(&self) -> &[usize] {
        &self.layers[self.layers.len() - 1].output
    }
    /// The parameter arena.
    pub fn params(&self) -> &ParamStore<T> {
        &self.params
    }
    /// The parameter arena, writable.
    pub fn params_mut(&mut self) -> &mut ParamStore<T> {
        &mut self.params
    }
    /// The final activation split off for the loss.
    pub fn output_activation(&self) -> OutputActivation {
        self.out_act
    }
    /// Layer names in order.
    pub fn layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.name.as_str()).collect()
    }
    /// Every layer's per-sample output shape in order.
    pub fn layer_shapes(&self) -> Vec<&[usize]> {
        self.layers.iter().map(|l| l.output.as_slice()).collect()
    }

    /// Starts a forward pass over `batch` samples held in `x_len` values.
    pub fn begin(&mut self, x_len: usize, batch: usize) -> kiln_train::Result<()> {
        if x_len < batch * self.in_len {
            return Err(TrainError::InvalidArgument {
                name: "x",
                message: format!("{x_len} values for {batch} samples of {} each", self.in_len),
            });
        }
        self.batch = batch;
        Ok(())
    }

    /// Runs layer `i` forward (the model's input `x` feeds layer 0).
    pub fn forward_layer<L: Layer<T> + ?Sized>(
        &mut self,
        i: usize,
        layer: &mut L,
        x: &[T],
        training: bool,
    ) -> kiln_train::Result<()> {
        let batch = self.batch;
        let (before, rest) = self.acts.split_at_mut(i);
        let y = &mut rest[0];
        let info = &self.layers[i];
        y.resize(batch * info.out_len, T::zero());
        let input = if i == 0 { &x[..batch * self.in_len] } else { &before[i - 1][..] };
        let values = self.params.values_mut();
        if training {
            layer.forward_train(ParamsMut::new(values, &info.ranges), input, batch, y)?;
        } else {
            layer.forward(Params::new(values, &info.ranges), input, batch, y)?;
        }
        Ok(())
    }

    /// The outputs of the forward pass (and the logits under a final softmax/sigmoid).
    pub fn output(&mut self) -> kiln_train::Result<TrainOutput<'_, T>> {
        let last = &self.acts[self.acts.len() - 1][..];
        let w = self.layers[self.layers.len() - 1].out_len;
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

    /// Starts the backward pass from the loss gradient `d` (w.r.t. the logits when
    /// `wrt_logits`, else the outputs); zeroes `grads`.
    pub fn backward_begin(
        &mut self,
        d: &[T],
        wrt_logits: bool,
        grads: &mut [T],
    ) -> kiln_train::Result<()> {
        let w = self.layers[self.layers.len() - 1].out_len;
        let n = self.batch * w;
        grads.fill(T::zero());
        // Both gradient buffers hold the largest activation, so swapping their roles
        // layer by layer never makes either grow after the first step.
        let widest = self.layers.iter().map(|l| l.out_len).chain([self.in_len]).max().unwrap_or(0)
            * self.batch;
        for g in &mut self.grad {
            if g.len() < widest {
                g.resize(widest, T::zero());
            }
        }
        let dy = &mut self.grad[0][..n];
        match (self.out_act, wrt_logits) {
            (OutputActivation::Linear, _) | (_, true) => dy.copy_from_slice(&d[..n]),
            (OutputActivation::Softmax, false) => softmax_backward(&self.out[..n], &d[..n], w, dy)?,
            (OutputActivation::Sigmoid, false) => {
                for ((g, &dv), &p) in dy.iter_mut().zip(d).zip(&self.out) {
                    *g = dv * p * (T::one() - p);
                }
            }
        }
        Ok(())
    }

    /// Runs layer `i` backward (call from the last layer down to 0); the first layer
    /// with parameters computes no input gradient and the layers below it do nothing.
    pub fn backward_layer<L: Layer<T> + ?Sized>(
        &mut self,
        i: usize,
        layer: &mut L,
        x: &[T],
        grads: &mut [T],
    ) -> kiln_train::Result<()> {
        if i < self.first_trained {
            return Ok(());
        }
        let batch = self.batch;
        let info = &self.layers[i];
        let input: &[T] = if i == 0 { &x[..batch * self.in_len] } else { &self.acts[i - 1] };
        let [dy, dx] = &mut self.grad;
        let want = (i > self.first_trained).then(|| &mut dx[..input.len()]);
        layer.backward(
            Params::new(self.params.values(), &info.ranges),
            input,
            &self.acts[i],
            &dy[..batch * info.out_len],
            batch,
            ParamsMut::new(grads, &info.ranges),
            want,
        )?;
        self.grad.swap(0, 1);
        Ok(())
    }

    /// Runs layer `i` (a Conv2D) and layer `i + 1` (a MaxPool2D) forward: as one fused
    /// pass when [`Conv2D::fuses_with`] the pool (the convolution's own output is then
    /// not kept), else one after the other. `model!` emits this for every such pair.
    pub fn forward_conv_pool(
        &mut self,
        i: usize,
        conv: &mut Conv2D<T>,
        pool: &mut MaxPool2D,
        x: &[T],
        training: bool,
    ) -> kiln_train::Result<()> {
        if !conv.fuses_with(pool) {
            self.forward_layer(i, conv, x, training)?;
            return self.forward_layer(i + 1, pool, x, training);
        }
        let batch = self.batch;
        let (before, rest) = self.acts.split_at_mut(i);
        let input = if i == 0 { &x[..batch * self.in_len] } else { &before[i - 1][..] };
        // The convolution's output is never materialized.
        rest[0].clear();
        let y = &mut rest[1];
        y.resize(batch * self.layers[i + 1].out_len, T::zero());
        let values = self.params.values();
        conv.forward_pooled(
            &Params::new(values, &self.layers[i].ranges),
            input,
            batch,
            y,
            training,
        )?;
        Ok(())
    }

    /// Backward through a pair run by [`ModelCore::forward_conv_pool`] (call in place of
    /// the two layers' backward steps).
    pub fn backward_conv_pool(
        &mut self,
        i: usize,
        conv: &mut Conv2D<T>,
        pool: &mut MaxPool2D,
        x: &[T],
        grads: &mut [T],
    ) -> kiln_train::Result<()> {
        if !conv.fuses_with(pool) {
            self.backward_layer(i + 1, pool, x, grads)?;
            return self.backward_layer(i, conv, x, grads);
        }
        if i < self.first_trained {
            return Ok(());
        }
        let batch = self.batch;
        let input: &[T] = if i == 0 { &x[..batch * self.in_len] } else { &self.acts[i - 1] };
        let [dy, dx] = &mut self.grad;
        let want = (i > self.first_trained).then(|| &mut dx[..input.len()]);
        let n = batch * self.layers[i + 1].out_len;
        conv.backward_pooled(
            Params::new(self.params.values(), &self.layers[i].ranges),
            input,
            &self.acts[i + 1],
            &dy[..n],
            batch,
            ParamsMut::new(grads, &self.layers[i].ranges),
            want,
        )?;
        self.grad.swap(0, 1);
        Ok(())
    }

    /// Reseeds layer `i`'s randomness from the fit loop's per-epoch seed.
    pub fn reseed_layer<L: Layer<T> + ?Sized>(&self, i: usize, layer: &mut L, seed: u64) {
        layer.reseed(seed ^ param_seed(Seed(i as u64), &self.layers[i].name));
    }

    /// Keras's `model.summary()` table.
    pub fn summary(&self) -> Summary {
        Summary {
            name: self.name.clone(),
            rows: self
                .layers
                .iter()
                .map(|l| (format!("{} ({})", l.name, l.class), l.output.clone(), l.params))
                .collect(),
            total: self.params.len(),
            trainable: self.params.trainable_len(),
        }
    }
}

/// Checks that every layer's run-time output shape is the one `model!` computed while
/// compiling (they follow the same rules; a difference is reported, not ignored).
#[doc(hidden)]
pub fn check_shapes<T: Scalar>(core: &ModelCore<T>, expected: &[&[usize]]) -> Result<()> {
    for (info, want) in core.layers.iter().zip(expected) {
        if info.output != *want {
            return Err(Error::Layer {
                layer: format!("{} ({})", info.name, info.class),
                message: format!(
                    "builds to output {:?} but model! computed {want:?} while compiling; this is a kiln bug",
                    info.output
                ),
            });
        }
    }
    Ok(())
}

/// A model's summary: one row per layer (name and class, output shape, parameter
/// count), then the totals, printed as Keras's `model.summary()` prints them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The model's name.
    pub name: String,
    /// (layer (type), output shape per sample, parameters) per layer.
    pub rows: Vec<(String, Vec<usize>, usize)>,
    /// Total parameters.
    pub total: usize,
    /// Trainable parameters.
    pub trainable: usize,
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn shape_str(s: &[usize]) -> String {
    let dims: Vec<String> =
        std::iter::once("None".to_string()).chain(s.iter().map(|d| d.to_string())).collect();
    format!("({})", dims.join(", "))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w0 =
            self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max("Layer (type)".len()) + 2;
        let w1 = self
            .rows
            .iter()
            .map(|r| shape_str(&r.1).len())
            .max()
            .unwrap_or(0)
            .max("Output Shape".len())
            + 2;
        let w2 =
            self.rows.iter().map(|r| thousands(r.2).len()).max().unwrap_or(0).max("Param #".len());
        let line = |c: char| c.to_string().repeat(w0 + w1 + w2 + 2);
        writeln!(f, "Model: \"{}\"", self.name)?;
        writeln!(f, "{}", line('━'))?;
        writeln!(f, " {:<w0$}{:<w1$}{:>w2$}", "Layer (type)", "Output Shape", "Param #")?;
        writeln!(f, "{}", line('━'))?;
        for (i, (name, shape, params)) in self.rows.iter().enumerate() {
            writeln!(f, " {:<w0$}{:<w1$}{:>w2$}", name, shape_str(shape), thousands(*params))?;
            if i + 1 < self.rows.len() {
                writeln!(f, "{}", line('─'))?;
            }
        }
        writeln!(f, "{}", line('━'))?;
        writeln!(f, " Total params: {}", thousands(self.total))?;
        writeln!(f, " Trainable params: {}", thousands(self.trainable))?;
        write!(f, " Non-trainable params: {}", thousands(self.total - self.trainable))
    }
}
