use epk_store::{
    RunAttributes, Samples, StepRecord, StoreError, StoreOptions, StoreReader, StoreWriter,
    TrainDType, WeightRow,
};

fn data() -> (Samples, Samples) {
    let train = Samples::new(
        (0..12).map(|v| v as f64 * 0.5).collect(),
        vec![2, 2],
        vec![0, 1, 1],
    )
    .unwrap();
    let eval = Samples::new(vec![9.0, 8.0, 7.0, 6.0], vec![2, 2], vec![1]).unwrap();
    (train, eval)
}

fn steps() -> Vec<StepRecord> {
    vec![
        StepRecord {
            lr: 0.1,
            indices: vec![2, 0],
            dloss: vec![0.25, -0.25, -0.5, 0.5],
            weights_after: vec![1.0, 2.0, 3.0],
        },
        StepRecord {
            lr: 0.05,
            indices: vec![1],
            dloss: vec![1.0 / 3.0, -1.0 / 3.0],
            weights_after: vec![1.5, 2.5, -3.5],
        },
        // Chunks equal to the fill values are real data and must be stored.
        StepRecord {
            lr: 0.0,
            indices: vec![0, 1],
            dloss: vec![f64::NAN; 4],
            weights_after: vec![0.0; 3],
        },
    ]
}

fn write(path: &std::path::Path, dtype: TrainDType) {
    write_sharded(path, dtype, None);
}

/// A new store of 3 weights, 2 outputs and [2, 2] inputs holding [`data`].
fn create(path: &std::path::Path, dtype: TrainDType, options: StoreOptions) -> StoreWriter {
    let mut attrs = RunAttributes::example(3, 2, 2);
    attrs.input_shape = vec![2, 2];
    attrs.dtype = dtype;
    let (train, eval) = data();
    StoreWriter::create_with(path, attrs, &train, Some(&eval), &[0.0, 0.5, -0.5], options).unwrap()
}

fn write_sharded(path: &std::path::Path, dtype: TrainDType, steps_per_shard: Option<u64>) {
    let options = StoreOptions {
        steps_per_shard,
        ..StoreOptions::default()
    };
    let mut w = create(path, dtype, options);
    for s in steps() {
        w.append_step(&s).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn everything_written_reads_back() {
    let cases = [TrainDType::F64, TrainDType::F32]
        .into_iter()
        .flat_map(|d| [(d, None), (d, Some(1)), (d, Some(2))]);
    for (dtype, steps_per_shard) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.zarr");
        write_sharded(&path, dtype, steps_per_shard);
        let r = StoreReader::open(&path).unwrap();
        assert_eq!(r.steps(), 3);
        assert!(r.attrs().finished);
        assert_eq!(r.attrs().dtype, dtype);
        assert_eq!(r.weights(0).unwrap(), vec![0.0, 0.5, -0.5]);
        for (s, rec) in steps().iter().enumerate() {
            assert_eq!(r.lr(s).unwrap(), rec.lr);
            assert_eq!(r.weights(s + 1).unwrap(), rec.weights_after);
            let b = r.batch(s).unwrap();
            assert_eq!(b.indices, rec.indices);
            let want: Vec<f64> = match dtype {
                TrainDType::F64 => rec.dloss.clone(),
                TrainDType::F32 => rec.dloss.iter().map(|v| *v as f32 as f64).collect(),
            };
            let same = b
                .dloss
                .iter()
                .zip(&want)
                .all(|(a, w)| a.to_bits() == w.to_bits());
            assert!(same, "{:?} vs {want:?}", b.dloss);
        }
        let (train, eval) = data();
        assert_eq!(r.train().unwrap(), train);
        assert_eq!(r.eval().unwrap(), eval);
        assert!(r.weights(4).is_err(), "past the committed steps");
    }
}

/// The little-endian bytes of `values` in `dtype`, split after the first value (two tensors).
fn pieces(values: &[f64], dtype: TrainDType) -> (Vec<u8>, Vec<u8>) {
    let bytes: Vec<u8> = match dtype {
        TrainDType::F64 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        TrainDType::F32 => values
            .iter()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect(),
    };
    let width = bytes.len() / values.len();
    (bytes[..width].to_vec(), bytes[width..].to_vec())
}

#[test]
fn weights_given_as_byte_pieces_read_back_as_values() {
    for dtype in [TrainDType::F64, TrainDType::F32] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.zarr");
        let mut w = create(&path, dtype, StoreOptions::default());
        for s in steps() {
            let (a, b) = pieces(&s.weights_after, dtype);
            let record = StepRecord {
                weights_after: Vec::new(),
                ..s
            };
            w.write_step_row(&record, WeightRow::Bytes(&[&a, &b]))
                .unwrap();
        }
        // A row whose bytes do not add up to the layout's is refused before anything is written.
        let short = [0u8; 5];
        let e = w
            .write_step_row(&steps()[0], WeightRow::Bytes(&[&short]))
            .unwrap_err();
        assert!(e.to_string().contains("5 bytes of weights"), "{e}");
        w.finish().unwrap();
        let r = StoreReader::open(&path).unwrap();
        assert_eq!(r.steps(), 3, "{dtype:?}");
        for (s, rec) in steps().iter().enumerate() {
            assert_eq!(r.weights(s + 1).unwrap(), rec.weights_after, "{dtype:?}");
            assert_eq!(r.batch(s).unwrap().indices, rec.indices);
        }
    }
}

