use kiln::prelude::*;

model! {
    struct Net: [4] => [
        Dense(2),
    ]
}

fn main() {
    let x = Inputs::<S1<5>>::from_vec(vec![0.0; 5]).unwrap();
    let mut m = Net::new(Seed(1)).compile(SGD::default(), MeanSquaredError::default(), ()).unwrap();
    let _ = m.predict(&x);
}
