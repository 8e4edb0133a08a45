//! Conv1D and Conv2D.

use super::core::kernel_bias_args;
use super::{activation, initializer};
use crate::LayerSpec;
use crate::names::{Activation as Act, Initializer};
use crate::value::{ArgDef, Args, Default as D, Kind, SpecError};
use crate::window::{PADDINGS, PADDINGS_1D, Padding, window_output_dilated};

/// Keras `Conv2D` on `[height, width, channels]` samples, kernel `[kh, kw, in, filters]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2D {
    /// Output channels.
    pub filters: usize,
    /// Kernel height and width.
    pub kernel_size: (usize, usize),
    /// Vertical and horizontal strides.
    pub strides: (usize, usize),
    /// Valid or same.
    pub padding: Padding,
    /// The activation applied to the output.
    pub activation: Act,
    /// Whether a bias is added.
    pub use_bias: bool,
    /// How the kernel starts.
    pub kernel_initializer: Initializer,
    /// How the bias starts.
    pub bias_initializer: Initializer,
}

impl Conv2D {
    /// `filters` channels, a 3×3 kernel, stride 1, valid padding, linear, with bias.
    pub fn new(filters: usize) -> Self {
        Conv2D {
            filters,
            kernel_size: (3, 3),
            strides: (1, 1),
            padding: Padding::Valid,
            activation: Act::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
        }
    }

    fn check(&self) -> Result<(), SpecError> {
        let Conv2D { filters, kernel_size: (kh, kw), strides: (sh, sw), .. } = *self;
        if filters == 0 || kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            return Err(SpecError::layer(format!(
                "filters, kernel size and strides must be at least 1, got filters {filters}, kernel ({kh}, {kw}), strides ({sh}, {sw})"
            )));
        }
        if self.padding == Padding::Causal {
            return Err(SpecError::arg(
                "padding",
                "Conv2D takes padding valid or same; causal is for Conv1D",
            ));
        }
        Ok(())
    }
}

impl LayerSpec for Conv2D {
    const CLASS: &'static str = "Conv2D";
    const ALIASES: &'static [&'static str] = &["Convolution2D"];
    const BASE_NAME: &'static str = "conv2d";
    const ARGS: &'static [ArgDef] = kernel_bias_args![
        ArgDef::new("filters", Kind::Count, D::Required),
        ArgDef::new("kernel_size", Kind::CountOrPair, D::Required).alias(&["kernel"]),
        ArgDef::new("strides", Kind::CountOrPair, D::Int(1)),
        ArgDef::new("padding", Kind::OneOf(PADDINGS), D::Name("valid")),
    ];
    const POSITIONAL: usize = 2;
    const DOC: &'static str = "2-D convolution of `[height, width, channels]` samples with a `[kh, kw, in, filters]` kernel.";

    fn from_args(a: &Args) -> Result<Self, SpecError> {
        let c = Conv2D {
            filters: a.count("filters")?,
            kernel_size: a.pair_opt("kernel_size")?.unwrap_or((3, 3)),
            strides: a.pair_opt("strides")?.unwrap_or((1, 1)),
            padding: Padding::from_name(&a.choice("padding", "padding", PADDINGS)?)
                .unwrap_or_default(),
            activation: activation(a, "activation")?,
            use_bias: a.bool("use_bias")?,
            kernel_initializer: initializer(a, "kernel_initializer")?,
            bias_initializer: initializer(a, "bias_initializer")?,
        };
        c.check()?;
        Ok(c)
    }

    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        self.check()?;
        let &[h, w, _] = input else {
            return Err(SpecError::layer(format!(
                "Conv2D needs an input [height, width, channels] but gets {input:?}: add Reshape([h, w, c]) before it"
            )));
        };
        let ((kh, kw), (sh, sw)) = (self.kernel_size, self.strides);
        let out = |i, k, s| window_output_dilated(i, k, s, 1, self.padding).map(|o| o.0);
        let (Some(oh), Some(ow)) = (out(h, kh, sh), out(w, kw, sw)) else {
            return Err(SpecError::layer(format!(
                "the {kh}x{kw} kernel does not fit the {h}x{w} input {input:?} with padding = valid: use padding = same, a smaller kernel, or fewer pooling layers before it"
            )));
        };
        Ok(vec![oh, ow, self.filters])
    }
}

