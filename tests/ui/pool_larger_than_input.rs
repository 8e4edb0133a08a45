kiln::model! {
    struct Net: [2, 2, 3] => [
        MaxPool2D(3),
        Flatten,
        Dense(2),
    ]
}
fn main() {}
