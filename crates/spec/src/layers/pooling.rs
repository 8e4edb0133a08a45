//! Windowed and global pooling in one and two dimensions.

use crate::LayerSpec;
use crate::value::{ArgDef, Args, Default as D, Kind, SpecError};
use crate::window::{PADDINGS, Padding, window_output};

/// Keras `MaxPooling2D` / `AveragePooling2D` settings on `[height, width, channels]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pool2D {
    /// Window height and width.
    pub pool_size: (usize, usize),
    /// Strides (Keras's default: the pool size).
    pub strides: (usize, usize),
    /// Valid or same.
    pub padding: Padding,
}

impl Pool2D {
    /// A `pool × pool` window moved by its own size, valid padding.
    pub fn new(pool: usize) -> Self {
        Pool2D { pool_size: (pool, pool), strides: (pool, pool), padding: Padding::Valid }
    }

    fn from_args(a: &Args) -> Result<Self, SpecError> {
        let pool_size = a.pair_opt("pool_size")?.unwrap_or((2, 2));
        Ok(Pool2D {
            pool_size,
            strides: a.pair_opt("strides")?.unwrap_or(pool_size),
            padding: Padding::from_name(&a.choice("padding", "padding", PADDINGS)?)
                .unwrap_or_default(),
        })
    }

    fn output(&self, class: &str, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        let ((ph, pw), (sh, sw)) = (self.pool_size, self.strides);
        if ph == 0 || pw == 0 || sh == 0 || sw == 0 {
            return Err(SpecError::layer(format!(
                "pool size and strides must be at least 1, got pool ({ph}, {pw}), strides ({sh}, {sw})"
            )));
        }
        let &[h, w, c] = input else {
            let fix = if input.len() == 2 {
                format!(": use {}1D for sequences", &class[..class.len() - 2])
            } else {
                String::new()
            };
            return Err(SpecError::layer(format!(
                "{class} needs an input [height, width, channels] but gets {input:?}{fix}"
            )));
        };
        let (Some((oh, _)), Some((ow, _))) =
            (window_output(h, ph, sh, self.padding), window_output(w, pw, sw, self.padding))
        else {
            return Err(SpecError::layer(format!(
                "the {ph}x{pw} window does not fit the {h}x{w} input {input:?} with padding = valid: use padding = same or a smaller pool"
            )));
        };
        Ok(vec![oh, ow, c])
    }
}

/// Keras `MaxPooling1D` / `AveragePooling1D` settings on `[steps, channels]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pool1D {
    /// Window length.
    pub pool_size: usize,
    /// Stride (Keras's default: the pool size).
    pub strides: usize,
    /// Valid or same.
    pub padding: Padding,
}

impl Pool1D {
    /// A `pool`-step window moved by its own size, valid padding.
    pub fn new(pool: usize) -> Self {
        Pool1D { pool_size: pool, strides: pool, padding: Padding::Valid }
    }

    fn from_args(a: &Args) -> Result<Self, SpecError> {
        let pool_size = a.count_or_single("pool_size")?.unwrap_or(2);
        Ok(Pool1D {
            pool_size,
            strides: a.count_or_single("strides")?.unwrap_or(pool_size),
            padding: Padding::from_name(&a.choice("padding", "padding", PADDINGS)?)
                .unwrap_or_default(),
        })
    }

    /// As a 2-D pool over `[1, steps, channels]`.
    pub fn as_2d(&self) -> Pool2D {
        Pool2D { pool_size: (1, self.pool_size), strides: (1, self.strides), padding: self.padding }
    }

    fn output(&self, class: &str, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        let (p, s) = (self.pool_size, self.strides);
        if p == 0 || s == 0 {
            return Err(SpecError::layer(format!(
                "pool size and strides must be at least 1, got pool {p}, strides {s}"
            )));
        }
        let &[steps, c] = input else {
            let fix = if input.len() == 3 {
                format!(": use {}2D for images", &class[..class.len() - 2])
            } else {
                ": add Reshape([steps, channels]) before it".into()
            };
            return Err(SpecError::layer(format!(
                "{class} needs an input [steps, channels] but gets {input:?}{fix}"
            )));
        };
        let Some((out, _)) = window_output(steps, p, s, self.padding) else {
            return Err(SpecError::layer(format!(
                "the {p}-step window does not fit the {steps} steps of {input:?} with padding = valid: use padding = same or a smaller pool"
            )));
        };
        Ok(vec![out, c])
    }
}

const POOL_2D_ARGS: &[ArgDef] = &[
    ArgDef::new("pool_size", Kind::CountOrPair, D::Int(2)).alias(&["pool"]),
    ArgDef::new("strides", Kind::CountOrPair, D::Derived("pool_size")),
    ArgDef::new("padding", Kind::OneOf(PADDINGS), D::Name("valid")),
];
const POOL_1D_ARGS: &[ArgDef] = &[
    ArgDef::new("pool_size", Kind::Count, D::Int(2)).alias(&["pool"]),
    ArgDef::new("strides", Kind::Count, D::Derived("pool_size")),
    ArgDef::new("padding", Kind::OneOf(PADDINGS), D::Name("valid")),
];

