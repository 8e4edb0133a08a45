kiln::model! {
    #[dtype(f16)]
    struct Net: [4] => [
        Dense(2),
    ]
}
fn main() {}
