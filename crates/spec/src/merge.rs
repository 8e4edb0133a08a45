//! Merge layers (Keras's `Add`, `Subtract`, `Multiply`, `Average`, `Maximum`,
//! `Minimum`, `Concatenate`) and residual blocks: their argument tables and the shape
//! rules that decide whether branches fit together.
//!
//! A merge takes several inputs, so it is not a [`crate::LayerSpec`]; the engine runs
//! merges itself (they hold no parameters). `model!` and the run-time builders both
//! call [`Merge::output`] and [`residual_output`], so a misfit reads the same from
//! either.

use crate::value::{ArgDef, Args, Default as D, Kind, SpecError, Value};

/// What a merge computes from its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MergeKind {
    /// The element-wise sum, in input order.
    Add,
    /// The first input minus the second (exactly two inputs).
    Subtract,
    /// The element-wise product, in input order.
    Multiply,
    /// The element-wise mean.
    Average,
    /// The element-wise maximum (ties go to the earlier input).
    Maximum,
    /// The element-wise minimum (ties go to the earlier input).
    Minimum,
    /// The inputs joined along one axis.
    Concatenate,
}

/// One merge class as the table lists it.
#[derive(Clone, Copy, Debug)]
pub struct MergeEntry {
    /// Keras's class name.
    pub class: &'static str,
    /// The base of instance names (`add`, `add_1`, ...).
    pub base_name: &'static str,
    /// What it computes.
    pub kind: MergeKind,
    /// Its argument table.
    pub args: &'static [ArgDef],
    /// One sentence on what it does.
    pub doc: &'static str,
}

const NO_ARGS: &[ArgDef] = &[];
const CONCAT_ARGS: &[ArgDef] = &[ArgDef::new("axis", Kind::Number, D::Int(-1))];

/// Every merge layer, in Keras's names.
pub const MERGES: &[MergeEntry] = &[
    MergeEntry {
        class: "Add",
        base_name: "add",
        kind: MergeKind::Add,
        args: NO_ARGS,
        doc: "Adds its branches element by element (all of one shape).",
    },
    MergeEntry {
        class: "Subtract",
        base_name: "subtract",
        kind: MergeKind::Subtract,
        args: NO_ARGS,
        doc: "Subtracts its second branch from its first (two branches of one shape).",
    },
    MergeEntry {
        class: "Multiply",
        base_name: "multiply",
        kind: MergeKind::Multiply,
        args: NO_ARGS,
        doc: "Multiplies its branches element by element (all of one shape).",
    },
    MergeEntry {
        class: "Average",
        base_name: "average",
        kind: MergeKind::Average,
        args: NO_ARGS,
        doc: "Averages its branches element by element (all of one shape).",
    },
    MergeEntry {
        class: "Maximum",
        base_name: "maximum",
        kind: MergeKind::Maximum,
        args: NO_ARGS,
        doc: "The element-wise maximum of its branches (all of one shape).",
    },
    MergeEntry {
        class: "Minimum",
        base_name: "minimum",
        kind: MergeKind::Minimum,
        args: NO_ARGS,
        doc: "The element-wise minimum of its branches (all of one shape).",
    },
    MergeEntry {
        class: "Concatenate",
        base_name: "concatenate",
        kind: MergeKind::Concatenate,
        args: CONCAT_ARGS,
        doc: "Joins its branches along `axis` (Keras counts the batch as axis 0; -1 is the last).",
    },
];

/// The merge class called `name`.
pub fn merge_lookup(name: &str) -> Option<&'static MergeEntry> {
    MERGES.iter().find(|m| m.class == name)
}

/// Every merge class name, for "did you mean".
pub fn merge_names() -> Vec<&'static str> {
    MERGES.iter().map(|m| m.class).collect()
}

/// A configured merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Merge {
    /// What it computes.
    pub kind: MergeKind,
    /// For Concatenate, the axis as Keras writes it (batch axis 0, -1 the last).
    pub axis: i64,
}

impl Merge {
    /// Keras's `Add()`.
    pub const ADD: Merge = Merge { kind: MergeKind::Add, axis: -1 };

    /// A merge of `kind` (Concatenate along the last axis).
    pub fn new(kind: MergeKind) -> Self {
        Merge { kind, axis: -1 }
    }

