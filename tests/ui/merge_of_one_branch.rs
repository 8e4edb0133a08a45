// A merge needs at least two branches.
kiln::model! {
    struct Net: [6] => [
        Add[[Dense(6)]],
        Dense(3, activation = softmax),
    ]
}
fn main() {}
