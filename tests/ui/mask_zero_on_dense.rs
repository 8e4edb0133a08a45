kiln::model! {
    struct Net: [20] => [
        Dense(16, mask_zero = true),
        Dense(2, activation = softmax),
    ]
}
fn main() {}
