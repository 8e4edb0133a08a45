//! kiln-spec: what every built-in kiln layer *is*, independent of how it computes.
//!
//! For each layer: its Keras argument table (names, positional order, defaults), the
//! validation of those arguments, and its shape rule — the output shape for an input
//! shape, or a sentence saying why the input does not fit and how to fix it. The
//! `model!` macro evaluates these rules while the program compiles; the runtime layers
//! in the `kiln` crate evaluate the very same functions in `Layer::build`, so a shape
//! mistake reads the same from `model!` and from `Sequential`.
//!
//! It also holds what both sides must agree on: the activation, initializer and padding
//! name tables, "did you mean", Keras's layer naming, and the window arithmetic of
//! convolutions and pooling. It has no dependencies, so the proc-macro crate can use it.
//!
//! Adding a built-in layer: a spec type implementing [`LayerSpec`] in `layers/`, and
//! its name in [`with_layers!`]. `model!` then knows it; it names no layer itself.

pub mod layers;
pub mod merge;
pub mod names;
pub mod value;
pub mod window;

pub use merge::{MERGES, Merge, MergeEntry, MergeKind, merge_lookup, merge_names, residual_output};
pub use names::{
    ACTIVATIONS, Activation, ELEMENTWISE_ACTIVATIONS, INITIALIZERS, Initializer, Namer,
    did_you_mean, snake_case,
};
pub use value::{ArgDef, Args, Default, Kind, SpecError, Value};
pub use window::{PADDINGS, PADDINGS_1D, Padding, window_output, window_output_dilated};

/// A built-in layer's specification: its configuration as plain data, built from
/// Keras-style arguments, with its shape rule.
pub trait LayerSpec: Clone + std::fmt::Debug + Sized {
    /// Keras's class name, shown by `summary()` (`MaxPooling2D`).
    const CLASS: &'static str;
    /// Other names `model!` accepts for it (`MaxPool2D`).
    const ALIASES: &'static [&'static str] = &[];
    /// The base of instance names (`max_pooling2d`, `max_pooling2d_1`, ...).
    const BASE_NAME: &'static str;
    /// The argument table, positional arguments first in Keras's order.
    const ARGS: &'static [ArgDef] = &[];
    /// How many leading arguments may be given by position.
    const POSITIONAL: usize = 0;
    /// One sentence on what the layer does.
    const DOC: &'static str;

    /// Builds the configuration from bound arguments, validating each value.
    fn from_args(args: &Args) -> Result<Self, SpecError>;

    /// The per-sample output shape for a per-sample `input` shape.
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError>;

    /// Binds written arguments (`None` names are positional) and builds the
    /// configuration.
    fn from_written(given: &[(Option<&str>, Value)]) -> Result<Self, SpecError> {
        Self::from_args(&Args::bind(Self::CLASS, Self::ARGS, Self::POSITIONAL, given)?)
    }
}

/// Written arguments: a name (`None` for a positional one) and a value each.
pub type Written<'a> = [(Option<&'a str>, Value)];

/// A layer's shape rule over written arguments: binds them, then maps an input shape
/// to the output shape.
pub type ShapeRule = fn(&Written<'_>, &[usize]) -> Result<Vec<usize>, SpecError>;

/// One built-in layer as the registry lists it: everything `model!` needs to bind its
/// arguments, check its shape and name its type, without knowing which layer it is.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// Keras's class name.
    pub class: &'static str,
    /// Other accepted names.
    pub aliases: &'static [&'static str],
    /// The base of instance names.
    pub base_name: &'static str,
    /// The spec type's name in [`layers`] (the generated code names
    /// `::kiln::spec::layers::<ident>`).
    pub ident: &'static str,
    /// The argument table.
    pub args: &'static [ArgDef],
    /// How many leading arguments may be positional.
    pub positional: usize,
    /// One sentence on what it does.
    pub doc: &'static str,
    /// Binds written arguments and applies the shape rule to an input shape.
    pub output: ShapeRule,
}

impl Entry {
    /// Whether `name` is this layer's class or one of its aliases.
    pub fn is(&self, name: &str) -> bool {
        self.class == name || self.aliases.contains(&name)
    }
}

fn output_of<S: LayerSpec>(
    given: &[(Option<&str>, Value)],
    input: &[usize],
) -> Result<Vec<usize>, SpecError> {
    S::from_written(given)?.output(input)
}

