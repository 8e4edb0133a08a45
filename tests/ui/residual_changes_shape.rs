// A residual block whose body halves the image and doubles the channels, with no
// shortcut to project the skip.
kiln::model! {
    struct Net: [28, 28, 1] => [
        Conv2D(32, kernel = 3, padding = same, activation = relu),
        Residual[
            Conv2D(64, kernel = 3, strides = 2, padding = same, activation = relu),
            Conv2D(64, kernel = 3, padding = same),
        ],
        GlobalAveragePooling2D,
        Dense(10, activation = softmax),
    ]
}
fn main() {}
