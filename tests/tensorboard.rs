//! The TensorBoard callback's event files: read back with one reader that verifies
//! every record's CRCs, against event files TensorFlow itself wrote (and what
//! TensorBoard's EventAccumulator read from them, `tests/fixtures/tensorboard`), and
//! against the History of the run that wrote them.

use kiln::prelude::*;
use kiln::train::callbacks::tensorboard::{
    histogram_buckets, parse_scalars, read_histograms, read_scalars,
};
use std::collections::BTreeMap;
use std::path::Path;

/// tag → [(step, value)] from every event file in `dir`.
fn scalars_in(dir: &Path) -> BTreeMap<String, Vec<(i64, f32)>> {
    let mut out: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        assert!(path.file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."));
        for s in read_scalars(&path).unwrap() {
            out.entry(s.tag).or_default().push((s.step, s.value));
        }
    }
    out
}

#[test]
fn reads_the_event_files_tensorflow_wrote_as_tensorboard_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tensorboard");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).unwrap())
            .unwrap();
    for run in ["train", "validation"] {
        let got = scalars_in(&root.join(run));
        let want = expected["scalars"][run].as_object().unwrap();
        assert_eq!(got.len(), want.len(), "{run}: tags {:?}", got.keys());
        for (tag, points) in want {
            let want: Vec<(i64, f32)> = points
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap() as f32))
                .collect();
            assert_eq!(got[tag], want, "{run}/{tag}");
        }
    }
    // A flipped byte anywhere fails a CRC, never decodes silently.
    let file = std::fs::read_dir(root.join("train")).unwrap().next().unwrap().unwrap().path();
    let bytes = std::fs::read(file).unwrap();
    for at in [3, 10, 40, bytes.len() - 2] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        let e = parse_scalars(&bad).unwrap_err();
        assert!(e.contains("CRC") || e.contains("cut short"), "byte {at}: {e}");
    }
}

model! {
    struct Net: [4] => [
        Dense(8, activation = relu),
        Dense(3, activation = softmax),
    ]
}

/// 64 random samples of 4 features in 3 classes, and the compiled `Net`.
fn data_and_model() -> (Inputs<S1<4>>, ClassLabels, Compiled<Net, SparseCategoricalCrossentropy>) {
    let x =
        Inputs::<S1<4>>::from_vec(Tensor::<f32>::random_uniform(&[64 * 4], 0.0, 1.0, 1).into_vec())
            .unwrap();
    let y = ClassLabels::new((0..64).map(|i| i % 3).collect());
    let m = Net::new(Seed(2))
        .compile(Adam::new(1e-2), SparseCategoricalCrossentropy::default(), [Accuracy])
        .unwrap();
    (x, y, m)
}

#[test]
fn the_callback_writes_what_keras_writes_and_tensorboard_reads() {
    let dir = std::env::temp_dir().join(format!("kiln-tb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (x, y, mut m) = data_and_model();
    let h = m
        .fit(&x, &y)
        .epochs(3)
        .batch_size(16)
        .validation_split(0.25)
        .verbose(0)
        .callbacks((
            LearningRateScheduler::new(|epoch, lr| if epoch == 2 { lr / 2.0 } else { lr }),
            TensorBoard::new(&dir).update_freq(kiln::UpdateFreq::Batches(2)),
        ))
        .run()
        .unwrap();
    let train = scalars_in(&dir.join("train"));
    let validation = scalars_in(&dir.join("validation"));
    let f =
        |v: &[f64]| v.iter().enumerate().map(|(i, &x)| (i as i64, x as f32)).collect::<Vec<_>>();
    assert_eq!(train["epoch_loss"], f(&h["loss"]));
    assert_eq!(train["epoch_accuracy"], f(&h["accuracy"]));
    assert_eq!(train["epoch_learning_rate"], f(&[1e-2, 1e-2, 5e-3]));
    assert_eq!(validation["epoch_loss"], f(&h["val_loss"]));
    assert_eq!(validation["epoch_accuracy"], f(&h["val_accuracy"]));
    assert!(!validation.contains_key("epoch_learning_rate"));
    // 3 batches of 16 per epoch (48 training samples): every second of the 9 batches.
    let steps: Vec<i64> = train["batch_loss"].iter().map(|p| p.0).collect();
    assert_eq!(steps, vec![1, 3, 5, 7]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn histograms_bucket_as_tf_summary_histogram() {
    // Width (3 - 0) / 3 = 1; the greatest value falls in the last bucket, closed.
    assert_eq!(
        histogram_buckets(&[0.0, 1.0, 2.0, 3.0], 3),
        vec![[0.0, 1.0, 1.0], [1.0, 2.0, 1.0], [2.0, 3.0, 2.0]]
    );
    // One value repeated: zero-width buckets at it, the count in the last.
    assert_eq!(
        histogram_buckets(&[5.0, 5.0], 3),
        vec![[5.0, 5.0, 0.0], [5.0, 5.0, 0.0], [5.0, 5.0, 2.0]]
    );
    assert!(histogram_buckets(&[], 30).is_empty());
    // Non-finite values are left out rather than spoiling the edges.
    assert_eq!(histogram_buckets(&[f64::NAN, 1.0, 2.0], 1), vec![[1.0, 2.0, 2.0]]);
}

#[test]
fn histogram_freq_writes_every_weight_every_nth_epoch() {
    let dir = std::env::temp_dir().join(format!("kiln-tb-hist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (x, y, mut m) = data_and_model();
    m.fit(&x, &y)
        .epochs(3)
        .verbose(0)
        .callbacks(TensorBoard::new(&dir).histogram_freq(2))
        .run()
        .unwrap();
    let file = std::fs::read_dir(dir.join("train")).unwrap().next().unwrap().unwrap().path();
    let hists = read_histograms(&file).unwrap();
    let params = m.model().params();
    let names: Vec<String> =
        params.entries().iter().map(|e| format!("{}/histogram", e.name)).collect();
    assert_eq!(
        names,
        ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]
            .map(|n| format!("{n}/histogram"))
    );
    // Epochs 0 and 2 (Keras: epoch % histogram_freq == 0), every weight each time.
    let tagged: Vec<(i64, &str)> = hists.iter().map(|h| (h.step, h.tag.as_str())).collect();
    let expect: Vec<(i64, &str)> =
        [0, 2].iter().flat_map(|&s| names.iter().map(move |n| (s, n.as_str()))).collect();
    assert_eq!(tagged, expect);
    // The last epoch's histograms are of the weights fit ends with.
    for (h, e) in hists[names.len()..].iter().zip(params.entries()) {
        let w: Vec<f64> = params.values()[e.range()].iter().map(|&v| f64::from(v)).collect();
        assert_eq!(h.buckets, histogram_buckets(&w, 30), "{}", h.tag);
        assert_eq!(h.buckets.iter().map(|b| b[2]).sum::<f64>(), w.len() as f64);
    }
    // The scalars are still there, beside the histograms.
    assert_eq!(read_scalars(&file).unwrap().iter().filter(|s| s.tag == "epoch_loss").count(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}