    /// Keras's `Concatenate(axis)`.
    pub fn concatenate(axis: i64) -> Self {
        Merge { kind: MergeKind::Concatenate, axis }
    }

    /// The table entry of this merge.
    pub fn entry(&self) -> &'static MergeEntry {
        MERGES.iter().find(|m| m.kind == self.kind).expect("every kind is in MERGES")
    }

    /// Keras's class name.
    pub fn class(&self) -> &'static str {
        self.entry().class
    }

    /// Builds the merge `class` from written arguments (`None` names are positional).
    pub fn from_written(class: &str, given: &[(Option<&str>, Value)]) -> Result<Self, SpecError> {
        let Some(entry) = merge_lookup(class) else {
            return Err(SpecError::layer(format!(
                "unknown merge `{class}`; the merges are {}",
                merge_names().join(", ")
            )));
        };
        let args = Args::bind(entry.class, entry.args, entry.args.len(), given)?;
        let mut m = Merge::new(entry.kind);
        if entry.kind == MergeKind::Concatenate {
            let a = args.number("axis")?;
            if a.fract() != 0.0 || a.abs() > 64.0 {
                return Err(SpecError::arg(
                    "axis",
                    format!("Concatenate's axis must be a whole number such as -1, got {a}"),
                ));
            }
            m.axis = a as i64;
        }
        Ok(m)
    }

    /// For Concatenate over samples of `rank` axes: the axis within a sample (0-based),
    /// or the sentence saying why `axis` does not name one.
    pub fn sample_axis(&self, rank: usize) -> Result<usize, SpecError> {
        let a = self.axis;
        let r = rank as i64;
        let valid = || {
            if r == 1 {
                "use axis = -1 (or 1)".to_string()
            } else {
                format!("use an axis from 1 to {r} or from -{r} to -1")
            }
        };
        if a == 0 {
            return Err(SpecError::arg(
                "axis",
                format!(
                    "Concatenate cannot join along axis 0, the batch axis; {} (-1, the last, is usual)",
                    valid()
                ),
            ));
        }
        if a > r || a < -r {
            return Err(SpecError::arg(
                "axis",
                format!(
                    "Concatenate's axis {a} is out of range for branches of rank {r} (per sample); {}",
                    valid()
                ),
            ));
        }
        Ok(if a > 0 { (a - 1) as usize } else { (r + a) as usize })
    }

    /// The per-sample output shape of this merge over branch outputs `inputs`, or the
    /// sentence saying which branches do not fit and how to fix them.
    pub fn output(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, SpecError> {
        let class = self.class();
        if inputs.len() < 2 {
            return Err(SpecError::layer(format!(
                "{class} needs at least two branches but has {}; write each branch in brackets, as in {class}[[..], [..]]",
                inputs.len()
            )));
        }
        if self.kind == MergeKind::Subtract && inputs.len() != 2 {
            return Err(SpecError::layer(format!(
                "Subtract takes exactly two branches (the first minus the second) but has {}",
                inputs.len()
            )));
        }
        let first = inputs[0];
        if self.kind != MergeKind::Concatenate {
            for (i, s) in inputs.iter().enumerate().skip(1) {
                if *s != first {
                    return Err(SpecError::layer(format!(
                        "{class} needs branches of one shape, but branch 1 gives {first:?} and branch {} gives {s:?}; make the branches end in the same shape (a Dense or a 1x1 Conv2D sets the width)",
                        i + 1
                    )));
                }
            }
            return Ok(first.to_vec());
        }
        let axis = self.sample_axis(first.len())?;
        let mut out = first.to_vec();
        for (i, s) in inputs.iter().enumerate().skip(1) {
            let fits = s.len() == first.len()
                && s.iter().zip(first).enumerate().all(|(k, (a, b))| k == axis || a == b);
            if !fits {
                return Err(SpecError::layer(format!(
                    "Concatenate(axis = {}) needs branches equal on every axis but axis {}, but branch 1 gives {first:?} and branch {} gives {s:?}; make the other axes agree (pooling or strides) or concatenate along another axis",
                    self.axis,
                    axis + 1,
                    i + 1
                )));
            }
            out[axis] += s[axis];
        }
        Ok(out)
    }
}

