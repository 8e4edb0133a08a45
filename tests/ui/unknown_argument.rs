kiln::model! {
    struct Net: [784] => [
        Dense(128, activaton = relu),
        Dense(10),
    ]
}
fn main() {}
