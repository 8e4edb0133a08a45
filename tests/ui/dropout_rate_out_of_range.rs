kiln::model! {
    struct Net: [16] => [
        Dense(8, activation = relu),
        Dropout(1.5),
        Dense(2),
    ]
}
fn main() {}
