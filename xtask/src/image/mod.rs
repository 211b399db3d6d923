//! Packing a staged tree into a filesystem image that systemd-sysext can merge.
//! Every format is reproducible: same tree, same epoch, same bytes.

mod ext4;

use std::path::Path;

use crate::checksums::hash_bytes;
use crate::stage::StagedTree;

/// What makes an image reproducible besides its content.
#[derive(Clone, Debug)]
pub struct ImageParams {
    /// Every timestamp in the image (`SOURCE_DATE_EPOCH`).
    pub epoch: u64,
    /// Seeds the filesystem UUID and hash seeds, e.g. `alloy-1.10.2-amd64`.
    pub identity: String,
}

impl ImageParams {
    /// A UUID derived from the identity (and a purpose, so UUID and hash seed differ): fixed
    /// for a given image, different between images.
    pub fn derived_uuid(&self, purpose: &str) -> String {
        let digest = hash_bytes(format!("alloy-sysext {purpose} {}", self.identity).as_bytes());
        let mut b: [u8; 16] = digest.0[..16].try_into().unwrap();
        b[6] = (b[6] & 0x0f) | 0x40; // version 4 layout, as tools expect
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }
}

/// Packs `tree` into the image file `dest` (which must not exist yet).
pub fn pack(tree: &StagedTree, dest: &Path, params: &ImageParams) -> anyhow::Result<()> {
    ext4::pack(tree, dest, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_valid_and_distinct() {
        let params = ImageParams {
            epoch: 1,
            identity: "alloy-1.10.2-amd64".into(),
        };
        let uuid = params.derived_uuid("fs");
        assert_eq!(uuid, params.derived_uuid("fs"));
        assert_ne!(uuid, params.derived_uuid("hash"));
        assert_ne!(
            uuid,
            ImageParams {
                epoch: 1,
                identity: "alloy-1.10.2-arm64".into()
            }
            .derived_uuid("fs")
        );
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert!("89ab".contains(&uuid[19..20]));
    }
}
