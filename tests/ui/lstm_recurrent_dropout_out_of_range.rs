kiln::model! {
    struct Net: [28, 28] => [
        LSTM(64, recurrent_dropout = 1.0),
        Dense(10, activation = softmax),
    ]
}
fn main() {}
