kiln::model! {
    struct Net: [28, 28] => [
        LSTM(64),
        LSTM(32),
        Dense(10, activation = softmax),
    ]
}
fn main() {}
