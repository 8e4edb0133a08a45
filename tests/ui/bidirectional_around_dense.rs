kiln::model! {
    struct Net: [28, 28] => [
        Bidirectional(Dense(64)),
    ]
}
fn main() {}
