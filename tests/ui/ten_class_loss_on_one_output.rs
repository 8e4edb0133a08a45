use kiln::prelude::*;

model! {
    struct Net: [4] => [
        Dense(1, activation = sigmoid),
    ]
}

fn main() {
    let x = Inputs::<S1<4>>::from_vec(vec![0.0; 4]).unwrap();
    let y = Targets::<S1<10>>::from_vec(vec![0.0; 10]).unwrap();
    let mut m = Net::new(Seed(1)).compile(Adam::default(), CategoricalCrossentropy::default(), [Accuracy]).unwrap();
    let _ = m.evaluate(&x, &y);
}
