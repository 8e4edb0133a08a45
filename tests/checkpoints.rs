//! Checkpoints: round trips, damaged and foreign files, other architectures, and the
//! callbacks that write them (ModelCheckpoint, BackupAndRestore).

mod common;

use common::{blobs, compiled, mlp, tmpdir};
use kiln::layers::Dense;
use kiln::*;

#[test]
fn a_round_trip_gives_identical_predictions() {
    let (x, y) = blobs(60, 1);
    let mut a = compiled(1);
    a.fit(&x, &y).epochs(3).verbose(0).run().unwrap();
    let dir = tmpdir("roundtrip");
    let path = dir.join("w.safetensors");
    save_weights(a.model(), &path).unwrap();
    let mut b = mlp(99);
    assert_ne!(b.params().values(), a.model().params().values());
    load_weights(&mut b, &path).unwrap();
    assert_eq!(b.params().values(), a.model().params().values());
    assert_eq!(predict(&mut b, &x, 32).unwrap(), a.predict(&x).unwrap());
}

#[test]
fn the_file_is_standard_safetensors_with_keras_names_and_layouts() {
    let dir = tmpdir("layout");
    let path = dir.join("w.safetensors");
    let m = mlp(1);
    save_weights(&m, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // safetensors: 8-byte little-endian header length, then a JSON header.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["dense/kernel"]["shape"], serde_json::json!([4, 8]), "[in, out] as Keras");
    assert_eq!(header["dense_1/bias"]["dtype"], "F32");
    assert_eq!(header["__metadata__"]["model"], "mlp");
    assert_eq!(header["__metadata__"]["format"], "kiln");
    assert!(header["__metadata__"]["layers"].as_str().unwrap().contains("dense_1/kernel"));
}

#[test]
fn damaged_foreign_and_mismatched_files_are_errors_not_panics() {
    let dir = tmpdir("damaged");
    let good = dir.join("good.safetensors");
    let mut m = mlp(1);
    save_weights(&m, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let check = |name: &str, data: &[u8], want: &str| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        let e = load_weights(&mut mlp(1), &p).unwrap_err().to_string();
        assert!(e.contains(want), "{name}: {e}");
    };
    check(
        "truncated.safetensors",
        &bytes[..bytes.len() - 10],
        "truncated, corrupt, or of another format",
    );
    check("short.safetensors", &bytes[..5], "truncated, corrupt, or of another format");
    let mut corrupt = bytes.clone();
    corrupt[10] = b'#';
    check("header.safetensors", &corrupt, "truncated, corrupt, or of another format");
    check(
        "random.bin",
        b"PK\x03\x04 definitely not a checkpoint",
        "truncated, corrupt, or of another format",
    );
    // A valid safetensors file from another tool: no kiln metadata.
    let data = [0u8; 16];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &data).unwrap();
    let foreign = safetensors::serialize([("weight", view)], None).unwrap();
    check("foreign.safetensors", &foreign, "not a kiln checkpoint");
    // Another architecture: the error names the first tensor that differs.
    let wide = Sequential::builder("wide", &[4])
        .add(Dense::new(16))
        .add(Dense::new(3))
        .build(Seed(1))
        .unwrap();
    let p = dir.join("wide.safetensors");
    save_weights(&wide, &p).unwrap();
    let e = load_weights(&mut m, &p).unwrap_err().to_string();
    assert!(
        e.contains("tensor \"dense/kernel\" has shape [4, 16] in the file but [4, 8] in the model"),
        "{e}"
    );
    let deep = Sequential::builder("deep", &[4])
        .add(Dense::new(8))
        .add(Dense::new(3))
        .add(Dense::new(3))
        .build(Seed(1))
        .unwrap();
    let p = dir.join("deep.safetensors");
    save_weights(&deep, &p).unwrap();
    let e = load_weights(&mut m, &p).unwrap_err().to_string();
    assert!(
        e.contains("holds tensor \"dense_2/bias\"")
            || e.contains("holds tensor \"dense_2/kernel\""),
        "{e}"
    );
    let e = load_weights(&mut m, dir.join("missing.safetensors")).unwrap_err().to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
}

