//! The `replay` binary: exit codes, messages and the JSON report.

mod common;

use common::{record, replay, text};

#[test]
fn verify_passes_fails_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("run.zarr");
    record(&store);
    let s = store.to_str().unwrap();

    let ok = replay(&["verify", s, "--tolerance", "1e-12"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("PASS"));

    let json = replay(&["verify", s, "--json", "--points", "3"]);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    for key in [
        "max_abs_error",
        "rule",
        "steps",
        "points",
        "evals_per_step_per_point",
    ] {
        assert!(v.get(key).is_some(), "JSON report lacks {key}");
    }
    assert_eq!(v["points"], 3);
    assert_eq!(v["steps"], 8);
    assert!(v["max_abs_error"].as_f64().unwrap() <= 1e-12);

    let coarse = replay(&["verify", s, "--rule", "left:2"]);
    assert_eq!(coarse.status.code(), Some(1), "{}", text(&coarse));
    let t = text(&coarse);
    assert!(
        t.contains("FAIL") && t.contains("left:2") && t.contains("step"),
        "{t}"
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("run.zarr");
    record(&store);
    let s = store.to_str().unwrap();
    let missing = dir.path().join("absent.zarr");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["verify", s, "--rule", "simpson:3"],
            "unknown quadrature rule",
        ),
        (vec!["verify", s, "--tolerance", "-1"], "not a positive"),
        (vec!["verify", s, "--tolerance", "abc"], "not a number"),
        (vec!["verify", s, "--points", "99"], "held-out points"),
        (vec!["verify", s, "--points", "0"], "at least 1"),
        (
            vec!["verify", s, "--rule", "mid:0"],
            "unknown quadrature rule",
        ),
        (vec!["verify"], "STORE"),
        (vec!["frobnicate", s], "unrecognized subcommand"),
        (vec!["verify", missing.to_str().unwrap()], "no such store"),
        (vec!["verify", s, "--bogus"], "--bogus"),
        (
            vec!["verify", s, "--decomposition", "maybe"],
            "--decomposition",
        ),
        (vec!["attribute", s, "--point", "4"], "4 held-out points"),
        (vec!["attribute", s], "--point"),
        (
            vec!["attribute", s, "--point", "0", "--output", "2"],
            "2 outputs",
        ),
        (
            vec!["attribute", s, "--point", "0", "--top", "0"],
            "at least 1",
        ),
        (vec!["verify", s, "--device", "tpu"], "unknown device"),
        (vec!["verify", s, "--device", "cuda:x"], "cuda:N"),
    ];
    // Without the cuda feature (or without a GPU) asking for CUDA is an error, not a panic.
    let cuda = replay(&["verify", s, "--device", "cuda"]);
    if cfg!(feature = "cuda") {
        assert!(
            matches!(cuda.status.code(), Some(0) | Some(2)),
            "{}",
            text(&cuda)
        );
    } else {
        assert_eq!(cuda.status.code(), Some(2), "{}", text(&cuda));
        assert!(text(&cuda).contains("--features cuda"), "{}", text(&cuda));
    }
    for (args, needle) in cases {
        let o = replay(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
    }
}

