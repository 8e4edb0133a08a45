kiln::model! {
    struct Net: [8, 8, 1] => [
        Conv2D(4, kernel = 3, strides = 0),
        Flatten,
        Dense(2),
    ]
}
fn main() {}
