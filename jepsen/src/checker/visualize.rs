//! Keeps what porcupine-rs found (its `LinearizationInfo`) inside a
//! [`Verdict`](super::Verdict) so its interactive HTML page can be written
//! later, whatever the model.
//!
//! `LinearizationInfo<M>` is generic over the model; a verdict is not, so the
//! info is stored behind the object-safe [`Visualize`] trait.

use std::io;
use std::path::Path;

use porcupine_rs::{LinearizationInfo, Model};

/// A search result that can render porcupine-rs's HTML visualization.
pub(crate) trait Visualize: Send + Sync {
    /// Writes the self-contained HTML page to `path` (created or truncated).
    fn write_html(&self, path: &Path) -> io::Result<()>;
}

/// The partial linearizations porcupine-rs returned for one check.
pub(crate) struct Linearization<M: Model>(pub(crate) LinearizationInfo<M>);

impl<M: Model> Visualize for Linearization<M> {
    fn write_html(&self, path: &Path) -> io::Result<()> {
        porcupine_rs::visualize_path::<M>(&self.0, path)
    }
}
