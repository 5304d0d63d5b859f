use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use time::macros::datetime;
use time::OffsetDateTime;

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A fixture from `tests/data`, as text.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(data_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A fixture from the workspace's `fixtures/`, as JSON.
pub fn workspace_fixture(path: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(path);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The time every built ACK and MDM says it was made at.
pub const AT: OffsetDateTime = datetime!(2026-11-21 10:00:00 UTC);

/// Signpost's profiles, compiled once for the whole test binary.
pub fn profiles() -> &'static signpost_profiles::Profiles {
    static P: OnceLock<signpost_profiles::Profiles> = OnceLock::new();
    P.get_or_init(|| signpost_profiles::Profiles::load().expect("profiles load"))
}

/// Logs to stderr when `TEST_LOG` is set; silent otherwise.
pub fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_test_writer()
            .try_init();
    }
}

/// The resource of the entry whose resourceType is `t`.
pub fn resource<'a>(bundle: &'a Value, t: &str) -> &'a Value {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == t)
        .unwrap_or_else(|| panic!("no {t} in the bundle"))
}

/// The resource without its `id`, and with `urn:uuid:` references blanked, so that resources
/// from two Bundles with different ids can be compared.
pub fn without_ids(resource: &Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("id");
                for (k, x) in m.iter_mut() {
                    if k == "reference" && x.as_str().is_some_and(|s| s.starts_with("urn:uuid:")) {
                        *x = Value::String("urn:uuid:*".into());
                    } else {
                        walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut r = resource.clone();
    walk(&mut r);
    r
}

/// The structure of a JSON value: objects keep their keys, arrays their first item's shape,
/// and every scalar becomes its type.
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), shape(x))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}
