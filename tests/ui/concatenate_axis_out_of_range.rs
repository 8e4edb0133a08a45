// Samples of rank 3 have axes 1 to 3 (or -3 to -1).
kiln::model! {
    struct Net: [8, 8, 1] => [
        Concatenate(axis = 4)[[Conv2D(3, kernel = 1)], [Conv2D(2, kernel = 1)]],
        Flatten,
        Dense(3, activation = softmax),
    ]
}
fn main() {}
