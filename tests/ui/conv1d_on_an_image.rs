kiln::model! {
    struct Net: [28, 28, 1] => [
        Conv1D(16, 3, activation = relu),
    ]
}
fn main() {}
