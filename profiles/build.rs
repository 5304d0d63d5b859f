//! Writes `$OUT_DIR/fhir.schema.json`: HL7's R4 schema (`r4/fhir.schema.json`) without its
//! descriptions, compact. See `src/annotations.rs`.

#[path = "src/annotations.rs"]
mod annotations;

fn main() {
    let source = "r4/fhir.schema.json";
    println!("cargo::rerun-if-changed={source}");
    println!("cargo::rerun-if-changed=src/annotations.rs");
    let text = std::fs::read_to_string(source).expect("read r4/fhir.schema.json");
    let mut schema: serde_json::Value = serde_json::from_str(&text).expect("parse the R4 schema");
    annotations::drop_descriptions(&mut schema);
    let out =
        std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("fhir.schema.json");
    std::fs::write(out, serde_json::to_string(&schema).expect("serialise")).expect("write");
}