#[test]
fn attribute_ranks_points_and_draws_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("run.zarr");
    record(&store);
    let s = store.to_str().unwrap();
    let png = dir.path().join("attr.png");
    let out = replay(&[
        "attribute",
        s,
        "--point",
        "1",
        "--top",
        "3",
        "--json",
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let positive = v["positive"].as_array().unwrap();
    let negative = v["negative"].as_array().unwrap();
    assert!(positive.len() <= 3 && negative.len() <= 3);
    assert!(!positive.is_empty());
    // Ranked: positive values descending, negative ascending.
    let values = |l: &Vec<serde_json::Value>| -> Vec<f64> {
        l.iter().map(|a| a["value"].as_f64().unwrap()).collect()
    };
    let (p, n) = (values(positive), values(negative));
    assert!(p.windows(2).all(|w| w[0] >= w[1]) && p.iter().all(|&x| x > 0.0));
    assert!(n.windows(2).all(|w| w[0] <= w[1]) && n.iter().all(|&x| x < 0.0));
    // The parts add up to the network's output.
    let sum = v["bias"].as_f64().unwrap()
        + v["data"].as_f64().unwrap()
        + v["nondata"].as_f64().unwrap()
        + v["residual"].as_f64().unwrap();
    assert!((sum - v["network"].as_f64().unwrap()).abs() < 1e-12);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG was written");

    let table = replay(&["attribute", s, "--point", "0", "--output", "1"]);
    assert_eq!(table.status.code(), Some(0), "{}", text(&table));
    assert!(
        text(&table).contains("largest positive"),
        "{}",
        text(&table)
    );
    let coarse = replay(&["attribute", s, "--point", "0", "--rule", "left:1"]);
    assert_eq!(coarse.status.code(), Some(1), "{}", text(&coarse));
    assert!(text(&coarse).contains("not exact"), "{}", text(&coarse));
}

#[test]
fn compare_puts_the_exact_machine_at_tau_one_beside_the_refits() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("run.zarr");
    record(&store);
    let s = store.to_str().unwrap();
    let out_dir = dir.path().join("cmp");
    let out = replay(&[
        "compare",
        s,
        "--json",
        "--projection-dim",
        "16",
        "--kernels",
        "epk,dpk,trntk0,trntk,pntk,proj-trntk,proj-pntk,ck,epk-kglm",
        "--out",
        out_dir.to_str().unwrap(),
        "--rule-sweep",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = v["kernels"].as_array().unwrap().clone();
    let rules = v["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 10);
    let err = |name: &str| {
        rules.iter().find(|r| r["rule"] == name).unwrap()["max_error"]
            .as_f64()
            .unwrap()
    };
    assert!(err("auto") < 1e-12 && err("left:1") > 1e-6, "{rules:?}");
    assert!(err("left:100") < err("left:1"), "Riemann sums converge");
    let names: Vec<&str> = rows.iter().map(|r| r["kernel"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "epk",
            "dpk",
            "trntk0",
            "trntk",
            "pntk",
            "proj-trntk",
            "proj-pntk",
            "ck",
            "epk-kglm"
        ]
    );
    let epk = &rows[0];
    assert_eq!(epk["tau"].as_f64(), Some(1.0));
    assert!((epk["r2"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert!(epk["max_logit_error"].as_f64().unwrap() < 1e-12);
    for r in &rows[2..] {
        assert_eq!(r["form"], "kglm");
        let tau = r["tau"].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&tau));
        assert!(r["kglm_gradient"].as_f64().unwrap() < 1e-6, "{r}");
    }
    for name in ["scatter.png", "rules.png", "attributions.png"] {
        let png = std::fs::read(out_dir.join(name)).unwrap();
        assert_eq!(&png[..4], b"\x89PNG", "{name}");
    }
}

#[test]
fn layers_split_a_prediction_that_still_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("run.zarr");
    record(&store);
    let s = store.to_str().unwrap();
    let png = dir.path().join("layers.png");
    let out = replay(&[
        "layers",
        s,
        "--point",
        "2",
        "--json",
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = v["layers"].as_array().unwrap();
    let names: Vec<&str> = layers
        .iter()
        .map(|l| l["layer"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["layers.0", "layers.1"]);
    let sum: f64 = layers
        .iter()
        .map(|l| l["attribution"].as_f64().unwrap())
        .sum::<f64>()
        + v["bias"].as_f64().unwrap()
        + v["nondata"].as_f64().unwrap()
        + v["residual"].as_f64().unwrap();
    assert!((sum - v["network"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
}

#[test]
fn compare_at_an_earlier_step_and_on_a_subset_changes_the_refits_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("run.zarr");
    record(&store);
    let s = store.to_str().unwrap();
    let run = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut a = vec!["compare", s, "--json", "--kernels", "epk,trntk0"];
        a.extend_from_slice(extra);
        let out = replay(&a);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["kernels"].as_array().unwrap().clone()
    };
    let last = run(&[]);
    let early = run(&["--step", "2", "--fit-samples", "10"]);
    // The exact machine does not depend on either option.
    assert_eq!(last[0]["max_logit_error"], early[0]["max_logit_error"]);
    // The tangent-kernel surrogate does.
    assert_ne!(last[1]["r2"], early[1]["r2"]);
}

/// Reads a whole f64 array of an export and its dimension names.
fn read_export(path: &std::path::Path, name: &str) -> (Vec<f64>, Vec<String>, Vec<u64>) {
    let store = std::sync::Arc::new(zarrs::filesystem::FilesystemStore::new(path).unwrap());
    let array = zarrs::array::Array::open(store, &format!("/{name}")).unwrap();
    let dims = array
        .dimension_names()
        .clone()
        .unwrap()
        .into_iter()
        .map(|d| d.unwrap())
        .collect();
    let values = array
        .retrieve_array_subset::<Vec<f64>>(&array.subset_all())
        .unwrap();
    (values, dims, array.shape().to_vec())
}

/// `--out` writes every number behind the report: A[point, training sample, output] with b,
/// N, R and f, named by dimension, adding up to the network; `layers --out` adds the per-layer
/// split, which adds up to A. An existing path is refused before any replay work.
#[test]
fn verify_and_layers_export_every_attribution_with_dimension_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("run.zarr");
    record(&store);
    let s = store.to_str().unwrap();
    let out = dir.path().join("all.zarr");
    let o = out.to_str().unwrap();
    let ok = replay(&["verify", s, "--points", "3", "--out", o]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let (a, dims, shape) = read_export(&out, "attributions");
    assert_eq!(dims, ["point", "train_sample", "output"]);
    let (m, n, k) = (shape[0] as usize, shape[1] as usize, shape[2] as usize);
    assert_eq!(m, 3);
    let part = |name| read_export(&out, name).0;
    let (b, nd, r, f) = (
        part("bias"),
        part("nondata"),
        part("residual"),
        part("network"),
    );
    assert_eq!(read_export(&out, "bias").1, ["point", "output"]);
    let mut worst = 0.0f64;
    for p in 0..m {
        for o in 0..k {
            let sum: f64 = (0..n).map(|i| a[(p * n + i) * k + o]).sum();
            let e = p * k + o;
            worst = worst.max((b[e] + sum + nd[e] + r[e] - f[e]).abs());
        }
    }
    assert!(worst < 1e-12, "b + ΣA + N + R − f = {worst:e}");
    assert!(
        a.iter().any(|v| v.abs() > 1e-6),
        "attributions are not all zero"
    );

    let again = replay(&["verify", s, "--out", o]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("exists"), "{}", text(&again));

    let split = dir.path().join("layers.zarr");
    let l = replay(&[
        "layers",
        s,
        "--point",
        "1",
        "--out",
        split.to_str().unwrap(),
    ]);
    assert_eq!(l.status.code(), Some(0), "{}", text(&l));
    let (layers, dims, shape) = read_export(&split, "layer_attributions");
    assert_eq!(dims, ["layer", "point", "train_sample", "output"]);
    let (one, ..) = read_export(&split, "attributions");
    let per = one.len();
    assert_eq!(shape[0] as usize * per, layers.len());
    let gap = (0..per)
        .map(|j| {
            let total: f64 = (0..shape[0] as usize).map(|g| layers[g * per + j]).sum();
            (total - one[j]).abs()
        })
        .fold(0.0f64, f64::max);
    assert!(gap < 1e-13, "the layers add up to A within {gap:e}");
}
