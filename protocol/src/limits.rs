//! Size limits. Every decoder checks its input against one of these before it
//! allocates or parses, so a peer can never make us hold more than this.

/// Largest encoded `Signed` envelope we accept (records are small metadata).
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// Largest `pack.toml`.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;

/// Largest archive a node stores, whatever the policy says (policies can only
/// lower it).
pub const MAX_ARCHIVE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Largest total of file sizes an archive may expand to when unpacked.
pub const MAX_UNPACKED_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// Largest expansion ratio (unpacked / archive) we tolerate for archives over
/// [`RATIO_FLOOR_BYTES`]; zstd on real source trees stays far below this.
pub const MAX_EXPANSION_RATIO: u64 = 200;

/// Below this unpacked size the ratio check does not apply (tiny archives of
/// repetitive text compress extremely well and are harmless).
pub const RATIO_FLOOR_BYTES: u64 = 16 * 1024 * 1024;

/// Decompressed bytes allowed beyond the file-size limit for tar headers and
/// extension members (long names, PAX). The whole decompressed stream is
/// capped, so neither data behind directory headers nor a huge long-name
/// member can make a reader work or allocate past the limit.
pub const TAR_OVERHEAD_BYTES: u64 = 1024 * 1024;

/// Most entries (files, directories, links) in one archive.
pub const MAX_ARCHIVE_ENTRIES: usize = 100_000;

/// Longest path inside an archive.
pub const MAX_PATH_BYTES: usize = 1024;

/// Longest pack name (`namespace/name`), version string and free text fields.
pub const MAX_NAME_BYTES: usize = 128;
pub const MAX_VERSION_BYTES: usize = 64;
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
pub const MAX_LIST_ITEMS: usize = 64;
pub const MAX_DEPENDENCIES: usize = 256;

/// Most record ids in one checkpoint: 1,800 ids of 34 encoded bytes fit the
/// envelope limit with room for the rest; a witness with more news signs
/// several checkpoints in a row.
pub const MAX_CHECKPOINT_RECORDS: usize = 1_800;
