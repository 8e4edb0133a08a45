//! [`Sequential`]: a network assembled at run time from boxed layers.
//!
//! It implements the same [`Model`] trait as the networks `model!` generates, on the
//! same [`ModelCore`] engine and layer code; its shapes are checked when it is built
//! rather than when the program compiles. Use it when layer widths come from
//! configuration (a sweep, a file of recorded Keras models). It fuses the same layer
//! pairs as `model!` does (see [`crate::layers::Epilogue`]), so it runs as fast.

use crate::Seed;
use crate::core::{ModelCore, NodeDef, NodeOp, Src, Summary};
use crate::error::Result;
use crate::layers::Layer;
use kiln_spec::Merge;
use kiln_tape::Scalar;
use kiln_train::{Dyn, Model, OutputActivation, ParamStore, TrainOutput};

/// A network whose shapes are known at run time: a stack of layers, with residual
/// and merge blocks if it has branches, or a Keras-style functional graph.
pub struct Sequential<T: Scalar = f32> {
    /// Per node, its layer (`None` for a merge, which the engine runs itself).
    nodes: Vec<Option<Box<dyn Layer<T>>>>,
    core: ModelCore<T>,
}

/// One entry of a [`Branch`]: a layer, or a block of branches joined by a merge.
enum Item<T: Scalar> {
    Layer(Option<String>, Box<dyn Layer<T>>),
    /// A merge over branches that all read the block's input; `residual` makes it a
    /// residual block (branches: the body, then the shortcut, empty for identity).
    Block {
        merge: Merge,
        branches: Vec<Branch<T>>,
        residual: bool,
    },
}

/// A list of layers and blocks that reads one input: the body or shortcut of a
/// residual block, or one branch of a merge. An empty branch passes its input on
/// unchanged (the identity).
pub struct Branch<T: Scalar = f32> {
    items: Vec<Item<T>>,
}

impl<T: Scalar> Default for Branch<T> {
    fn default() -> Self {
        Branch { items: Vec::new() }
    }
}

macro_rules! branch_methods {
    ($items:ident) => {
        /// Appends a layer, named Keras-style (`dense`, `dense_1`, ...).
        pub fn add(mut self, layer: impl Layer<T> + 'static) -> Self {
            self.$items.push(Item::Layer(None, Box::new(layer)));
            self
        }

        /// Appends a layer under an explicit name (its parameters become `name/kernel`, ...).
        pub fn add_named(mut self, name: &str, layer: impl Layer<T> + 'static) -> Self {
            self.$items.push(Item::Layer(Some(name.to_string()), Box::new(layer)));
            self
        }

        /// Appends an already boxed layer under an explicit name.
        pub fn add_named_boxed(mut self, name: &str, layer: Box<dyn Layer<T>>) -> Self {
            self.$items.push(Item::Layer(Some(name.to_string()), layer));
            self
        }

        /// Appends an already boxed layer.
        pub fn add_boxed(mut self, layer: Box<dyn Layer<T>>) -> Self {
            self.$items.push(Item::Layer(None, layer));
            self
        }

        /// Appends a built-in layer by its Keras class name and Keras-style arguments, as
        /// `model!` writes them: `.add_builtin("Dense", &[(None, 10.into()), (Some("activation"), "relu".into())])`.
        pub fn add_builtin(
            mut self,
            class: &str,
            args: &[(Option<&str>, kiln_spec::Value)],
        ) -> Result<Self> {
            self.$items.push(Item::Layer(None, crate::layers::builtin(class, args)?));
            Ok(self)
        }

        /// Appends a residual block: `body(x) + x` (`model!`'s `Residual[ .. ]`). The
        /// body must keep the shape.
        pub fn residual(mut self, body: Branch<T>) -> Self {
            self.$items.push(Item::Block {
                merge: Merge::ADD,
                branches: vec![body, Branch::default()],
                residual: true,
            });
            self
        }

        /// Appends a residual block with a projection on the skip path:
        /// `body(x) + shortcut(x)` (`model!`'s `Residual[ .. ] + shortcut[ .. ]`).
        pub fn residual_with_shortcut(mut self, body: Branch<T>, shortcut: Branch<T>) -> Self {
            self.$items.push(Item::Block {
                merge: Merge::ADD,
                branches: vec![body, shortcut],
                residual: true,
            });
            self
        }

        /// Appends a merge block: every branch reads the same input and `merge` joins
        /// their outputs (`model!`'s `Add[[..], [..]]`, `Concatenate(axis = -1)[[..], [..]]`).
        pub fn merge(mut self, merge: Merge, branches: Vec<Branch<T>>) -> Self {
            self.$items.push(Item::Block { merge, branches, residual: false });
            self
        }
    };
}

