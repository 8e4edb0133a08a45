// Axis 0 is the batch: a model cannot join samples.
kiln::model! {
    struct Net: [6] => [
        Concatenate(0)[[Dense(3)], [Dense(3)]],
        Dense(3, activation = softmax),
    ]
}
fn main() {}
