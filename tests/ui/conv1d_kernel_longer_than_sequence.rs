kiln::model! {
    struct Net: [10, 2] => [
        Conv1D(8, 4, dilation_rate = 4),
    ]
}
fn main() {}
