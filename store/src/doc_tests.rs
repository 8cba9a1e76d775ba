//! docs/store.md describes the format for readers in other languages; these tests check that
//! it names what this build writes, so that the page cannot drift from the code unnoticed.

use crate::layout::{ArrayName, ROOT_ATTRIBUTE};
use crate::{FORMAT_NAME, FORMAT_VERSION, RunAttributes, TrainDType};

const DOC: &str = include_str!("../../docs/store.md");

/// The cells of the markdown table rows in `section` (a `## ` heading).
fn table(section: &str) -> Vec<Vec<String>> {
    let start = DOC
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("docs/store.md has no section {section:?}"));
    DOC[start..]
        .lines()
        .skip(2)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// docs/store.md describes the format name, attribute key and version this build writes.
#[test]
fn docs_describe_this_format_version() {
    let title = DOC.lines().next().unwrap();
    assert_eq!(
        title,
        format!("# The epk store format (version {FORMAT_VERSION})")
    );
    let rows = table("Root group: `zarr.json`");
    let version = rows
        .iter()
        .find(|r| r[1] == "`version`")
        .expect("a row for `version`");
    assert!(
        version[3].ends_with(&format!("this page describes `{FORMAT_VERSION}`")),
        "docs/store.md's `version` row says {:?}; this build writes {FORMAT_VERSION}",
        version[3]
    );
    let format = rows
        .iter()
        .find(|r| r[1] == "`format`")
        .expect("a row for `format`");
    assert_eq!(format[3], format!("always `\"{FORMAT_NAME}\"`"));
    assert!(DOC.contains(&format!("one object under the key `{ROOT_ATTRIBUTE}`")));
}

/// docs/store.md's array table names every array of the layout, with its dimension names
/// and data type.
#[test]
fn docs_describe_every_array() {
    let rows = table("Arrays");
    // One input axis: the table's `sample, feature_0, …` then names every axis but the `…`.
    let attrs = RunAttributes::example(3, 2, 4);
    assert_eq!(attrs.input_shape.len(), 1);
    let attrs_f32 = RunAttributes {
        dtype: TrainDType::F32,
        ..attrs.clone()
    };
    for name in ArrayName::ALL {
        let path = format!("`{}`", name.path());
        let row = rows
            .iter()
            .find(|r| r[1].split(", ").any(|p| p == path))
            .unwrap_or_else(|| panic!("docs/store.md's array table has no row for {path}"));
        if row[2] == "as above" {
            continue;
        }
        let spec = name.spec(&attrs);
        let dims: Vec<&str> = row[2]
            .trim_matches('`')
            .split(", ")
            .filter(|d| *d != "…")
            .collect();
        assert_eq!(dims, spec.dims, "dimension names of {path}");
        let f32 = name.spec(&attrs_f32).element;
        let dtype = if f32 == spec.element {
            spec.element.zarr_name()
        } else {
            "training dtype"
        };
        assert_eq!(row[4], dtype, "data type of {path}");
    }
}
