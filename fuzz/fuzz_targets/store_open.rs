//! Replaces one file of a small valid store with the fuzzer's bytes, then opens the store and
//! reads everything in it. Any outcome but a panic (or an abort) is fine: errors are expected.
//!
//! The first input byte picks the file; the rest is its new content. With
//! `EPK_FUZZ_SEEDS=DIR` set, the pristine files are written to DIR as seeds.
#![no_main]

use epk_store::{RunAttributes, Samples, StepRecord, StoreOptions, StoreReader, StoreWriter};
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FILES: [&str; 12] = [
    "zarr.json",
    "weights/zarr.json",
    "lr/zarr.json",
    "batch_size/zarr.json",
    "batch_index/zarr.json",
    "dloss/zarr.json",
    "train/inputs/zarr.json",
    "weights/c/1/0",
    "dloss/c/0/0/0",
    "batch_index/c/0/0",
    "batch_size/c/0",
    "train/inputs/c/0/0",
];

fn pristine() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let dir = PathBuf::from(base).join(format!("epk-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pristine.zarr");
        let mut attrs = RunAttributes::example(3, 2, 2);
        attrs.input_shape = vec![2];
        let train = Samples::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![2], vec![0, 1, 1]).unwrap();
        // Two steps per shard: small shard files, and the weights span two of them.
        let options = StoreOptions {
            steps_per_shard: Some(2),
            ..StoreOptions::default()
        };
        let mut w =
            StoreWriter::create_with(&path, attrs, &train, Some(&train), &[0.0, 0.5, -0.5], options)
                .unwrap();
        for s in 0..2 {
            w.append_step(&StepRecord {
                lr: 0.1,
                indices: vec![s, 2],
                dloss: vec![0.25, -0.25, -0.5, 0.5],
                weights_after: vec![s as f64, 2.0, 3.0],
            })
            .unwrap();
        }
        w.finish().unwrap();
        if let Ok(seeds) = std::env::var("EPK_FUZZ_SEEDS") {
            std::fs::create_dir_all(&seeds).unwrap();
            for (i, f) in FILES.iter().enumerate() {
                let mut bytes = vec![i as u8];
                bytes.extend(std::fs::read(path.join(f)).unwrap());
                std::fs::write(Path::new(&seeds).join(format!("seed-{i:02}")), bytes).unwrap();
            }
        }
        path
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, content)) = data.split_first() else {
        return;
    };
    let pristine = pristine();
    let work = pristine.with_file_name("work.zarr");
    let _ = std::fs::remove_dir_all(&work);
    copy_dir(pristine, &work);
    std::fs::write(work.join(FILES[which as usize % FILES.len()]), content).unwrap();
    let Ok(reader) = StoreReader::open(&work) else {
        return;
    };
    for s in 0..=reader.steps() {
        let _ = reader.weights(s);
    }
    for s in 0..reader.steps() {
        let _ = reader.lr(s);
        let _ = reader.batch(s);
    }
    let _ = reader.train();
    let _ = reader.eval();
});
