// A hand-written layer declaring [64] inputs placed after a layer that gives [128].
use kiln::layers::{Backward, Layer, Params, ShapedLayer};
use kiln::S1;

struct Scale64;

impl ShapedLayer for Scale64 {
    type Input = S1<64>;
    type Output = S1<64>;
}

impl Layer<f32> for Scale64 {
    fn class_name(&self) -> &'static str { "Scale64" }
    fn base_name(&self) -> &'static str { "scale64" }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> { Ok(input.to_vec()) }
    fn forward(&mut self, _: Params<'_, f32>, x: &[f32], _: usize, y: &mut [f32]) -> kiln::tape::Result<()> {
        y.copy_from_slice(x);
        Ok(())
    }
    fn backward(&mut self, b: Backward<'_, f32>) -> kiln::tape::Result<()> {
        if let Some(dx) = b.dx { dx.copy_from_slice(b.dy); }
        Ok(())
    }
}

kiln::model! {
    struct Net: [784] => [
        Dense(128, activation = relu),
        layer(Scale64),
        Dense(10),
    ]
}
fn main() {}
