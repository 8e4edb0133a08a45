// Two poolings shrink 12x12 to 3x3; a 5x5 valid kernel no longer fits.
kiln::model! {
    struct Net: [12, 12, 1] => [
        MaxPool2D(2),
        MaxPool2D(2),
        Conv2D(8, kernel = 5),
        Flatten,
        Dense(2),
    ]
}
fn main() {}
