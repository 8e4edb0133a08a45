kiln::model! {
    struct Net: [4] => [
        Dense(0),
    ]
}
fn main() {}