// `add` is Keras's name for appending a layer; it is a builder method, not arithmetic.
#[allow(clippy::should_implement_trait)]
impl<T: Scalar> Branch<T> {
    /// An empty branch (the identity until layers are added).
    pub fn new() -> Self {
        Self::default()
    }

    branch_methods!(items);
}

/// Collects layers and blocks for a [`Sequential`]; [`SequentialBuilder::build`]
/// checks the shapes.
pub struct SequentialBuilder<T: Scalar> {
    name: String,
    input: Vec<usize>,
    layers: Vec<Item<T>>,
    fuse: bool,
}

/// What a node of the flat program computes.
enum FlatOp<T: Scalar> {
    Layer(Box<dyn Layer<T>>),
    Merge(Merge),
}

/// A node of the flat program a builder produces.
struct Flat<T: Scalar> {
    name: Option<String>,
    op: FlatOp<T>,
    inputs: Vec<Src>,
    residual: Option<Src>,
}

/// Appends `items` reading `src` to `out`; returns what the last of them gives.
fn flatten<T: Scalar>(items: Vec<Item<T>>, mut src: Src, out: &mut Vec<Flat<T>>) -> Src {
    for item in items {
        match item {
            Item::Layer(name, layer) => {
                out.push(Flat {
                    name,
                    op: FlatOp::Layer(layer),
                    inputs: vec![src],
                    residual: None,
                });
            }
            Item::Block { merge, branches, residual } => {
                let ends: Vec<Src> =
                    branches.into_iter().map(|b| flatten(b.items, src, out)).collect();
                out.push(Flat {
                    name: None,
                    op: FlatOp::Merge(merge),
                    inputs: ends,
                    residual: residual.then_some(src),
                });
            }
        }
        src = Src::Node(out.len() - 1);
    }
    src
}

fn build_flat<T: Scalar>(
    name: &str,
    input: &[usize],
    flat: Vec<Flat<T>>,
    seed: Seed,
    fuse: bool,
) -> Result<Sequential<T>> {
    let mut layers: Vec<Option<Box<dyn Layer<T>>>> = Vec::with_capacity(flat.len());
    let mut meta = Vec::with_capacity(flat.len());
    for f in flat {
        let merge = match f.op {
            FlatOp::Layer(l) => {
                layers.push(Some(l));
                None
            }
            FlatOp::Merge(m) => {
                layers.push(None);
                Some(m)
            }
        };
        meta.push((f.name, merge, f.inputs, f.residual));
    }
    let mut defs: Vec<NodeDef<'_, T>> = layers
        .iter_mut()
        .zip(&meta)
        .map(|(l, (n, m, inputs, residual))| NodeDef {
            name: n.as_deref(),
            // Exactly one of the two is set, by the loop above.
            op: match (l, m) {
                (Some(l), _) => NodeOp::Layer(l.as_mut()),
                (None, m) => NodeOp::Merge(m.unwrap_or(Merge::ADD)),
            },
            inputs: inputs.clone(),
            residual: *residual,
        })
        .collect();
    let core = ModelCore::build_graph(name, input, &mut defs, seed, fuse)?;
    drop(defs);
    Ok(Sequential { nodes: layers, core })
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

    branch_methods!(layers);

    /// Builds every layer and block in order, checking each input shape and each
    /// merge, and draws the initial parameters from `seed`.
    pub fn build(self, seed: Seed) -> Result<Sequential<T>> {
        let mut flat = Vec::new();
        flatten(self.layers, Src::Input, &mut flat);
        build_flat(&self.name, &self.input, flat, seed, self.fuse)
    }
}

