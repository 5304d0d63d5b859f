//! The R4 schema without its `description` annotations, made at build time (`build.rs` includes
//! this file). The descriptions are three quarters of HL7's schema, are never read, and
//! parsing them at start-up cost the gateway about 20 MB that the allocator kept afterwards.

use serde_json::Value;

/// Take out every `description` whose value is text: an annotation, with no effect on
/// validation. An element named `description` is a property whose value is a schema (an object),
/// and stays.
pub fn drop_descriptions(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if o.get("description").is_some_and(Value::is_string) {
                o.remove("description");
            }
            o.values_mut().for_each(drop_descriptions);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_descriptions),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn descriptions_go_and_elements_named_description_stay() {
        let mut schema = json!({
            "description": "A referral",
            "properties": {
                "description": {"description": "Text", "$ref": "#/definitions/string"},
                "code": {"description": "Code", "enum": ["description"]}
            }
        });
        drop_descriptions(&mut schema);
        assert_eq!(
            schema,
            json!({
                "properties": {
                    "description": {"$ref": "#/definitions/string"},
                    "code": {"enum": ["description"]}
                }
            })
        );
    }

    #[test]
    fn the_built_schema_is_hl7s_without_descriptions() {
        let mut vendored: Value =
            serde_json::from_str(include_str!("../r4/fhir.schema.json")).unwrap();
        let built: Value =
            serde_json::from_str(include_str!(concat!(env!("OUT_DIR"), "/fhir.schema.json")))
                .unwrap();
        assert_ne!(vendored, built);
        drop_descriptions(&mut vendored);
        assert_eq!(vendored, built);
    }
}