#[test]
fn per_step_arrays_match_the_committed_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    write(&path, TrainDType::F64);
    let meta = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path.join(name).join("zarr.json")).unwrap()).unwrap()
    };
    assert_eq!(meta("weights")["shape"], serde_json::json!([4, 3]));
    assert_eq!(meta("dloss")["shape"], serde_json::json!([3, 2, 2]));
    assert_eq!(
        meta("dloss")["dimension_names"],
        serde_json::json!(["step", "slot", "output"])
    );
    assert_eq!(
        meta("train/inputs")["dimension_names"],
        serde_json::json!(["sample", "feature_0", "feature_1"])
    );
    assert!(!std::fs::read_dir(&path).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".epk-tmp")
    }));
}

#[test]
fn refuses_to_overwrite_and_rejects_foreign_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    write(&path, TrainDType::F64);
    let (train, _) = data();
    let again = StoreWriter::create(
        &path,
        RunAttributes::example(3, 2, 2),
        &train,
        None,
        &[0.0; 3],
    );
    assert!(matches!(again, Err(StoreError::Exists { .. })));

    let foreign = dir.path().join("foreign.zarr");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(
        foreign.join("zarr.json"),
        r#"{"zarr_format":3,"node_type":"group","attributes":{}}"#,
    )
    .unwrap();
    let err = StoreReader::open(&foreign).err().unwrap().to_string();
    assert!(err.contains("not an epk store"), "{err}");
    assert!(!StoreReader::is_epk_store(&foreign));
    assert!(StoreReader::is_epk_store(&path));
    // An epk store of another format version is still an epk store (a tool may replace it).
    let old = dir.path().join("old.zarr");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(
        old.join("zarr.json"),
        r#"{"zarr_format":3,"node_type":"group","attributes":{"epk":{"format":"epk","version":1}}}"#,
    )
    .unwrap();
    assert!(StoreReader::open(&old).is_err());
    assert!(StoreReader::is_epk_store(&old));

    let missing = StoreReader::open(&dir.path().join("nothing.zarr"))
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("no such store"), "{missing}");
}

#[test]
fn a_missing_chunk_is_an_error_not_a_fill_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    write(&path, TrainDType::F64);
    // Row 1's index entry says "absent"; the dloss shard is gone altogether.
    let shard = path.join("weights/c/0/0");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[16..32].fill(0xff);
    std::fs::write(&shard, bytes).unwrap();
    std::fs::remove_file(path.join("dloss/c/0/0/0")).unwrap();
    let r = StoreReader::open(&path).unwrap();
    let err = r.weights(1).err().unwrap().to_string();
    assert!(
        err.contains("entry 1 is missing") && err.contains("weights/c/0/0"),
        "{err}"
    );
    assert_eq!(r.weights(2).unwrap(), steps()[1].weights_after);
    let err = r.batch(0).err().unwrap().to_string();
    assert!(
        err.contains("entry 0 is missing") && err.contains("dloss/c/0/0/0"),
        "{err}"
    );
}

