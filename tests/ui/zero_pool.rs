kiln::model! {
    struct Net: [8, 8, 1] => [
        AveragePooling2D(0),
        Flatten,
        Dense(2),
    ]
}
fn main() {}
