use kiln::prelude::*;

model! {
    struct ConvNet: [28, 28, 1] => [
        Conv2D(8, kernel = 3, activation = relu),
        Flatten,
        Dense(10, activation = softmax),
    ]
}

fn main() {
    let x = Inputs::<S1<784>>::from_vec(vec![0.0; 784]).unwrap();
    let y = ClassLabels::new(vec![3]);
    let mut m = ConvNet::new(Seed(1)).compile(Adam::default(), SparseCategoricalCrossentropy::default(), [Accuracy]).unwrap();
    let _ = m.fit(&x, &y).run();
}
