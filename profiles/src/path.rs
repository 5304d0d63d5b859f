//! FHIRPath-style locations for issues: `Bundle.entry[2].resource.subject`.

/// Join a base expression and a JSON pointer (`/entry/2/resource`) into an expression.
pub fn join(base: &str, pointer: &str) -> String {
    let mut out = base.to_owned();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.parse::<usize>().is_ok() {
            out.push('[');
            out.push_str(&seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// Where a schema error is: its instance path, plus the element itself when the error is a
/// missing required element or a single unknown one (the parent alone says too little).
pub fn of_error(base: &str, e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    let at = join(base, &e.instance_path().to_string());
    match e.kind() {
        K::Required { property } => match property.as_str() {
            Some(p) => child(&at, p),
            None => at,
        },
        K::AdditionalProperties { unexpected } if unexpected.len() == 1 => {
            child(&at, &unexpected[0])
        }
        _ => at,
    }
}

/// `base.child`.
pub fn child(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}.{name}")
    }
}

/// `base[i]`.
pub fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_become_fhirpath() {
        assert_eq!(
            join("Bundle", "/entry/2/resource/subject"),
            "Bundle.entry[2].resource.subject"
        );
        assert_eq!(join("Patient", ""), "Patient");
        assert_eq!(join("", "/a~1b"), "a/b");
        assert_eq!(index(&child("Bundle", "entry"), 0), "Bundle.entry[0]");
    }
}
