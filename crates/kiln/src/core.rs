//! [`ModelCore`]: the engine behind every kiln model — parameter arena, per-layer
//! activation buffers, the final softmax/sigmoid split off for fused losses, and the
//! forward and backward walks.
//!
//! Its per-layer steps are generic over the layer type: a `model!` network calls them
//! once per field with the concrete layer (static dispatch, unrolled by the macro);
//! [`crate::Sequential`] calls them in a loop with `dyn Layer`. Buffers grow to the
//! largest batch once and are reused, so a training step allocates nothing after that.
//!
//! Fusion is decided here once, generically: when a layer offers itself as an
//! [`crate::layers::Epilogue`] and its predecessor [`Layer::absorb`]s it, the
//! predecessor's passes compute both layers and the successor's steps do nothing.
//! The engine names no concrete layer, so `model!` networks and `Sequential` fuse the
//! same pairs.

use crate::Seed;
use crate::error::{Error, Result};
use crate::init::{Sample, param_seed};
use crate::layers::{Backward, Layer, Params, ParamsMut};
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
    /// The declared names of its parameters, in the order of `ranges`.
    names: Vec<&'static str>,
    params: usize,
    /// Run inside the layer before it: its steps do nothing.
    absorbed: bool,
    /// Runs the layer after it inside its own passes: its output is that layer's.
    absorbs: bool,
    /// Steps of its input (the first axis; 1 for a flat input), for masks.
    in_steps: usize,
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
    /// Per layer, the mask over its output's steps and whether it has one.
    masks: Vec<Vec<T>>,
    masked: Vec<bool>,
    out: Vec<T>,
    grad: [Vec<T>; 2],
    batch: usize,
    /// The first layer with parameters: no gradient flows below it, so it computes no
    /// input gradient and the parameter-free layers under it (a leading Flatten) are
    /// skipped. For the MNIST MLP this drops a 256×128·128×784 product per step.
    first_trained: usize,
}

/// The element count of `shape` if it and its size in bytes fit in memory's address
/// range (checked: no product may wrap).
fn elements<T>(shape: &[usize]) -> Option<usize> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    n.checked_mul(std::mem::size_of::<T>()).filter(|&b| b <= isize::MAX as usize).map(|_| n)
}

