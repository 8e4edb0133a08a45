kiln::model! {
    struct Net: [28, 28] => [
        GRU(0),
    ]
}
fn main() {}
