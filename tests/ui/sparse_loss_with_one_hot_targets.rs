use kiln::prelude::*;

model! {
    struct Net: [4] => [
        Dense(3, activation = softmax),
    ]
}

fn main() {
    let x = Inputs::<S1<4>>::from_vec(vec![0.0; 8]).unwrap();
    let y = Targets::<S1<3>>::from_vec(vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
    let mut m = Net::new(Seed(1)).compile(Adam::default(), SparseCategoricalCrossentropy::default(), [Accuracy]).unwrap();
    let _ = m.fit(&x, &y).run();
}
