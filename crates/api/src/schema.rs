//! Hand-written JSON schemas for fields whose Rust type alone cannot say what the
//! Kubernetes API server must enforce (patterns, free-form objects).

use schemars::{Schema, SchemaGenerator, json_schema};

use crate::version::VERSION_PATTERN;

/// Regex for an image checksum: `sha256:` followed by 64 lower-case hex digits.
pub const CHECKSUM_PATTERN: &str = "^sha256:[0-9a-f]{64}$";

/// An explicit version (see [`crate::version`]).
pub fn version(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": VERSION_PATTERN })
}

/// An explicit version, or `stable` for the catalog's alias.
pub fn version_or_stable(_: &mut SchemaGenerator) -> Schema {
    let pattern = format!("^stable$|{VERSION_PATTERN}");
    json_schema!({ "type": "string", "pattern": pattern })
}

/// `sha256:<64 hex>`.
pub fn checksum(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": CHECKSUM_PATTERN })
}

/// An object whose contents belong to someone else (an OS plugin).
pub fn opaque_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// A `HH:MM` wall-clock time.
pub fn clock_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$" })
}
