//! Serving sealed bundles to the sentinel: `GET /bundle/<path>` from a local directory,
//! with HTTP range requests so the sentinel can download in parallel chunks and resume.
//!
//! The relay serves ciphertext only (`manifest.cose` and `*.sealed` files); it cannot read
//! them, and whatever it changes the sentinel detects (signed manifest, authenticated
//! segments).

use std::path::PathBuf;

use axum::Router;
use tower_http::services::ServeDir;

/// The bundle routes: `GET /bundle/...` from `dir` (range requests supported, no directory
/// listings, no path escapes).
pub fn router(dir: PathBuf) -> Router {
    Router::new().nest_service(
        "/bundle",
        ServeDir::new(dir).append_index_html_on_directories(false),
    )
}