/// The shards are plain Zarr: zarrs' own whole-array read (its sharding decoder, not the
/// reader's per-entry path) gives the same values.
#[test]
fn shards_read_back_through_the_generic_zarr_path() {
    use zarrs::array::{Array, ArraySubset};
    for steps_per_shard in [None, Some(2)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.zarr");
        write_sharded(&path, TrainDType::F64, steps_per_shard);
        let store = std::sync::Arc::new(zarrs::filesystem::FilesystemStore::new(&path).unwrap());
        let weights = Array::open(store.clone(), "/weights").unwrap();
        let all: Vec<f64> = weights
            .retrieve_array_subset(&ArraySubset::new_with_shape(vec![4, 3]))
            .unwrap();
        let mut want = vec![0.0, 0.5, -0.5];
        for s in steps() {
            want.extend(s.weights_after);
        }
        assert_eq!(all, want);
        let lr = Array::open(store, "/lr").unwrap();
        let lr: Vec<f64> = lr
            .retrieve_array_subset(&ArraySubset::new_with_shape(vec![3]))
            .unwrap();
        assert_eq!(lr, vec![0.1, 0.05, 0.0]);
    }
}

/// Steps written but not committed when the writer stopped (a kill) are dropped on resume,
/// and appending goes on from the committed step, inside and across shards.
#[test]
fn resume_drops_uncommitted_rows_and_appends_after_the_committed_ones() {
    for steps_per_shard in [None, Some(2)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.zarr");
        let (train, _) = data();
        let mut attrs = RunAttributes::example(3, 2, 2);
        attrs.input_shape = vec![2, 2];
        let options = StoreOptions {
            steps_per_shard,
            ..StoreOptions::default()
        };
        let mut w =
            StoreWriter::create_with(&path, attrs, &train, None, &[0.0, 0.5, -0.5], options)
                .unwrap();
        let all = steps();
        w.append_step(&all[0]).unwrap();
        w.write_step(&all[1]).unwrap();
        w.write_step(&all[2]).unwrap();
        assert_eq!(w.uncommitted(), 2);
        drop(w);
        assert_eq!(StoreReader::open(&path).unwrap().steps(), 1);

        let (mut w, last) = StoreWriter::resume(&path).unwrap();
        assert_eq!(last, all[0].weights_after);
        w.append_step(&all[2]).unwrap();
        w.append_step(&all[1]).unwrap();
        w.finish().unwrap();
        let r = StoreReader::open(&path).unwrap();
        assert_eq!(r.steps(), 3);
        assert_eq!(r.weights(2).unwrap(), all[2].weights_after);
        assert_eq!(r.weights(3).unwrap(), all[1].weights_after);
        assert_eq!(r.lr(1).unwrap(), all[2].lr);
        assert_eq!(r.batch(2).unwrap().indices, all[1].indices);
    }
}

/// What the weights array's metadata says its rows are compressed with: the blosc compressor's
/// name, or None for plain little-endian rows.
fn row_compressor(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path.join("weights/zarr.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let inner = &json["codecs"][0]["configuration"]["codecs"][1];
    inner["configuration"]["cname"].as_str().map(str::to_owned)
}

#[test]
fn every_compression_choice_reads_back_and_a_resumed_store_keeps_its_own() {
    use epk_store::Compression;
    let choices = [
        (Compression::Auto, TrainDType::F64, None),
        (Compression::Auto, TrainDType::F32, Some("lz4")),
        (Compression::None, TrainDType::F32, None),
        (Compression::Lz4, TrainDType::F64, Some("lz4")),
        (Compression::Zstd, TrainDType::F64, Some("zstd")),
        (Compression::Zstd, TrainDType::F32, Some("zstd")),
    ];
    for (compression, dtype, cname) in choices {
        let what = format!("{compression:?} {dtype:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.zarr");
        let options = StoreOptions {
            compression,
            ..StoreOptions::default()
        };
        let mut w = create(&path, dtype, options);
        let all = steps();
        w.append_step(&all[0]).unwrap();
        drop(w);
        assert_eq!(row_compressor(&path).as_deref(), cname, "{what}");
        // Resumed with the default options: the rows go on in the store's own codec, as
        // values and as byte pieces alike.
        let (mut w, _) = StoreWriter::resume(&path).unwrap();
        w.append_step(&all[1]).unwrap();
        let (a, b) = pieces(&all[2].weights_after, dtype);
        w.write_step_row(&all[2], WeightRow::Bytes(&[&a, &b]))
            .unwrap();
        w.finish().unwrap();
        assert_eq!(row_compressor(&path).as_deref(), cname, "{what}");
        let r = StoreReader::open(&path).unwrap();
        assert_eq!(r.steps(), 3, "{what}");
        for (s, rec) in all.iter().enumerate() {
            assert_eq!(r.weights(s + 1).unwrap(), rec.weights_after, "{what}");
        }
        let (train, eval) = data();
        assert_eq!(r.train().unwrap(), train, "{what}");
        assert_eq!(r.eval().unwrap(), eval, "{what}");
    }
}
