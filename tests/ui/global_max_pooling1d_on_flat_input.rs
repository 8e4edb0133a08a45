kiln::model! {
    struct Net: [784] => [
        Dense(64, activation = relu),
        GlobalMaxPooling1D,
    ]
}
fn main() {}
