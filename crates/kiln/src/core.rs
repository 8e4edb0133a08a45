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
use kiln_spec::{Merge, MergeKind};
use kiln_tape::Scalar;
use kiln_tape::kernels::{sigmoid, softmax, softmax_backward};
use kiln_train::{OutputActivation, ParamDecl, ParamStore, TrainError, TrainOutput};
use std::fmt;
use std::ops::Range;

/// Where a node's input comes from: the model's input or an earlier node's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Src {
    /// The samples the model is given.
    Input,
    /// The output of node `i` (nodes are numbered in the order they run).
    Node(usize),
}

/// What a node computes: a layer, or a merge of several inputs (which the engine
/// runs itself: merges hold no parameters).
pub enum NodeOp<'a, T: Scalar> {
    /// A layer with one input.
    Layer(&'a mut dyn Layer<T>),
    /// A merge of two or more inputs.
    Merge(Merge),
}

/// One node of a network as a builder hands it to [`ModelCore::build_graph`]: a plain
/// stack is a chain of layer nodes, each fed by the one before; a residual block adds
/// a merge fed by the block's body and its input.
pub struct NodeDef<'a, T: Scalar> {
    /// Its name (Keras-style `conv2d_1`, `add` when `None`).
    pub name: Option<&'a str>,
    /// What it computes.
    pub op: NodeOp<'a, T>,
    /// What feeds it, in order (one source for a layer, two or more for a merge).
    pub inputs: Vec<Src>,
    /// For the Add that closes a residual block, the block's input: its inputs are
    /// then the body and the shortcut (the block input itself for the identity), and
    /// a misfit is reported as the block's (see [`kiln_spec::residual_output`]).
    pub residual: Option<Src>,
}

/// No gradient buffer: the node's output needs no gradient.
const NO_SLOT: usize = usize::MAX;

/// What the core knows of each node.
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
    /// What feeds it.
    inputs: Vec<Src>,
    /// For a merge: what it computes, and for Concatenate each input's block of values
    /// from the axis on (`chunks`).
    merge: Option<Merge>,
    chunks: Vec<usize>,
    /// For Concatenate, the sample axis it joins along.
    axis: usize,
    /// How many nodes read its output.
    consumers: usize,
    /// Whether a gradient flows through its output (it or a node under it trains).
    needs_grad: bool,
    /// The gradient buffer that holds the gradient w.r.t. its output.
    slot: usize,
}

/// Parameter arena, buffers and the forward/backward walks of a network: a stack of
/// layers or a graph of layers and merges, run in one fixed order.
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
    /// Gradient buffers, shared by nodes whose gradients are never needed at once
    /// (a plain stack uses two, alternately); `slot_len` is each one's per-sample size.
    slots: Vec<Vec<T>>,
    slot_len: Vec<usize>,
    /// Where a second consumer's gradient is computed before it is added in.
    scratch: Vec<T>,
    scratch_len: usize,
    /// Per node, whether its gradient buffer has been written in this backward pass.
    written: Vec<bool>,
    /// Whether any node reads other than the node just before it (shown by summary).
    branched: bool,
    batch: usize,
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

/// Grows `y` to `n` values, failing with a sentence instead of aborting.
fn grow<T: Scalar>(y: &mut Vec<T>, batch: usize, per: usize, name: &str) -> kiln_train::Result<()> {
    let need = batch.checked_mul(per).filter(|&n| n <= isize::MAX as usize / 8);
    let grown = need.is_some_and(|n| n <= y.len() || y.try_reserve_exact(n - y.len()).is_ok());
    if !grown {
        return Err(TrainError::InvalidArgument {
            name: "batch_size",
            message: format!(
                "layer {name} cannot hold the outputs of a batch of {batch} ({per} values per sample): the allocation failed; use a smaller batch_size"
            ),
        });
    }
    y.resize(batch * per, T::zero());
    Ok(())
}

