// Subtract takes two branches: the first minus the second.
kiln::model! {
    struct Net: [6] => [
        Subtract[[Dense(3)], [Dense(3)], [Dense(3)]],
        Dense(3, activation = softmax),
    ]
}
fn main() {}