#[test]
fn model_checkpoint_saves_the_best_epochs_under_templated_names() {
    let (x, y) = blobs(90, 2);
    let dir = tmpdir("modelckpt");
    let template =
        dir.join("w-{epoch:02d}-{val_loss:.3f}.safetensors").to_string_lossy().into_owned();
    let mut m = compiled(1);
    let h = m
        .fit(&x, &y)
        .epochs(4)
        .validation_split(0.3)
        .verbose(0)
        .callbacks(ModelCheckpoint::to(template).save_best_only())
        .run()
        .unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    // One file per improving epoch, named by epoch (1-based) and val_loss.
    let mut best = f64::INFINITY;
    let mut want = Vec::new();
    for (e, &v) in h["val_loss"].iter().enumerate() {
        if v < best {
            best = v;
            want.push(format!("w-{:02}-{v:.3}.safetensors", e + 1));
        }
    }
    assert_eq!(files, want);
    // The last one holds the final (best) weights.
    let mut fresh = mlp(7);
    load_weights(&mut fresh, dir.join(want.last().unwrap())).unwrap();
    assert_eq!(fresh.params().values(), m.model().params().values());
}

#[test]
fn model_checkpoint_can_save_every_n_batches() {
    let (x, y) = blobs(64, 4);
    let dir = tmpdir("savefreq");
    let template = dir.join("b-{epoch:02d}-{loss:.3f}.safetensors").to_string_lossy().into_owned();
    let mut m = compiled(1);
    // 64 samples at batch 16 = 4 batches per epoch; every 2 batches over 2 epochs = 4 saves,
    // named by epoch and the running loss at that batch (two per epoch, distinct losses).
    m.fit(&x, &y)
        .epochs(2)
        .batch_size(16)
        .verbose(0)
        .callbacks(ModelCheckpoint::to(template).save_freq(SaveFreq::Batches(2)))
        .run()
        .unwrap();
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    assert_eq!(files.iter().filter(|f| f.starts_with("b-01-")).count(), 2, "{files:?}");
    let e = m
        .fit(&x, &y)
        .verbose(0)
        .callbacks(
            ModelCheckpoint::to(dir.join("z.safetensors").to_string_lossy().into_owned())
                .save_freq(SaveFreq::Batches(0)),
        )
        .run()
        .unwrap_err()
        .to_string();
    assert!(e.contains("saving every 0 batches is not a frequency"), "{e}");
}

/// A callback that fails at the end of one epoch, like a crash.
struct CrashAt(usize);
impl<T: tape::Scalar> Callback<T> for CrashAt {
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        _: &Logs,
        _: &mut CallbackContext<'_, T>,
    ) -> kiln::train::Result<()> {
        if epoch == self.0 {
            return Err(TrainError::InvalidArgument {
                name: "crash",
                message: "simulated crash".into(),
            });
        }
        Ok(())
    }
}

#[test]
fn backup_and_restore_resumes_to_the_same_weights() {
    let (x, y) = blobs(120, 3);
    let dir = tmpdir("backup");
    let fit = |m: &mut Compiled<Sequential, SparseCategoricalCrossentropy>,
               crash: Option<usize>| {
        let f = m
            .fit(&x, &y)
            .epochs(5)
            .batch_size(16)
            .seed(11)
            .verbose(0)
            .callbacks(BackupAndRestore::new(&dir));
        match crash {
            Some(e) => f.callbacks((CrashAt(e),)).run(),
            None => f.run(),
        }
    };
    let mut straight = compiled(1);
    // Without a crash the backup is deleted at the end.
    fit(&mut straight, None).unwrap();
    assert!(!dir.join("latest.safetensors").exists());

    let mut interrupted = compiled(1);
    let e = fit(&mut interrupted, Some(2)).unwrap_err().to_string();
    assert!(e.contains("simulated crash"));
    assert!(dir.join("latest.safetensors").exists());
    // A new process: fresh model, same configuration, same command.
    let mut resumed = compiled(1);
    let h = fit(&mut resumed, None).unwrap();
    assert_eq!(h.epoch, vec![3, 4], "resumed after the last completed epoch");
    assert_eq!(resumed.optimizer().iterations(), straight.optimizer().iterations());
    assert_eq!(resumed.model().params().values(), straight.model().params().values());
}

/// Inputs so large that one step overflows the weights (3e38 ≈ f32::MAX): a run on
/// them diverges in its first epoch.
fn exploding(x: &Inputs<Dyn>) -> Inputs<Dyn> {
    Inputs::from_vec_shape(&[4], x.data().iter().map(|v| v * 1e38).collect()).unwrap()
}