/// `bytes` as "17.2 GB (17179869184 bytes)".
fn bytes_text(bytes: usize) -> String {
    format!("{:.1} GB ({bytes} bytes)", bytes as f64 / 1e9)
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
        Self::build_with(name, input, layers, seed, true)
    }

    /// [`ModelCore::build`], with `fuse = false` running every layer by itself (for
    /// tests that compare fused passes with the layers run one by one).
    pub fn build_with(
        name: &str,
        input: &[usize],
        layers: &mut [(Option<&str>, &mut dyn Layer<T>)],
        seed: Seed,
        fuse: bool,
    ) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::Layer {
                layer: name.into(),
                message: "a model needs at least one layer".into(),
            });
        }
        if elements::<T>(input).is_none() {
            return Err(Error::Layer {
                layer: name.into(),
                message: format!(
                    "the input shape {input:?} has more elements than memory can hold; use a smaller input shape"
                ),
            });
        }
        let mut shape = input.to_vec();
        let mut namer = kiln_spec::Namer::new();
        let mut infos = Vec::new();
        let mut decls = Vec::new();
        let last = layers.len() - 1;
        let mut out_act = OutputActivation::Linear;
        for (i, (given, layer)) in layers.iter_mut().enumerate() {
            let name = match given {
                Some(n) => n.to_string(),
                None => namer.next(layer.base_name()),
            };
            let output = layer.build(&shape).map_err(|message| Error::Layer {
                layer: format!("{name} ({})", layer.class_name()),
                message,
            })?;
            let too_big = |what: String| Error::Layer {
                layer: format!("{name} ({})", layer.class_name()),
                message: what,
            };
            if elements::<T>(&output).is_none() {
                return Err(too_big(format!(
                    "its output {output:?} per sample has more elements than memory can hold; use fewer units or filters"
                )));
            }
            let mut count = 0;
            let mut names = Vec::new();
            for spec in layer.param_specs() {
                names.push(spec.name);
                let full = format!("{name}/{}", spec.name);
                // Sized, then allocated fallibly, before the initializer fills it.
                let n = elements::<T>(&spec.shape).ok_or_else(|| {
                    too_big(format!(
                        "its {} {:?} has more elements than memory can hold; use fewer units or filters",
                        spec.name, spec.shape
                    ))
                })?;
                let mut probe: Vec<T> = Vec::new();
                if probe.try_reserve_exact(n).is_err() {
                    return Err(too_big(format!(
                        "its {} {:?} needs {} and the allocation failed; use fewer units or filters",
                        spec.name,
                        spec.shape,
                        bytes_text(n * std::mem::size_of::<T>())
                    )));
                }
                drop(probe);
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
            // A final softmax/sigmoid over a flat output is handed to the loss (fused
            // gradient); over a sequence it stays in the layer, per step.
            if i == last && output.len() == 1 {
                out_act = layer.split_output_activation();
            }
            let out_len = output.iter().product();
            let in_steps = if shape.len() >= 2 { shape[0] } else { 1 };
            infos.push(Info {
                name,
                class: layer.class_name(),
                output: output.clone(),
                out_len,
                ranges: Vec::new(),
                names,
                params: count,
                absorbed: false,
                absorbs: false,
                in_steps,
            });
            shape = output;
        }
        if fuse {
            for i in 1..layers.len() {
                // A layer already absorbed into its predecessor absorbs nothing itself.
                if infos[i - 1].absorbed || i - 1 == last {
                    continue;
                }
                let Some(e) = layers[i].1.epilogue() else { continue };
                // The successor must hold no parameters: only the producer's are passed.
                if infos[i].params == 0 && layers[i - 1].1.absorb(&e) {
                    infos[i - 1].absorbs = true;
                    infos[i].absorbed = true;
                }
            }
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
            masks: (0..infos.len()).map(|_| Vec::new()).collect(),
            masked: vec![false; infos.len()],
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
        if self.layers[i].absorbed {
            return Ok(());
        }
        let batch = self.batch;
        let (before, rest) = self.acts.split_at_mut(i);
        let info = &self.layers[i];
        // A layer that absorbs its successor writes the successor's output.
        let (y, out_len) = if info.absorbs {
            rest[0].clear();
            (&mut rest[1], self.layers[i + 1].out_len)
        } else {
            (&mut rest[0], info.out_len)
        };
        let need = batch.checked_mul(out_len).filter(|&n| n <= isize::MAX as usize / 8);
        let grown = need.is_some_and(|n| n <= y.len() || y.try_reserve_exact(n - y.len()).is_ok());
        if !grown {
            return Err(kiln_train::TrainError::InvalidArgument {
                name: "batch_size",
                message: format!(
                    "layer {} cannot hold the outputs of a batch of {batch} ({out_len} values per sample): the allocation failed; use a smaller batch_size",
                    info.name
                ),
            });
        }
        y.resize(batch * out_len, T::zero());
        let input = if i == 0 { &x[..batch * self.in_len] } else { &before[i - 1][..] };
        // The mask over this layer's input steps, from the layer before.
        let steps = info.in_steps;
        let (masks_before, masks_rest) = self.masks.split_at_mut(i);
        let incoming = (i > 0 && self.masked[i - 1]).then(|| &masks_before[i - 1][..batch * steps]);
        layer.input_mask(incoming);
        let values = self.params.values_mut();
        if training {
            layer.forward_train(
                ParamsMut::new(values, &info.ranges, &info.names),
                input,
                batch,
                y,
            )?;
        } else {
            layer.forward(Params::new(values, &info.ranges, &info.names), input, batch, y)?;
        }
        // This layer's own mask, or the incoming one while the step axis stays.
        let own = &mut masks_rest[0];
        self.masked[i] = if layer.output_mask(input, batch, own) {
            true
        } else if let Some(m) =
            incoming.filter(|_| info.output.len() >= 2 && info.output[0] == steps)
        {
            own.clear();
            own.extend_from_slice(m);
            true
        } else {
            false
        };
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
        if i < self.first_trained || self.layers[i].absorbed {
            return Ok(());
        }
        let batch = self.batch;
        let info = &self.layers[i];
        let input: &[T] = if i == 0 { &x[..batch * self.in_len] } else { &self.acts[i - 1] };
        let (y, out_len) = if info.absorbs {
            (&self.acts[i + 1], self.layers[i + 1].out_len)
        } else {
            (&self.acts[i], info.out_len)
        };
        let [dy, dx] = &mut self.grad;
        let want = (i > self.first_trained).then(|| &mut dx[..input.len()]);
        layer.backward(Backward {
            params: Params::new(self.params.values(), &info.ranges, &info.names),
            x: input,
            y,
            dy: &dy[..batch * out_len],
            batch,
            grads: ParamsMut::new(grads, &info.ranges, &info.names),
            dx: want,
        })?;
        self.grad.swap(0, 1);
        Ok(())
    }

    /// The names of the layers that run inside the layer before them (fused pairs).
    pub fn fused_layers(&self) -> Vec<&str> {
        self.layers.iter().filter(|l| l.absorbed).map(|l| l.name.as_str()).collect()
    }

    /// Checks raw inputs against what the first layer accepts (see
    /// [`Layer::check_input`]).
    pub fn check_input<L: Layer<T> + ?Sized>(&self, first: &L, x: &[T]) -> kiln_train::Result<()> {
        first.check_input(x, self.input_shape().iter().product()).map_err(|message| {
            kiln_train::TrainError::BadInput { layer: self.layers[0].name.clone(), message }
        })
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
