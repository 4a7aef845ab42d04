//! What the core reads: the records a node holds. The shell backs it with
//! the sled store; tests back it with maps.

use packfed_protocol::{PublicKey, RecordId, pb};

use crate::store::{AttestationEntry, ReleaseEntry, ReleaseStatus, StoreError};

pub trait View {
    fn has_record(&self, id: &RecordId) -> Result<bool, StoreError>;
    /// The key that owns a namespace, if any.
    fn namespace_owner(&self, ns: &str) -> Result<Option<PublicKey>, StoreError>;
    /// The visible release `name@version` (signed by its namespace owner).
    fn release(&self, name: &str, version: &str) -> Result<Option<ReleaseEntry>, StoreError>;
    /// The visible release's record, without checking its signature again
    /// (it was checked when stored).
    fn release_record(&self, name: &str, version: &str) -> Result<Option<pb::Release>, StoreError>;
    /// Every attestation stored for `name@version`, whatever hash it names.
    fn attestations_of(&self, name: &str, version: &str) -> Result<Vec<AttestationEntry>, StoreError>;
    /// How many attestations are stored for `name@version`, counting no
    /// further than `at_most`.
    fn attestation_count(&self, name: &str, version: &str, at_most: usize) -> Result<usize, StoreError>;
    fn status(&self, release: &RecordId) -> Result<Option<ReleaseStatus>, StoreError>;
    /// Whether any stored release of `name` is org (`None`: no release).
    fn pack_is_org(&self, name: &str) -> Result<Option<bool>, StoreError>;
    fn has_pack(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.pack_is_org(name)?.is_some())
    }
    fn is_org_pack(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.pack_is_org(name)? == Some(true))
    }
    /// The witnessed time of a record, if a witness quorum listed it.
    fn witnessed(&self, id: &RecordId) -> Option<u64>;
}