/// A diverged run never destroys a good checkpoint: ModelCheckpoint and
/// BackupAndRestore write nothing when the parameters are non-finite, keep the last
/// good file byte for byte, and fit says "training diverged at epoch N" (not
/// "corrupt"); a rerun resumes from the intact backup.
#[test]
fn a_diverged_run_keeps_the_last_good_checkpoint() {
    let (x, y) = blobs(60, 4);
    let dir = tmpdir("diverged");
    let ckpt = dir.join("model.safetensors");
    let mut m = compiled(2);
    m.fit(&x, &y)
        .epochs(1)
        .verbose(0)
        .callbacks((
            ModelCheckpoint::to(ckpt.to_str().unwrap()),
            BackupAndRestore::new(&dir).keep_checkpoint(),
        ))
        .run()
        .unwrap();
    let good = std::fs::read(&ckpt).unwrap();
    let backup = dir.join("latest.safetensors");
    let good_backup = std::fs::read(&backup).unwrap();

    let bad = exploding(&x);
    // TerminateOnNaN stops within the epoch; the epoch-end save sees the NaN loss.
    for terminate in [true, false] {
        let cb = ModelCheckpoint::to(ckpt.to_str().unwrap());
        let f = m.fit(&bad, &y).epochs(3).verbose(0);
        let r =
            if terminate { f.callbacks((TerminateOnNaN, cb)).run() } else { f.callbacks(cb).run() };
        let e = r.unwrap_err().to_string();
        assert!(e.starts_with("training diverged at epoch 1: the loss is NaN;"), "{e}");
        assert!(e.contains("keeps the checkpoint it held"), "{e}");
        assert_eq!(std::fs::read(&ckpt).unwrap(), good, "the good checkpoint is untouched");
    }
    let e = m
        .fit(&bad, &y)
        .verbose(0)
        .callbacks(ModelCheckpoint::to(dir.join("new.safetensors").to_str().unwrap()))
        .run()
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing was saved (no checkpoint had been written yet)"), "{e}");
    assert!(!dir.join("new.safetensors").exists());
    // Resumed from the backup (epoch 1 done), epoch 2 diverges: the backup stays.
    let mut r = compiled(2);
    let e = r
        .fit(&bad, &y)
        .epochs(3)
        .verbose(0)
        .callbacks(BackupAndRestore::new(&dir))
        .run()
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("training diverged at epoch 2:"), "{e}");
    assert!(e.contains("still holds the last good epoch"), "{e}");
    assert_eq!(std::fs::read(&backup).unwrap(), good_backup, "the backup is untouched");
    // Both files still load (finite).
    let mut fresh = mlp(9);
    load_weights(&mut fresh, &ckpt).unwrap();
    let mut again = compiled(2);
    again.fit(&x, &y).epochs(2).verbose(0).callbacks(BackupAndRestore::new(&dir)).run().unwrap();

    // A direct save of NaN weights writes nothing.
    let mut nan = mlp(3);
    let mut v = nan.params().values().to_vec();
    v[5] = f32::NAN;
    nan.params_mut().set_values(&v).unwrap();
    let e = save_weights(&nan, &ckpt).unwrap_err().to_string();
    assert!(e.contains("holds NaN (training diverged); the file was not written"), "{e}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), good);
}

