//! The API side of delta updates: the chunk index a catalog entry may name (so the
//! signed catalog covers it), and what a node reports about a delta install (bytes
//! fetched and reused, and why it fell back to a full install).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The chunk index of a packed image (`osroll image pack`), named by a catalog entry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Where to download the index.
    pub url: String,
    /// `sha256:<64 hex>` of the index file.
    #[schemars(schema_with = "crate::schema::checksum")]
    pub checksum: String,
}

/// Why a node installed an image in full although the catalog named an index.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum DeltaFallbackReason {
    /// The index could not be downloaded.
    IndexUnavailable,
    /// The index's bytes do not hash to the catalog's `index.checksum`.
    IndexChecksumMismatch,
    /// The index does not parse, or its chunks do not tile the image.
    IndexInvalid,
    /// The index describes another pack than `image.checksum`.
    IndexNotForImage,
    /// The active slot (the seed) could not be read.
    SeedUnreadable,
    /// The image server answered a Range request with the whole file.
    RangeIgnored,
    /// Frames or seed chunks kept failing their hash past the refetch limit.
    TooManyMismatches,
    /// A frame could not be downloaded within the retry budget.
    FetchFailed,
    /// The assembled image did not hash to the index's whole-image hash.
    ImageMismatch,
}

impl DeltaFallbackReason {
    /// The variant's name, as status carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IndexUnavailable => "IndexUnavailable",
            Self::IndexChecksumMismatch => "IndexChecksumMismatch",
            Self::IndexInvalid => "IndexInvalid",
            Self::IndexNotForImage => "IndexNotForImage",
            Self::SeedUnreadable => "SeedUnreadable",
            Self::RangeIgnored => "RangeIgnored",
            Self::TooManyMismatches => "TooManyMismatches",
            Self::FetchFailed => "FetchFailed",
            Self::ImageMismatch => "ImageMismatch",
        }
    }
}

impl std::fmt::Display for DeltaFallbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the image of the current attempt was obtained, when the catalog named an index.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeltaStatus {
    /// Pack bytes downloaded for the delta (frames, including refetches).
    pub bytes_fetched: u64,
    /// Image bytes copied from the active slot instead.
    pub bytes_reused: u64,
    /// Set when the delta install gave up and the image was installed in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<DeltaFallbackReason>,
    /// What went wrong, when it fell back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_reasons_serialise_as_their_names() {
        for r in [
            DeltaFallbackReason::IndexUnavailable,
            DeltaFallbackReason::IndexChecksumMismatch,
            DeltaFallbackReason::IndexInvalid,
            DeltaFallbackReason::IndexNotForImage,
            DeltaFallbackReason::SeedUnreadable,
            DeltaFallbackReason::RangeIgnored,
            DeltaFallbackReason::TooManyMismatches,
            DeltaFallbackReason::FetchFailed,
            DeltaFallbackReason::ImageMismatch,
        ] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
    }
}