/// The output of a residual block whose input is `input`, whose body gives `body` and
/// whose shortcut (identity when `None`) gives `shortcut`: the sum's shape, or the
/// sentence naming both shapes and the shortcut that would fix them.
pub fn residual_output(
    input: &[usize],
    body: &[usize],
    shortcut: Option<&[usize]>,
) -> Result<Vec<usize>, SpecError> {
    match shortcut {
        None if body != input => Err(SpecError::layer(format!(
            "the block turns {input:?} into {body:?}, so its input cannot be added to its output; {}",
            match shortcut_fix(input, body) {
                Some(fix) => format!("add shortcut[{fix}] or keep the shape"),
                None => "add a shortcut[..] that gives the same shape or keep the shape".into(),
            }
        ))),
        Some(s) if s != body => Err(SpecError::layer(format!(
            "the block's body gives {body:?} but its shortcut gives {s:?}; make the shortcut end in {body:?}{}",
            match shortcut_fix(input, body) {
                Some(fix) => format!(", as shortcut[{fix}] does"),
                None => String::new(),
            }
        ))),
        _ => Ok(body.to_vec()),
    }
}

/// A projection that maps `input` to `output`, when there is a usual one.
fn shortcut_fix(input: &[usize], output: &[usize]) -> Option<String> {
    match (input, output) {
        (&[h, w, _], &[oh, ow, c]) if oh > 0 && ow > 0 && h.div_ceil(oh) == w.div_ceil(ow) => {
            let s = h.div_ceil(oh);
            if s == 1 && (h, w) == (oh, ow) {
                Some(format!("Conv2D({c}, kernel = 1)"))
            } else if h.div_ceil(s) == oh && w.div_ceil(s) == ow {
                Some(format!("Conv2D({c}, kernel = 1, strides = {s}, padding = same)"))
            } else {
                None
            }
        }
        (&[n, _], &[on, c]) if on > 0 => {
            let s = n.div_ceil(on);
            if s == 1 && n == on {
                Some(format!("Conv1D({c}, kernel = 1)"))
            } else if n.div_ceil(s) == on {
                Some(format!("Conv1D({c}, kernel = 1, strides = {s}, padding = same)"))
            } else {
                None
            }
        }
        (&[_], &[u]) => Some(format!("Dense({u})")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_merges_and_residual_blocks() {
        let add = Merge::ADD;
        assert_eq!(add.output(&[&[4, 4, 8], &[4, 4, 8]]).unwrap(), vec![4, 4, 8]);
        let e = add.output(&[&[4, 4, 8], &[4, 4, 6]]).unwrap_err().message;
        assert!(e.contains("branch 2 gives [4, 4, 6]"), "{e}");
        let cat = Merge::concatenate(-1);
        assert_eq!(cat.output(&[&[4, 4, 3], &[4, 4, 2]]).unwrap(), vec![4, 4, 5]);
        assert_eq!(Merge::concatenate(1).output(&[&[3, 2], &[4, 2]]).unwrap(), vec![7, 2]);
        assert!(cat.output(&[&[4, 4, 3], &[2, 2, 2]]).unwrap_err().message.contains("axis 3"));
        assert!(Merge::concatenate(4).output(&[&[1, 2, 3], &[1, 2, 3]]).is_err());
        assert!(Merge::concatenate(0).output(&[&[3], &[3]]).unwrap_err().message.contains("batch"));
        assert!(Merge::new(MergeKind::Subtract).output(&[&[3], &[3], &[3]]).is_err());
        assert!(add.output(&[&[3]]).is_err());
        let e = residual_output(&[28, 28, 32], &[14, 14, 64], None).unwrap_err().message;
        assert!(
            e.contains("turns [28, 28, 32] into [14, 14, 64]")
                && e.contains("shortcut[Conv2D(64, kernel = 1, strides = 2, padding = same)]"),
            "{e}"
        );
        assert_eq!(residual_output(&[8], &[8], None).unwrap(), vec![8]);
        assert!(residual_output(&[8], &[4], Some(&[5])).unwrap_err().message.contains("Dense(4)"));
        let m = Merge::from_written("Concatenate", &[(Some("axis"), Value::Int(-2))]).unwrap();
        assert_eq!(m.sample_axis(3).unwrap(), 1);
        assert!(Merge::from_written("Add", &[(Some("axis"), Value::Int(1))]).is_err());
    }
}