/// Full checkpoints with NaN optimizer state or an unparsable learning rate are
/// refused by name (a resumed epoch would otherwise report a finite loss over NaN
/// weights, or silently keep another learning rate).
#[test]
fn load_full_validates_optimizer_state_and_metadata() {
    let (x, y) = blobs(40, 5);
    let dir = tmpdir("fullcheck");
    let path = dir.join("latest.safetensors");
    let mut m = compiled(1);
    let backup = || BackupAndRestore::new(&dir).keep_checkpoint();
    m.fit(&x, &y).epochs(1).verbose(0).callbacks(backup()).run().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let rewrite = |edit: &dyn Fn(&mut serde_json::Value, &mut Vec<u8>)| {
        let (mut h, mut data) = (header.clone(), bytes[8 + header_len..].to_vec());
        edit(&mut h, &mut data);
        let mut text = serde_json::to_vec(&h).unwrap();
        while text.len() % 8 != 0 {
            text.push(b' ');
        }
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&text);
        out.extend_from_slice(&data);
        std::fs::write(&path, out).unwrap();
    };
    let resume = |m: &mut Compiled<Sequential, SparseCategoricalCrossentropy>| {
        m.fit(&x, &y).epochs(2).verbose(0).callbacks(backup()).run().unwrap_err().to_string()
    };
    // NaN in the first moment estimate.
    rewrite(&|h, data| {
        let off = h["optimizer/m"]["data_offsets"][0].as_u64().unwrap() as usize;
        data[off..off + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let e = resume(&mut compiled(1));
    assert!(e.contains("optimizer state m holds NaN"), "{e}");
    rewrite(&|h, _| h["__metadata__"]["learning_rate"] = "fast".into());
    let e = resume(&mut compiled(1));
    assert!(e.contains("learning_rate = \"fast\" is not a finite number"), "{e}");
}

/// Same state, same bytes: the header's metadata is written in sorted order.
#[test]
fn the_same_state_writes_the_same_bytes() {
    let dir = tmpdir("samebytes");
    let m = compiled(1);
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    for _ in 0..5 {
        save_weights(m.model(), &a).unwrap();
        save_weights(&mlp(1), &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }
}

/// ModelCheckpoint settings that would only fail (or silently never save) after
/// training ran are errors before the first step, each naming the fix.
#[test]
fn model_checkpoint_problems_are_found_before_training() {
    let (x, y) = blobs(40, 6);
    let dir = tmpdir("ckplan");
    let mut m = compiled(1);
    let before = m.model().params().values().to_vec();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let run = |m: &mut Compiled<Sequential, SparseCategoricalCrossentropy>, cb: ModelCheckpoint| {
        m.fit(&x, &y).validation_split(0.25).verbose(0).callbacks(cb).run().unwrap_err().to_string()
    };
    let e = run(&mut m, ModelCheckpoint::to(p("w-{epoch:02d.safetensors")));
    assert!(e.contains("has an unclosed '{'"), "{e}");
    let e = run(
        &mut m,
        ModelCheckpoint::to(p("w-{val_loss:.3f}.safetensors")).save_freq(SaveFreq::Batches(2)),
    );
    assert!(
        e.contains(
            "{val_loss} is only known at the end of an epoch, but the file is saved every 2 batches"
        ),
        "{e}"
    );
    let e = run(
        &mut m,
        ModelCheckpoint::to(p("best.safetensors")).save_best_only().save_freq(SaveFreq::Batches(2)),
    );
    assert!(e.contains("would never write"), "{e}");
    std::fs::write(dir.join("plain-file"), b"x").unwrap();
    let e = run(&mut m, ModelCheckpoint::to(p("plain-file/sub/w.safetensors")));
    assert!(e.contains("is a file, not a directory; choose another path"), "{e}");
    let e = run(&mut m, ModelCheckpoint::to(dir.to_str().unwrap()));
    assert!(e.contains("is a directory; give a file name inside it"), "{e}");
    let e = run(&mut m, ModelCheckpoint::to(p("w.safetensors")).save_freq(SaveFreq::Batches(0)));
    assert!(e.contains("not a frequency"), "{e}");
    assert_eq!(m.model().params().values(), &before[..], "nothing trained");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("plain-file")], "no probe or checkpoint left");
}

/// Keras's save_weights / load_weights / save / load as methods of the compiled
/// model: a full save goes on where it stopped, bit for bit.
#[test]
fn compiled_models_save_and_load_as_keras() {
    let (x, y) = blobs(60, 7);
    let dir = tmpdir("methods");
    let mut a = compiled(1);
    a.fit(&x, &y).epochs(2).verbose(0).run().unwrap();
    assert_eq!(a.epochs_done(), 2);
    a.save_weights(dir.join("w.safetensors")).unwrap();
    a.save(dir.join("full.safetensors")).unwrap();
    let mut b = compiled(9);
    b.load_weights(dir.join("w.safetensors")).unwrap();
    assert_eq!(b.predict(&x).unwrap(), a.predict(&x).unwrap());
    // predict needs no compile (as in Keras).
    let mut plain = mlp(9);
    load_weights(&mut plain, dir.join("w.safetensors")).unwrap();
    assert_eq!(plain.predict(&x).unwrap(), a.predict(&x).unwrap());
    // Resume from the full save and train two more epochs, as the straight run does.
    let mut c = compiled(9);
    let e = c.load(dir.join("full.safetensors")).unwrap();
    assert_eq!(e, 2);
    c.fit(&x, &y).epochs(4).initial_epoch(e).verbose(0).run().unwrap();
    a.fit(&x, &y).epochs(4).initial_epoch(2).verbose(0).run().unwrap();
    assert_eq!(c.model().params().values(), a.model().params().values());
    // Errors from main print as sentences.
    let err: kiln::Error =
        load_weights(&mut mlp(1), dir.join("missing.safetensors")).unwrap_err().into();
    assert_eq!(format!("{err:?}"), err.to_string());
    assert!(format!("{err:#?}").starts_with("Train("), "{err:#?}");
}
