//! Document values that arrive outside the sync protocol (the HTTP API's
//! query strings), parsed and checked here so that the edge knows no yrs.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use yrs::updates::decoder::Decode;
use yrs::StateVector;

/// Why a state vector given as a parameter was refused. The message is
/// shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadStateVector {
    #[error("sv is not base64: {0}")]
    NotBase64(String),
    #[error("sv is not a Yjs state vector: {0}")]
    NotStateVector(String),
}

/// A state vector a client gave as base64 (standard, or URL-safe without
/// padding), checked by `weft-core`'s validator before yrs reads it.
#[derive(Debug, Clone)]
pub struct StateVectorParam(StateVector);

impl StateVectorParam {
    pub fn parse(b64: &str) -> Result<Self, BadStateVector> {
        let b64 = b64.trim();
        let bytes = STANDARD
            .decode(b64)
            .or_else(|_| URL_SAFE_NO_PAD.decode(b64))
            .map_err(|e| BadStateVector::NotBase64(e.to_string()))?;
        weft_core::validate::state_vector(&bytes).map_err(|e| BadStateVector::NotStateVector(e.to_string()))?;
        let sv = StateVector::decode_v1(&bytes).map_err(|e| BadStateVector::NotStateVector(e.to_string()))?;
        Ok(Self(sv))
    }

    pub(super) fn into_inner(self) -> StateVector {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::encoder::Encode;
    use yrs::ClientID;

    #[test]
    fn state_vectors_are_read_from_either_base64() {
        let mut sv = StateVector::default();
        sv.set_max(ClientID::new(7), 42);
        let bytes = sv.encode_v1();
        for b64 in [
            STANDARD.encode(&bytes),
            URL_SAFE_NO_PAD.encode(&bytes),
            format!(" {} ", STANDARD.encode(&bytes)),
        ] {
            assert_eq!(StateVectorParam::parse(&b64).unwrap().into_inner(), sv);
        }
        assert!(matches!(
            StateVectorParam::parse("%%%"),
            Err(BadStateVector::NotBase64(_))
        ));
        // a count of a million clients in one byte's worth of data
        let bomb = STANDARD.encode([0xc0, 0x84, 0x3d]);
        assert!(matches!(
            StateVectorParam::parse(&bomb),
            Err(BadStateVector::NotStateVector(_))
        ));
    }
}
