// A layer inside a branch is checked like any other: Dense after a convolution needs
// Flatten.
kiln::model! {
    struct Net: [8, 8, 1] => [
        Concatenate[
            [Conv2D(3, kernel = 3), Flatten],
            [Conv2D(3, kernel = 3), Dense(4)],
        ],
        Dense(3, activation = softmax),
    ]
}
fn main() {}
