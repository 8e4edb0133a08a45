kiln::model! {
    struct Net: [784] => [
        LSTM(64),
        Dense(10, activation = softmax),
    ]
}
fn main() {}
