// Add needs every branch to end in one shape.
kiln::model! {
    struct Net: [16] => [
        Add[[Dense(8, activation = relu)], [Dense(4, activation = relu)]],
        Dense(3, activation = softmax),
    ]
}
fn main() {}
