use epk_store::{
    RunAttributes, Samples, StepRecord, StoreError, StoreReader, StoreWriter, TrainDType,
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
    let mut attrs = RunAttributes::example(3, 2, 2);
    attrs.input_shape = vec![2, 2];
    attrs.dtype = dtype;
    let (train, eval) = data();
    let mut w = StoreWriter::create(path, attrs, &train, Some(&eval), &[0.0, 0.5, -0.5]).unwrap();
    for s in steps() {
        w.append_step(&s).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn everything_written_reads_back() {
    for dtype in [TrainDType::F64, TrainDType::F32] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.zarr");
        write(&path, dtype);
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
    std::fs::remove_file(path.join("weights/c/1/0")).unwrap();
    let r = StoreReader::open(&path).unwrap();
    let err = r.weights(1).err().unwrap().to_string();
    assert!(
        err.contains("chunk is missing") && err.contains("weights"),
        "{err}"
    );
}