/// The registry entry of spec type `S`.
pub fn entry<S: LayerSpec>(ident: &'static str) -> Entry {
    Entry {
        class: S::CLASS,
        aliases: S::ALIASES,
        base_name: S::BASE_NAME,
        ident,
        args: S::ARGS,
        positional: S::POSITIONAL,
        doc: S::DOC,
        output: output_of::<S>,
    }
}

/// Calls `$m! { A, B, ... }` with every built-in layer's spec type: the one list of
/// built-in layers, from which both this crate's registry and kiln's run-time
/// constructor table are generated.
#[macro_export]
macro_rules! with_layers {
    ($m:ident) => {
        $m! {
            Dense, Flatten, Reshape, Dropout,
            Activation, ReLU, LeakyReLU, ELU, SELU, GELU, Sigmoid, Tanh, Softmax, Softplus, Swish,
            Conv1D, Conv2D,
            MaxPooling1D, AveragePooling1D, MaxPooling2D, AveragePooling2D,
            GlobalAveragePooling1D, GlobalMaxPooling1D, GlobalAveragePooling2D, GlobalMaxPooling2D,
            BatchNormalization, LayerNormalization,
            Embedding, Masking,
            SimpleRNN, LSTM, GRU, Bidirectional,
        }
    };
}

macro_rules! registry {
    ($($t:ident),* $(,)?) => {
        /// Every built-in layer's registry entry.
        pub fn registry() -> Vec<Entry> {
            vec![$(entry::<layers::$t>(stringify!($t))),*]
        }
    };
}
with_layers!(registry);

/// The built-in layer called `name` (its class or an alias).
pub fn lookup(name: &str) -> Option<Entry> {
    registry().into_iter().find(|e| e.is(name))
}

/// Every name a built-in layer answers to, for "did you mean".
pub fn layer_names() -> Vec<&'static str> {
    registry()
        .iter()
        .flat_map(|e| std::iter::once(e.class).chain(e.aliases.iter().copied()))
        .collect()
}

/// Every built-in layer and merge as a markdown reference: class (and aliases), what
/// it does, and its arguments in order — positional ones marked — with their kinds and
/// defaults. kiln's build script writes it into the `kiln::layers` docs, so the
/// reference is generated from the same tables `model!` binds against.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "| layer | arguments (positional first, `name = default`) | what it does |\n|---|---|---|\n",
    );
    for e in registry() {
        let name = if e.aliases.is_empty() {
            format!("`{}`", e.class)
        } else {
            format!("`{}` (also `{}`)", e.class, e.aliases.join("`, `"))
        };
        let args: Vec<String> = e
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let pos = if i < e.positional { " (positional)" } else { "" };
                format!("`{} = {}`{pos}: {}", a.name, a.default, a.kind.describe())
            })
            .collect();
        let args = if args.is_empty() { "none".to_string() } else { args.join("; ") };
        out += &format!("| {name} | {args} | {} |\n", e.doc.replace('|', "\\|"));
    }
    out += "\nBlocks: `Residual[ layers ]`, `Residual[ layers ] + shortcut[ layers ]`, and the merges over bracketed branches:\n\n| merge | arguments | what it does |\n|---|---|---|\n";
    for m in MERGES {
        let args: Vec<String> = m
            .args
            .iter()
            .map(|a| format!("`{} = {}`: {}", a.name, a.default, a.kind.describe()))
            .collect();
        let args = if args.is_empty() { "none".to_string() } else { args.join("; ") };
        out += &format!("| `{}[[..], [..]]` | {args} | {} |\n", m.class, m.doc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_table_is_well_formed() {
        let names = layer_names();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[..i].contains(n), "{n} is listed twice");
        }
        for e in registry() {
            assert!(e.positional <= e.args.len(), "{}", e.class);
            for (i, a) in e.args.iter().enumerate() {
                assert!(!e.args[..i].iter().any(|b| b.name == a.name), "{}: {}", e.class, a.name);
            }
            assert!(!e.doc.is_empty(), "{}", e.class);
        }
        assert!(lookup("MaxPool2D").is_some_and(|e| e.class == "MaxPooling2D"));
        assert!(lookup("Dence").is_none());
    }
}