/// `v[a]` to read and `v[b]` to write (`a != b`).
fn read_write<T>(v: &mut [Vec<T>], a: usize, b: usize) -> (&[T], &mut Vec<T>) {
    if a < b {
        let (lo, hi) = v.split_at_mut(b);
        (&lo[a], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(a);
        (&hi[0], &mut lo[b])
    }
}

impl<T: Scalar> ModelCore<T> {
    /// Builds a plain stack: every layer in order from the per-sample `input` shape,
    /// named Keras-style unless a name is given; draws the initial parameters from
    /// `seed` and splits a final softmax/sigmoid off the last layer.
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
        let mut nodes: Vec<NodeDef<'_, T>> = layers
            .iter_mut()
            .enumerate()
            .map(|(i, (n, l))| NodeDef {
                name: *n,
                op: NodeOp::Layer(&mut **l),
                inputs: vec![if i == 0 { Src::Input } else { Src::Node(i - 1) }],
                residual: None,
            })
            .collect();
        Self::build_graph(name, input, &mut nodes, seed, fuse)
    }

    /// Builds a network of layers and merges. Nodes run in the order given, so each
    /// node's inputs must come before it; every node but the last must feed another
    /// (the last is the model's output).
    pub fn build_graph(
        name: &str,
        input: &[usize],
        nodes: &mut [NodeDef<'_, T>],
        seed: Seed,
        fuse: bool,
    ) -> Result<Self> {
        if nodes.is_empty() {
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
        let mut namer = kiln_spec::Namer::new();
        let mut infos: Vec<Info> = Vec::new();
        let mut decls = Vec::new();
        let last = nodes.len() - 1;
        let mut out_act = OutputActivation::Linear;
        let mut branched = false;
        for (i, node) in nodes.iter_mut().enumerate() {
            let base = match &node.op {
                NodeOp::Layer(l) => l.base_name(),
                NodeOp::Merge(m) => m.entry().base_name,
            };
            let name = match node.name {
                Some(n) => n.to_string(),
                None => namer.next(base),
            };
            let class = match &node.op {
                NodeOp::Layer(l) => l.class_name(),
                NodeOp::Merge(m) => m.class(),
            };
            let at = |message: String| Error::Layer { layer: format!("{name} ({class})"), message };
            let mut shapes: Vec<&[usize]> = Vec::new();
            for src in &node.inputs {
                match *src {
                    Src::Input => shapes.push(input),
                    Src::Node(j) if j < i => shapes.push(&infos[j].output),
                    Src::Node(j) => {
                        return Err(at(format!(
                            "it reads node {j}, which does not run before it; list every layer after the layers that feed it"
                        )));
                    }
                }
            }
            if node.inputs != [if i == 0 { Src::Input } else { Src::Node(i - 1) }] {
                branched = true;
            }
            let mut info = Info {
                name: name.clone(),
                class,
                output: Vec::new(),
                out_len: 0,
                ranges: Vec::new(),
                names: Vec::new(),
                params: 0,
                absorbed: false,
                absorbs: false,
                in_steps: shapes.first().map_or(1, |s| if s.len() >= 2 { s[0] } else { 1 }),
                inputs: node.inputs.clone(),
                merge: None,
                chunks: Vec::new(),
                axis: 0,
                consumers: 0,
                needs_grad: false,
                slot: NO_SLOT,
            };
            match &mut node.op {
                NodeOp::Merge(m) => {
                    if let (Some(b), [body, short]) = (node.residual, &shapes[..]) {
                        let block_in = match b {
                            Src::Input => input,
                            Src::Node(j) => &infos[j].output,
                        };
                        let skip = (node.inputs[1] != b).then_some(*short);
                        kiln_spec::residual_output(block_in, body, skip)
                            .map_err(|e| at(e.message))?;
                    }
                    let output = m.output(&shapes).map_err(|e| at(e.message))?;
                    if m.kind == MergeKind::Concatenate {
                        let axis = m.sample_axis(output.len()).map_err(|e| at(e.message))?;
                        info.axis = axis;
                        info.chunks = shapes.iter().map(|s| s[axis..].iter().product()).collect();
                    }
                    info.merge = Some(*m);
                    info.out_len = output.iter().product();
                    info.output = output;
                }
                NodeOp::Layer(layer) => {
                    if shapes.len() != 1 {
                        return Err(at(format!(
                            "a layer takes one input but {} feed it; merge them first (Add, Concatenate, ...)",
                            shapes.len()
                        )));
                    }
                    let output = layer.build(shapes[0]).map_err(at)?;
                    if elements::<T>(&output).is_none() {
                        return Err(at(format!(
                            "its output {output:?} per sample has more elements than memory can hold; use fewer units or filters"
                        )));
                    }
                    for spec in layer.param_specs() {
                        info.names.push(spec.name);
                        let full = format!("{name}/{}", spec.name);
                        // Sized, then allocated fallibly, before the initializer fills it.
                        let n = elements::<T>(&spec.shape).ok_or_else(|| {
                            at(format!(
                                "its {} {:?} has more elements than memory can hold; use fewer units or filters",
                                spec.name, spec.shape
                            ))
                        })?;
                        let mut probe: Vec<T> = Vec::new();
                        if probe.try_reserve_exact(n).is_err() {
                            return Err(at(format!(
                                "its {} {:?} needs {} and the allocation failed; use fewer units or filters",
                                spec.name,
                                spec.shape,
                                bytes_text(n * std::mem::size_of::<T>())
                            )));
                        }
                        drop(probe);
                        let init = spec.init.sample(&spec.shape, param_seed(seed, &full));
                        info.params += init.len();
                        decls.push(ParamDecl {
                            name: full,
                            shape: spec.shape,
                            trainable: spec.trainable,
                            kind: spec.kind,
                            init,
                        });
                    }
                    layer.reseed(param_seed(seed, &format!("{name}/rng")));
                    // A final softmax/sigmoid is handed to the loss (fused gradient);
                    // softmax runs over the last axis, as the loss scores its rows.
                    if i == last {
                        out_act = layer.split_output_activation();
                    }
                    info.out_len = output.iter().product();
                    info.output = output;
                }
            }
            info.needs_grad = info.params > 0
                || info.inputs.iter().any(|s| matches!(s, Src::Node(j) if infos[*j].needs_grad));
            for src in &info.inputs {
                if let Src::Node(j) = *src {
                    infos[j].consumers += 1;
                }
            }
            infos.push(info);
        }
        if let Some(unused) = infos[..last].iter().find(|i| i.consumers == 0) {
            return Err(Error::Layer {
                layer: format!("{} ({})", unused.name, unused.class),
                message: "its output feeds no other layer and is not the model's output; connect it or remove it".into(),
            });
        }
        if fuse {
            for i in 1..nodes.len() {
                // A layer already absorbed into its predecessor absorbs nothing itself;
                // the pair must be a chain link (the successor reads only it, and only
                // the successor reads it).
                let link = infos[i].inputs == [Src::Node(i - 1)] && infos[i - 1].consumers == 1;
                if infos[i - 1].absorbed || i - 1 == last || !link {
                    continue;
                }
                let (before, rest) = nodes.split_at_mut(i);
                let (NodeOp::Layer(prev), NodeOp::Layer(this)) =
                    (&mut before[i - 1].op, &rest[0].op)
                else {
                    continue;
                };
                let Some(e) = this.epilogue() else { continue };
                // The successor must hold no parameters: only the producer's are passed.
                if infos[i].params == 0 && prev.absorb(&e) {
                    infos[i - 1].absorbs = true;
                    infos[i].absorbed = true;
                }
            }
        }
        let (slot_len, scratch_len) = Self::assign_slots(&mut infos);
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
        let n = infos.len();
        Ok(ModelCore {
            name: name.into(),
            input: input.to_vec(),
            in_len: input.iter().product(),
            acts: (0..n).map(|_| Vec::new()).collect(),
            masks: (0..n).map(|_| Vec::new()).collect(),
            masked: vec![false; n],
            layers: infos,
            params,
            out_act,
            out: Vec::new(),
            slots: slot_len.iter().map(|_| Vec::new()).collect(),
            slot_len,
            scratch: Vec::new(),
            scratch_len,
            written: vec![false; n],
            branched,
            batch: 0,
        })
    }

    /// Gives every node whose output needs a gradient a buffer for it, reusing a
    /// buffer once the node that reads it has run backward (a plain stack alternates
    /// between two). Returns each buffer's per-sample size and the scratch size for
    /// outputs read by several nodes.
    fn assign_slots(infos: &mut [Info]) -> (Vec<usize>, usize) {
        let last = infos.len() - 1;
        let mut len: Vec<usize> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let take = |free: &mut Vec<usize>, len: &mut Vec<usize>, need: usize| match free.pop() {
            Some(s) => {
                len[s] = len[s].max(need);
                s
            }
            None => {
                len.push(need);
                len.len() - 1
            }
        };
        let mut scratch = 0;
        if infos[last].needs_grad {
            infos[last].slot = take(&mut free, &mut len, infos[last].out_len);
        }
        for i in (0..infos.len()).rev() {
            if infos[i].absorbed || !infos[i].needs_grad {
                continue;
            }
            let own = if infos[i].absorbs { i + 1 } else { i };
            // An Add passes its gradient on unchanged: one input read by nothing else
            // can take over the Add's buffer instead of receiving a copy.
            let can_hand_over = infos[i].merge.is_some_and(|m| m.kind == MergeKind::Add);
            let mut handed_over = false;
            for k in 0..infos[i].inputs.len() {
                let Src::Node(p) = infos[i].inputs[k] else { continue };
                if !infos[p].needs_grad {
                    continue;
                }
                if infos[p].consumers > 1 {
                    scratch = scratch.max(infos[p].out_len);
                }
                if infos[p].slot == NO_SLOT {
                    if can_hand_over && !handed_over && infos[p].consumers == 1 {
                        infos[p].slot = infos[own].slot;
                        handed_over = true;
                    } else {
                        infos[p].slot = take(&mut free, &mut len, infos[p].out_len);
                    }
                }
            }
            if !handed_over {
                free.push(infos[own].slot);
            }
        }
        (len, scratch)
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
    /// Layer names in order (merges included).
    pub fn layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.name.as_str()).collect()
    }
    /// Every layer's per-sample output shape in order.
    pub fn layer_shapes(&self) -> Vec<&[usize]> {
        self.layers.iter().map(|l| l.output.as_slice()).collect()
    }
    /// What feeds each node, in order.
    pub fn layer_inputs(&self) -> Vec<&[Src]> {
        self.layers.iter().map(|l| l.inputs.as_slice()).collect()
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

    /// Runs layer node `i` forward (`x` is the model's input).
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
        grow(y, batch, out_len, &info.name)?;
        let src = info.inputs[0];
        let input = match src {
            Src::Input => &x[..batch * self.in_len],
            Src::Node(j) => &before[j][..],
        };
        // The mask over this layer's input steps, from the node feeding it.
        let steps = info.in_steps;
        let (masks_before, masks_rest) = self.masks.split_at_mut(i);
        let incoming = match src {
            Src::Node(j) if self.masked[j] => Some(&masks_before[j][..batch * steps]),
            _ => None,
        };
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

    /// Runs merge node `i` forward (`x` is the model's input).
    pub fn forward_merge(&mut self, i: usize, x: &[T]) -> kiln_train::Result<()> {
        let batch = self.batch;
        let in_len = self.in_len;
        let (before, rest) = self.acts.split_at_mut(i);
        let info = &self.layers[i];
        let Some(merge) = info.merge else {
            return Err(TrainError::InvalidArgument {
                name: "node",
                message: format!("node {i} ({}) is a layer, not a merge", info.name),
            });
        };
        let y = &mut rest[0];
        grow(y, batch, info.out_len, &info.name)?;
        let input = |s: Src| -> &[T] {
            match s {
                Src::Input => &x[..batch * in_len],
                Src::Node(j) => &before[j][..],
            }
        };
        let first = input(info.inputs[0]);
        if merge.kind == MergeKind::Concatenate {
            let total: usize = info.chunks.iter().sum();
            let mut off = 0;
            for (k, &src) in info.inputs.iter().enumerate() {
                let c = info.chunks[k];
                let v = input(src);
                for (o, dst) in y.chunks_exact_mut(total).enumerate() {
                    dst[off..off + c].copy_from_slice(&v[o * c..(o + 1) * c]);
                }
                off += c;
            }
        } else if merge.kind == MergeKind::Add && info.inputs.len() == 2 {
            // The residual sum in one pass (the same bits as copy-then-add).
            let second = input(info.inputs[1]);
            for ((o, &a), &b) in y.iter_mut().zip(first).zip(second) {
                *o = a + b;
            }
        } else {
            y.copy_from_slice(first);
            for &src in &info.inputs[1..] {
                let v = input(src);
                match merge.kind {
                    MergeKind::Add | MergeKind::Average => {
                        y.iter_mut().zip(v).for_each(|(a, &b)| *a += b)
                    }
                    MergeKind::Subtract => y.iter_mut().zip(v).for_each(|(a, &b)| *a -= b),
                    MergeKind::Multiply => y.iter_mut().zip(v).for_each(|(a, &b)| *a *= b),
                    MergeKind::Maximum => y.iter_mut().zip(v).for_each(|(a, &b)| {
                        if b > *a {
                            *a = b
                        }
                    }),
                    MergeKind::Minimum => y.iter_mut().zip(v).for_each(|(a, &b)| {
                        if b < *a {
                            *a = b
                        }
                    }),
                    MergeKind::Concatenate => {}
                }
            }
            if merge.kind == MergeKind::Average {
                let n = T::of(info.inputs.len() as f64);
                y.iter_mut().for_each(|a| *a /= n);
            }
        }
        // Masks over steps: element-wise merges keep the steps every masked input
        // keeps (Keras ANDs them); Concatenate of masked inputs keeps a step any of
        // them keeps, and drops the mask when an input has none (as Keras's `any` over
        // an all-ones mask does). Joining along the step axis drops the mask.
        let steps = info.in_steps;
        let same_steps = info.output.len() >= 2
            && info.output[0] == steps
            && (merge.kind != MergeKind::Concatenate || info.axis != 0);
        let (masks_before, masks_rest) = self.masks.split_at_mut(i);
        let own = &mut masks_rest[0];
        let mut any = false;
        let mut all = true;
        for &src in &info.inputs {
            match src {
                Src::Node(j) if self.masked[j] => any = true,
                _ => all = false,
            }
        }
        let concat = merge.kind == MergeKind::Concatenate;
        self.masked[i] = same_steps && any && (!concat || all);
        if self.masked[i] {
            own.clear();
            own.resize(batch * steps, if concat { T::zero() } else { T::one() });
            for &src in &info.inputs {
                if let Src::Node(j) = src
                    && self.masked[j]
                {
                    for (o, &m) in own.iter_mut().zip(&masks_before[j][..batch * steps]) {
                        *o = if concat { o.max(m) } else { o.min(m) };
                    }
                }
            }
        }
        Ok(())
    }

    /// Values per row of the output's last axis (what a final softmax normalises).
    fn out_row(&self) -> usize {
        self.layers[self.layers.len() - 1].output.last().copied().unwrap_or(1)
    }

    /// The outputs of the forward pass (and the logits under a final softmax/sigmoid).
    pub fn output(&mut self) -> kiln_train::Result<TrainOutput<'_, T>> {
        let last = &self.acts[self.acts.len() - 1][..];
        let w = self.out_row();
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
        let last = self.layers.len() - 1;
        let w = self.layers[last].out_len;
        let n = self.batch * w;
        grads.fill(T::zero());
        // Every buffer holds the largest gradient assigned to it, so reusing them node
        // by node never makes one grow after the first step.
        for (g, &len) in self.slots.iter_mut().zip(&self.slot_len) {
            if g.len() < len * self.batch {
                g.resize(len * self.batch, T::zero());
            }
        }
        if self.scratch.len() < self.scratch_len * self.batch {
            self.scratch.resize(self.scratch_len * self.batch, T::zero());
        }
        self.written.fill(false);
        let slot = self.layers[last].slot;
        if slot == NO_SLOT {
            return Ok(());
        }
        self.written[last] = true;
        let row = self.out_row();
        let dy = &mut self.slots[slot][..n];
        match (self.out_act, wrt_logits) {
            (OutputActivation::Linear, _) | (_, true) => dy.copy_from_slice(&d[..n]),
            (OutputActivation::Softmax, false) => {
                softmax_backward(&self.out[..n], &d[..n], row, dy)?
            }
            (OutputActivation::Sigmoid, false) => {
                for ((g, &dv), &p) in dy.iter_mut().zip(d).zip(&self.out) {
                    *g = dv * p * (T::one() - p);
                }
            }
        }
        Ok(())
    }

    /// Runs layer node `i` backward (call from the last node down to 0); nodes with
    /// nothing trainable under or in them do nothing, and the lowest layers that train
    /// compute no input gradient.
    pub fn backward_layer<L: Layer<T> + ?Sized>(
        &mut self,
        i: usize,
        layer: &mut L,
        x: &[T],
        grads: &mut [T],
    ) -> kiln_train::Result<()> {
        let info = &self.layers[i];
        if !info.needs_grad || info.absorbed {
            return Ok(());
        }
        let batch = self.batch;
        let src = info.inputs[0];
        let input: &[T] = match src {
            Src::Input => &x[..batch * self.in_len],
            Src::Node(j) => &self.acts[j],
        };
        let own = if info.absorbs { i + 1 } else { i };
        let (y, out_len) = (&self.acts[own], self.layers[own].out_len);
        let dy_slot = self.layers[own].slot;
        // Where the input gradient goes: straight into the input's buffer for its
        // first consumer, into scratch (then added) for the others.
        let target = match src {
            Src::Node(p) if self.layers[p].needs_grad => Some(p),
            _ => None,
        };
        let params = Params::new(self.params.values(), &info.ranges, &info.names);
        let grads = ParamsMut::new(grads, &info.ranges, &info.names);
        match target {
            None => layer.backward(Backward {
                params,
                x: input,
                y,
                dy: &self.slots[dy_slot][..batch * out_len],
                batch,
                grads,
                dx: None,
            })?,
            Some(p) => {
                let n = input.len();
                let first = !self.written[p];
                let (dy, dst) = read_write(&mut self.slots, dy_slot, self.layers[p].slot);
                let dx = if first { &mut dst[..n] } else { &mut self.scratch[..n] };
                layer.backward(Backward {
                    params,
                    x: input,
                    y,
                    dy: &dy[..batch * out_len],
                    batch,
                    grads,
                    dx: Some(dx),
                })?;
                if !first {
                    dst[..n].iter_mut().zip(&self.scratch[..n]).for_each(|(d, &s)| *d += s);
                }
                self.written[p] = true;
            }
        }
        Ok(())
    }

    /// Runs merge node `i` backward: the gradient fans out to each input (as it is
    /// for Add and Average, negated for Subtract's second, times the other inputs for
    /// Multiply, to the chosen input for Maximum and Minimum, a slice each for
    /// Concatenate), added to what other consumers gave that input.
    pub fn backward_merge(&mut self, i: usize, x: &[T]) -> kiln_train::Result<()> {
        let info = &self.layers[i];
        if !info.needs_grad {
            return Ok(());
        }
        let Some(merge) = info.merge else {
            return Err(TrainError::InvalidArgument {
                name: "node",
                message: format!("node {i} ({}) is a layer, not a merge", info.name),
            });
        };
        let batch = self.batch;
        let in_len = self.in_len;
        let n = batch * info.out_len;
        let acts = &self.acts;
        let input = |s: Src| -> &[T] {
            match s {
                Src::Input => &x[..batch * in_len],
                Src::Node(j) => &acts[j][..],
            }
        };
        let count = T::of(info.inputs.len() as f64);
        let total: usize = info.chunks.iter().sum();
        let mut off = 0;
        for (k, &src) in info.inputs.iter().enumerate() {
            let chunk = info.chunks.get(k).copied().unwrap_or(0);
            let Src::Node(p) = src else {
                off += chunk;
                continue;
            };
            if !self.layers[p].needs_grad {
                off += chunk;
                continue;
            }
            let first = !self.written[p];
            if self.layers[p].slot == info.slot {
                // The Add's buffer is this input's: the gradient is already there.
                self.written[p] = true;
                off += chunk;
                continue;
            }
            let (dy, dst) = read_write(&mut self.slots, info.slot, self.layers[p].slot);
            let dy = &dy[..n];
            let m = batch * self.layers[p].out_len;
            let dst = &mut dst[..m];
            let put = |d: &mut T, v: T| {
                if first { *d = v } else { *d += v }
            };
            match merge.kind {
                MergeKind::Add => dst.iter_mut().zip(dy).for_each(|(d, &g)| put(d, g)),
                MergeKind::Average => dst.iter_mut().zip(dy).for_each(|(d, &g)| put(d, g / count)),
                MergeKind::Subtract => {
                    let sign = if k == 0 { T::one() } else { -T::one() };
                    dst.iter_mut().zip(dy).for_each(|(d, &g)| put(d, g * sign))
                }
                MergeKind::Multiply => {
                    for (e, (d, &g)) in dst.iter_mut().zip(dy).enumerate() {
                        let mut v = g;
                        for (o, &s) in info.inputs.iter().enumerate() {
                            if o != k {
                                v *= input(s)[e];
                            }
                        }
                        put(d, v);
                    }
                }
                MergeKind::Maximum | MergeKind::Minimum => {
                    let max = merge.kind == MergeKind::Maximum;
                    for (e, (d, &g)) in dst.iter_mut().zip(dy).enumerate() {
                        // The input the running max/min kept (the earlier one on ties).
                        let mut w = 0;
                        let mut best = input(info.inputs[0])[e];
                        for (o, &s) in info.inputs.iter().enumerate().skip(1) {
                            let v = input(s)[e];
                            if (max && v > best) || (!max && v < best) {
                                w = o;
                                best = v;
                            }
                        }
                        put(d, if w == k { g } else { T::zero() });
                    }
                }
                MergeKind::Concatenate => {
                    for (o, src_row) in dy.chunks_exact(total).enumerate() {
                        let row = &src_row[off..off + chunk];
                        dst[o * chunk..(o + 1) * chunk]
                            .iter_mut()
                            .zip(row)
                            .for_each(|(d, &g)| put(d, g));
                    }
                }
            }
            off += chunk;
            self.written[p] = true;
        }
        Ok(())
    }

    /// The names of the layers that run inside the layer before them (fused pairs).
    pub fn fused_layers(&self) -> Vec<&str> {
        self.layers.iter().filter(|l| l.absorbed).map(|l| l.name.as_str()).collect()
    }

    /// Checks raw inputs against what the first layer accepts (see
    /// [`Layer::check_input`]).
    pub fn check_input<L: Layer<T> + ?Sized>(&self, first: &L, x: &[T]) -> kiln_train::Result<()> {
        self.check_input_of(0, first, x)
    }

    /// Checks raw inputs against what layer node `i` accepts, when it reads the
    /// model's input (other nodes are not asked).
    pub fn check_input_of<L: Layer<T> + ?Sized>(
        &self,
        i: usize,
        layer: &L,
        x: &[T],
    ) -> kiln_train::Result<()> {
        if self.layers[i].inputs != [Src::Input] {
            return Ok(());
        }
        layer.check_input(x, self.input_shape().iter().product()).map_err(|message| {
            kiln_train::TrainError::BadInput { layer: self.layers[i].name.clone(), message }
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
            connected: if self.branched {
                self.layers
                    .iter()
                    .map(|l| {
                        l.inputs
                            .iter()
                            .map(|s| match s {
                                Src::Input => "input_layer[0][0]".to_string(),
                                Src::Node(j) => format!("{}[0][0]", self.layers[*j].name),
                            })
                            .collect()
                    })
                    .collect()
            } else {
                Vec::new()
            },
            input: self.input.clone(),
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
    /// For a network with branches, what feeds each row (`conv2d[0][0]`, as Keras's
    /// functional summary writes it); empty for a plain stack, whose summary has no
    /// "Connected to" column.
    pub connected: Vec<Vec<String>>,
    /// The per-sample input shape (shown as the `input_layer` row of a branched
    /// network).
    pub input: Vec<usize>,
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
        let branched = !self.connected.is_empty();
        // A branched network lists its input as Keras's functional summary does.
        let mut rows: Vec<(String, String, String, String)> = Vec::new();
        if branched {
            rows.push((
                "input_layer (InputLayer)".into(),
                shape_str(&self.input),
                "0".into(),
                "-".into(),
            ));
        }
        for (k, (name, shape, params)) in self.rows.iter().enumerate() {
            let from = self.connected.get(k).map(|c| c.join(", ")).unwrap_or_default();
            rows.push((name.clone(), shape_str(shape), thousands(*params), from));
        }
        let width = |k: usize, head: &str| {
            rows.iter()
                .map(|r| [&r.0, &r.1, &r.2, &r.3][k].chars().count())
                .max()
                .unwrap_or(0)
                .max(head.len())
        };
        let w0 = width(0, "Layer (type)") + 2;
        let w1 = width(1, "Output Shape") + 2;
        let w2 = width(2, "Param #");
        let w3 = if branched { width(3, "Connected to") + 2 } else { 0 };
        let line = |c: char| c.to_string().repeat(w0 + w1 + w2 + 2 + w3);
        writeln!(f, "Model: \"{}\"", self.name)?;
        writeln!(f, "{}", line('━'))?;
        write!(f, " {:<w0$}{:<w1$}{:>w2$}", "Layer (type)", "Output Shape", "Param #")?;
        if branched {
            write!(f, "  Connected to")?;
        }
        writeln!(f)?;
        writeln!(f, "{}", line('━'))?;
        for (i, (name, shape, params, from)) in rows.iter().enumerate() {
            write!(f, " {name:<w0$}{shape:<w1$}{params:>w2$}")?;
            if branched {
                write!(f, "  {from}")?;
            }
            writeln!(f)?;
            if i + 1 < rows.len() {
                writeln!(f, "{}", line('─'))?;
            }
        }
        writeln!(f, "{}", line('━'))?;
        writeln!(f, " Total params: {}", thousands(self.total))?;
        writeln!(f, " Trainable params: {}", thousands(self.trainable))?;
        write!(f, " Non-trainable params: {}", thousands(self.total - self.trainable))
    }
}
