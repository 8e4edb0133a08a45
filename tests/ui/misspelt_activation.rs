kiln::model! {
    struct Net: [784] => [
        Dense(128, activation = rleu),
        Dense(10),
    ]
}
fn main() {}
