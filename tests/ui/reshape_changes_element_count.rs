kiln::model! {
    struct Net: [784] => [
        Reshape([28, 28, 2]),
        Flatten,
        Dense(10),
    ]
}
fn main() {}
