use kiln::*;

model! {
    struct Net: [4] => [
        Dense(3, activation = softmax),
    ]
}

fn main() {
    let x = Inputs::<S1<4>>::from_vec(vec![0.0; 8]).unwrap();
    let y = ClassLabels::new(vec![0, 1]);
    let mut net = Net::new(Seed(1));
    net.fit(&x, &y);
}
