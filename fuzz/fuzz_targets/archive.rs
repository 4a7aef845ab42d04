//! Pack archives (tar + zstd) from a peer: inspect, then unpack into a
//! scratch directory, under the limits the node uses for that size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packfed_protocol::archive::{ReadLimits, inspect, unpack};

fuzz_target!(|data: &[u8]| {
    let limits = ReadLimits::for_archive(data.len() as u64);
    let _ = inspect(data, limits);
    let dir = tempfile::tempdir().expect("scratch dir");
    let dest = dir.path().join("out");
    let _ = unpack(data, &dest, limits);
    // Nothing is written outside the destination.
    for entry in std::fs::read_dir(dir.path()).expect("read scratch") {
        assert_eq!(entry.expect("entry").file_name(), "out");
    }
});
