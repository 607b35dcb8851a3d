//! Placeholder until the real renderer lands (branch `restore`).

/// The document's content as JSON, one entry per root type.
pub fn doc_to_json(_doc: &yrs::Doc) -> serde_json::Value {
    serde_json::json!({})
}
