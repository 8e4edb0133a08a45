//! Sample shapes as types: `S1<784>`, `S3<28, 28, 1>` (channels-last, as Keras), or
//! [`Dyn`] for models whose shapes are only known at run time.
//!
//! The batch dimension is never part of a shape: it is dynamic.

/// A per-sample shape known to the type system (or explicitly not, for [`Dyn`]).
pub trait Shape: 'static {
    /// The dimensions, or `None` for [`Dyn`], whose data carries its shape at run time.
    const DIMS: Option<&'static [usize]>;

    /// Human-readable form for messages, e.g. `[28, 28, 1]`.
    fn describe() -> String {
        match Self::DIMS {
            Some(d) => format!("{d:?}"),
            None => "[dynamic]".into(),
        }
    }
}

/// A rank-1 sample shape `[A]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct S1<const A: usize>;
/// A rank-2 sample shape `[A, B]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct S2<const A: usize, const B: usize>;
/// A rank-3 sample shape `[A, B, C]` (height, width, channels for images).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct S3<const A: usize, const B: usize, const C: usize>;
/// A rank-4 sample shape `[A, B, C, D]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct S4<const A: usize, const B: usize, const C: usize, const D: usize>;
/// A shape checked only at run time (runtime-built models, data read from files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Dyn;

impl<const A: usize> Shape for S1<A> {
    const DIMS: Option<&'static [usize]> = Some(&[A]);
}
impl<const A: usize, const B: usize> Shape for S2<A, B> {
    const DIMS: Option<&'static [usize]> = Some(&[A, B]);
}
impl<const A: usize, const B: usize, const C: usize> Shape for S3<A, B, C> {
    const DIMS: Option<&'static [usize]> = Some(&[A, B, C]);
}
impl<const A: usize, const B: usize, const C: usize, const D: usize> Shape for S4<A, B, C, D> {
    const DIMS: Option<&'static [usize]> = Some(&[A, B, C, D]);
}
impl Shape for Dyn {
    const DIMS: Option<&'static [usize]> = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_are_the_const_parameters() {
        assert_eq!(S3::<28, 28, 1>::DIMS, Some(&[28, 28, 1][..]));
        assert_eq!(S1::<784>::describe(), "[784]");
        assert_eq!(Dyn::DIMS, None);
    }
}