/// Keras `Conv1D` on `[steps, channels]` samples, kernel `[k, in, filters]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv1D {
    /// Output channels.
    pub filters: usize,
    /// Kernel length.
    pub kernel_size: usize,
    /// Stride.
    pub strides: usize,
    /// Valid, same or causal.
    pub padding: Padding,
    /// Spacing of the kernel's taps.
    pub dilation_rate: usize,
    /// The activation applied to the output.
    pub activation: Act,
    /// Whether a bias is added.
    pub use_bias: bool,
    /// How the kernel starts.
    pub kernel_initializer: Initializer,
    /// How the bias starts.
    pub bias_initializer: Initializer,
}

impl Conv1D {
    /// `filters` channels over a `kernel_size` window, stride 1, valid, linear, with bias.
    pub fn new(filters: usize, kernel_size: usize) -> Self {
        Conv1D {
            filters,
            kernel_size,
            strides: 1,
            padding: Padding::Valid,
            dilation_rate: 1,
            activation: Act::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
        }
    }

    /// Input length, the first step's leading pad, and output length for `steps`.
    pub fn window(&self, steps: usize) -> Option<(usize, usize)> {
        window_output_dilated(
            steps,
            self.kernel_size,
            self.strides,
            self.dilation_rate,
            self.padding,
        )
    }

    fn check(&self) -> Result<(), SpecError> {
        let Conv1D { filters, kernel_size: k, strides: s, dilation_rate: d, .. } = *self;
        if filters == 0 || k == 0 || s == 0 || d == 0 {
            return Err(SpecError::layer(format!(
                "filters, kernel_size, strides and dilation_rate must be at least 1, got filters {filters}, kernel_size {k}, strides {s}, dilation_rate {d}"
            )));
        }
        if s > 1 && d > 1 {
            return Err(SpecError::arg(
                "dilation_rate",
                format!(
                    "Conv1D cannot combine strides {s} with dilation_rate {d} (Keras refuses it too): set one of them to 1"
                ),
            ));
        }
        Ok(())
    }
}

impl LayerSpec for Conv1D {
    const CLASS: &'static str = "Conv1D";
    const ALIASES: &'static [&'static str] = &["Convolution1D"];
    const BASE_NAME: &'static str = "conv1d";
    const ARGS: &'static [ArgDef] = kernel_bias_args![
        ArgDef::new("filters", Kind::Count, D::Required),
        ArgDef::new("kernel_size", Kind::Count, D::Required).alias(&["kernel"]),
        ArgDef::new("strides", Kind::Count, D::Int(1)),
        ArgDef::new("padding", Kind::OneOf(PADDINGS_1D), D::Name("valid")),
        ArgDef::new("dilation_rate", Kind::Count, D::Int(1)),
    ];
    const POSITIONAL: usize = 2;
    const DOC: &'static str =
        "1-D convolution of `[steps, channels]` samples with a `[k, in, filters]` kernel.";

    fn from_args(a: &Args) -> Result<Self, SpecError> {
        let one = |n: &str| a.count_or_single(n).map(|v| v.unwrap_or(1));
        let c = Conv1D {
            filters: a.count("filters")?,
            kernel_size: one("kernel_size")?,
            strides: one("strides")?,
            padding: Padding::from_name(&a.choice("padding", "padding", PADDINGS_1D)?)
                .unwrap_or_default(),
            dilation_rate: one("dilation_rate")?,
            activation: activation(a, "activation")?,
            use_bias: a.bool("use_bias")?,
            kernel_initializer: initializer(a, "kernel_initializer")?,
            bias_initializer: initializer(a, "bias_initializer")?,
        };
        c.check()?;
        Ok(c)
    }

    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        self.check()?;
        let &[steps, _] = input else {
            let fix = if input.len() == 3 {
                "use Conv2D for images"
            } else {
                "add Reshape([steps, channels]) before it"
            };
            return Err(SpecError::layer(format!(
                "Conv1D needs an input [steps, channels] but gets {input:?}: {fix}"
            )));
        };
        let Some((out, _)) = self.window(steps) else {
            let span = (self.kernel_size - 1) * self.dilation_rate + 1;
            return Err(SpecError::layer(format!(
                "the kernel spans {span} steps but the input {input:?} has {steps} with padding = valid: use padding = same or causal, or a shorter kernel"
            )));
        };
        Ok(vec![out, self.filters])
    }
}
