// The shortcut keeps the image size but the body halves it.
kiln::model! {
    struct Net: [28, 28, 32] => [
        Residual[
            Conv2D(64, kernel = 3, strides = 2, padding = same),
        ] + shortcut[ Conv2D(64, kernel = 1) ],
        GlobalAveragePooling2D,
        Dense(10, activation = softmax),
    ]
}
fn main() {}
