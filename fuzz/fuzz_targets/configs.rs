//! Every file a user or a federation hands a node: pack manifest, policy,
//! trust policy, genesis, node config.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = packfed_governance::genesis::Genesis::parse(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = packfed_protocol::manifest::Manifest::parse(text);
    let _ = packfed_governance::policy::Policy::parse(text);
    let _ = packfed_governance::trust::TrustPolicy::parse(text);
    let _ = packfed_node::config::Config::parse(text);
});
