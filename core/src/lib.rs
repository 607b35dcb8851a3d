//! weft's sans-I/O core: bytes in, messages out, and untrusted updates
//! applied to a document. No sockets, no runtime, no storage: the server
//! (the `weft` crate) and the fuzz target (`fuzz/`) both build on it, and it
//! builds in seconds.
//!
//! - [`protocol`]: the y-sync and awareness wire format.
//! - [`hocuspocus`]: the Hocuspocus wire format (many documents, one
//!   socket), built on [`protocol`].
//! - [`validate`]: structural limits checked before yrs reads untrusted bytes.
//! - [`concat`]: several updates joined into one by moving bytes, for relays.
//! - [`dormant`]: a document's state vector and deletions read from its
//!   encoding, so that the server can answer without building it.
//! - [`originals`]: JSON values as clients wrote them, put back into
//!   what yrs encodes (yrs re-orders objects' keys).
//! - [`apply_update`]: the one way an update from outside reaches a document.
//! - [`fuzz`]: the incoming-frame path as one function, for fuzzing.

mod apply;
pub mod concat;
pub mod dormant;
#[doc(hidden)]
pub mod fuzz;
pub mod hocuspocus;
pub mod originals;
pub mod protocol;
pub mod validate;

pub use apply::{apply_update, rebuild, Clocks, Rebuilt};
