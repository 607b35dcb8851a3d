//! Placeholder until the real diff lands (branch `restore`).

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RestoreError(String);

/// Changes `live` so that its content equals the version's; returns the update.
pub fn restore(_live: &yrs::Doc, _version_state: &[u8]) -> Result<Vec<u8>, RestoreError> {
    Err(RestoreError("restore is not implemented yet".into()))
}
