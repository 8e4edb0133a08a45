kiln::model! {
    struct Net: [784] => [
        Dens(128),
        Dense(10),
    ]
}
fn main() {}