/// Builds a network as Keras's functional API describes one: every layer names the
/// layers feeding it (`"input_layer"` is the model's input), in an order where each
/// layer comes after its inputs; the last one added is the output. This is how a
/// recorded Keras model (its `inbound` layers) becomes a kiln network.
pub struct FunctionalBuilder<T: Scalar> {
    name: String,
    input: Vec<usize>,
    nodes: Vec<Flat<T>>,
    names: Vec<String>,
    error: Option<String>,
}

impl<T: Scalar> FunctionalBuilder<T> {
    /// Starts a functional model called `name` taking samples of shape `input`.
    pub fn new(name: &str, input: &[usize]) -> Self {
        FunctionalBuilder {
            name: name.into(),
            input: input.to_vec(),
            nodes: Vec::new(),
            names: Vec::new(),
            error: None,
        }
    }

    fn sources(&mut self, node: &str, inbound: &[&str]) -> Vec<Src> {
        let mut out = Vec::new();
        for &n in inbound {
            if n == "input_layer" {
                out.push(Src::Input);
            } else if let Some(j) = self.names.iter().position(|m| m == n) {
                out.push(Src::Node(j));
            } else if self.error.is_none() {
                self.error = Some(format!(
                    "layer `{node}` reads `{n}`, which is not added before it; add the layers in an order where each comes after its inputs"
                ));
            }
        }
        out
    }

    /// Adds layer `name`, fed by the layers named in `inbound`.
    pub fn layer(mut self, name: &str, layer: Box<dyn Layer<T>>, inbound: &[&str]) -> Self {
        let inputs = self.sources(name, inbound);
        self.nodes.push(Flat {
            name: Some(name.into()),
            op: FlatOp::Layer(layer),
            inputs,
            residual: None,
        });
        self.names.push(name.into());
        self
    }

    /// Adds merge `name` (Keras's `Add`, `Concatenate`, ...), fed by `inbound`.
    pub fn merge(mut self, name: &str, merge: Merge, inbound: &[&str]) -> Self {
        let inputs = self.sources(name, inbound);
        self.nodes.push(Flat {
            name: Some(name.into()),
            op: FlatOp::Merge(merge),
            inputs,
            residual: None,
        });
        self.names.push(name.into());
        self
    }

    /// Checks every shape and draws the initial parameters from `seed`.
    pub fn build(self, seed: Seed) -> Result<Sequential<T>> {
        if let Some(message) = self.error {
            return Err(crate::error::Error::Layer { layer: self.name, message });
        }
        build_flat(&self.name, &self.input, self.nodes, seed, true)
    }
}

impl Sequential<f32> {
    /// Starts an f32 model (Keras's default) called `name` taking samples of shape
    /// `input`; [`SequentialBuilder::new`] builds one of another scalar type.
    pub fn builder(name: &str, input: &[usize]) -> SequentialBuilder<f32> {
        SequentialBuilder::new(name, input)
    }

    /// Starts an f32 functional model (layers naming their inputs); see
    /// [`FunctionalBuilder`].
    pub fn functional(name: &str, input: &[usize]) -> FunctionalBuilder<f32> {
        FunctionalBuilder::new(name, input)
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

    /// What feeds each layer, in order.
    pub fn layer_inputs(&self) -> Vec<&[Src]> {
        self.core.layer_inputs()
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
        for (i, l) in self.nodes.iter_mut().enumerate() {
            match l {
                Some(l) => self.core.forward_layer(i, &mut **l, x, training)?,
                None => self.core.forward_merge(i, x)?,
            }
        }
        self.core.output()
    }
}

impl<T: kiln_train::Dtype> Model for Sequential<T> {
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
        for (i, l) in self.nodes.iter_mut().enumerate().rev() {
            match l {
                Some(l) => self.core.backward_layer(i, &mut **l, x, grads)?,
                None => self.core.backward_merge(i, x)?,
            }
        }
        Ok(())
    }
    fn reseed(&mut self, seed: u64) {
        for (i, l) in self.nodes.iter_mut().enumerate() {
            if let Some(l) = l {
                self.core.reseed_layer(i, &mut **l, seed);
            }
        }
    }
    fn check_inputs(&self, x: &[T]) -> kiln_train::Result<()> {
        for (i, l) in self.nodes.iter().enumerate() {
            if let Some(l) = l {
                self.core.check_input_of(i, &**l, x)?;
            }
        }
        Ok(())
    }
}
