kiln::model! {
    struct Net: [32, 4] => [
        Conv1D(8, 3, padding = casual),
    ]
}
fn main() {}