macro_rules! windowed {
    ($($(#[$doc:meta])* $t:ident($cfg:ident, $args:ident), $class:literal, [$($alias:literal),*], $base:literal, $doc_s:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $t(pub $cfg);
        impl LayerSpec for $t {
            const CLASS: &'static str = $class;
            const ALIASES: &'static [&'static str] = &[$($alias),*];
            const BASE_NAME: &'static str = $base;
            const ARGS: &'static [ArgDef] = $args;
            const POSITIONAL: usize = 1;
            const DOC: &'static str = $doc_s;
            fn from_args(a: &Args) -> Result<Self, SpecError> {
                Ok($t($cfg::from_args(a)?))
            }
            fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
                self.0.output($class, input)
            }
        }
    )*};
}

windowed! {
    /// Keras `MaxPooling2D`.
    MaxPooling2D(Pool2D, POOL_2D_ARGS), "MaxPooling2D", ["MaxPool2D"], "max_pooling2d",
        "The maximum of each window of each channel of `[height, width, channels]` samples.";
    /// Keras `AveragePooling2D` (same padding averages only the values inside the input).
    AveragePooling2D(Pool2D, POOL_2D_ARGS), "AveragePooling2D", ["AvgPool2D"], "average_pooling2d",
        "The mean of each window of each channel of `[height, width, channels]` samples.";
    /// Keras `MaxPooling1D`.
    MaxPooling1D(Pool1D, POOL_1D_ARGS), "MaxPooling1D", ["MaxPool1D"], "max_pooling1d",
        "The maximum of each window of each channel of `[steps, channels]` samples.";
    /// Keras `AveragePooling1D`.
    AveragePooling1D(Pool1D, POOL_1D_ARGS), "AveragePooling1D", ["AvgPool1D"], "average_pooling1d",
        "The mean of each window of each channel of `[steps, channels]` samples.";
}

/// Settings of the global poolings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Global {
    /// Keep the pooled axes as size 1 (Keras's `keepdims`).
    pub keepdims: bool,
}

macro_rules! global {
    ($($(#[$doc:meta])* $t:ident, $rank:literal, $class:literal, [$($alias:literal),*], $base:literal, $doc_s:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct $t(pub Global);
        impl LayerSpec for $t {
            const CLASS: &'static str = $class;
            const ALIASES: &'static [&'static str] = &[$($alias),*];
            const BASE_NAME: &'static str = $base;
            const ARGS: &'static [ArgDef] = &[ArgDef::new("keepdims", Kind::Bool, D::Bool(false))];
            const DOC: &'static str = $doc_s;
            fn from_args(a: &Args) -> Result<Self, SpecError> {
                Ok($t(Global { keepdims: a.bool("keepdims")? }))
            }
            fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
                global_output($class, $rank, self.0.keepdims, input)
            }
        }
    )*};
}

fn global_output(
    class: &str,
    rank: usize,
    keepdims: bool,
    input: &[usize],
) -> Result<Vec<usize>, SpecError> {
    if input.len() != rank + 1 || input.contains(&0) {
        let want = if rank == 1 { "[steps, channels]" } else { "[height, width, channels]" };
        let other = if rank == 1 { "2D" } else { "1D" };
        let fix = if input.len() == 1 {
            " (it is flat already: remove this layer, or pool before Flatten)".to_string()
        } else if input.len() == (if rank == 1 { 3 } else { 2 }) {
            format!(": use {}{other}", &class[..class.len() - 2])
        } else {
            String::new()
        };
        return Err(SpecError::layer(format!(
            "{class} needs an input {want} but gets {input:?}{fix}"
        )));
    }
    let c = input[rank];
    Ok(if keepdims { std::iter::repeat_n(1, rank).chain([c]).collect() } else { vec![c] })
}

global! {
    /// Keras `GlobalAveragePooling1D`.
    GlobalAveragePooling1D, 1, "GlobalAveragePooling1D", ["GlobalAvgPool1D"], "global_average_pooling1d",
        "The mean over all steps of each channel of `[steps, channels]` samples.";
    /// Keras `GlobalMaxPooling1D`.
    GlobalMaxPooling1D, 1, "GlobalMaxPooling1D", ["GlobalMaxPool1D"], "global_max_pooling1d",
        "The maximum over all steps of each channel of `[steps, channels]` samples.";
    /// Keras `GlobalAveragePooling2D`.
    GlobalAveragePooling2D, 2, "GlobalAveragePooling2D", ["GlobalAvgPool2D"], "global_average_pooling2d",
        "The mean over all positions of each channel of `[height, width, channels]` samples.";
    /// Keras `GlobalMaxPooling2D`.
    GlobalMaxPooling2D, 2, "GlobalMaxPooling2D", ["GlobalMaxPool2D"], "global_max_pooling2d",
        "The maximum over all positions of each channel of `[height, width, channels]` samples.";
}
