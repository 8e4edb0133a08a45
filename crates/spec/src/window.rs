//! Window arithmetic shared by every convolution and pooling, in kiln-spec so that the
//! shape rule `model!` checks and the kernels' geometry are one formula.

/// How a window treats the border, as Keras's `padding` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding: only windows that fit entirely (Keras's default).
    #[default]
    Valid,
    /// Zero padding so the output has `ceil(input / stride)` positions, the extra one
    /// at the end when the total is odd, as TensorFlow.
    Same,
    /// Zero padding before the sequence only, so step t sees nothing after t (Conv1D).
    Causal,
}

impl Padding {
    /// Looks a padding up by its Keras name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "valid" => Some(Padding::Valid),
            "same" => Some(Padding::Same),
            "causal" => Some(Padding::Causal),
            _ => None,
        }
    }
    /// The Keras name.
    pub fn name(&self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
            Padding::Causal => "causal",
        }
    }
}

/// Paddings of 2-D layers and pooling.
pub const PADDINGS: &[&str] = &["valid", "same"];
/// Paddings of Conv1D.
pub const PADDINGS_1D: &[&str] = &["valid", "same", "causal"];

/// Output size and leading pad of one axis of `input` positions under a window of
/// `window` taps spaced `dilation` apart, moved by `stride`; `None` when the window
/// does not fit (valid padding and a window wider than the input) or a size is zero.
pub fn window_output_dilated(
    input: usize,
    window: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
) -> Option<(usize, usize)> {
    if window == 0 || stride == 0 || input == 0 || dilation == 0 {
        return None;
    }
    let span = (window - 1).checked_mul(dilation)?.checked_add(1)?;
    match padding {
        Padding::Valid => (input >= span).then(|| ((input - span) / stride + 1, 0)),
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + span).saturating_sub(input);
            Some((out, total / 2))
        }
        Padding::Causal => Some(((input - 1) / stride + 1, span - 1)),
    }
}

/// [`window_output_dilated`] with adjacent taps.
pub fn window_output(
    input: usize,
    window: usize,
    stride: usize,
    padding: Padding,
) -> Option<(usize, usize)> {
    window_output_dilated(input, window, stride, 1, padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_output_sizes() {
        assert_eq!(window_output(28, 3, 1, Padding::Valid), Some((26, 0)));
        assert_eq!(window_output(28, 3, 2, Padding::Same), Some((14, 0)));
        assert_eq!(window_output(5, 3, 1, Padding::Same), Some((5, 1)));
        assert_eq!(window_output(2, 3, 1, Padding::Valid), None);
        assert_eq!(window_output_dilated(10, 3, 1, 2, Padding::Valid), Some((6, 0)));
        assert_eq!(window_output_dilated(10, 3, 1, 2, Padding::Causal), Some((10, 4)));
        assert_eq!(window_output_dilated(10, 3, 1, 2, Padding::Same), Some((10, 2)));
        assert_eq!(window_output(0, 1, 1, Padding::Same), None);
    }
}
