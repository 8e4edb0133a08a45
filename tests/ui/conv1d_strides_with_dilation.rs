kiln::model! {
    struct Net: [32, 4] => [
        Conv1D(8, 3, strides = 2, dilation_rate = 2),
    ]
}
fn main() {}
