// Dense directly after a convolution: its input is not flat.
kiln::model! {
    struct Net: [28, 28, 1] => [
        Conv2D(32, kernel = 3, activation = relu),
        Dense(10, activation = softmax),
    ]
}
fn main() {}
