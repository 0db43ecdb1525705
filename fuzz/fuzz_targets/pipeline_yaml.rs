//! Fuzz target: loading any bytes as a pipeline file must never panic, and diagnostics must render.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let doc = spec::parse_bytes("fuzz.yaml", data.to_vec());
    let _ = doc.render_diagnostics();
    if let Some(e) = &doc.entity {
        let _ = e.to_yaml();
    }
});
