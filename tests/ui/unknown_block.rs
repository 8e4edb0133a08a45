// A misspelt merge.
kiln::model! {
    struct Net: [6] => [
        Concatnate[[Dense(3)], [Dense(3)]],
        Dense(3, activation = softmax),
    ]
}
fn main() {}
