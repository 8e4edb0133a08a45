// Concatenate along the channels needs equal image sizes.
kiln::model! {
    struct Net: [8, 8, 1] => [
        Concatenate(axis = -1)[
            [Conv2D(3, kernel = 1)],
            [Conv2D(2, kernel = 3)],
        ],
        Flatten,
        Dense(3, activation = softmax),
    ]
}
fn main() {}
