//! Fuzz target: the expression parser, template parser, runtime-input parser and evaluator must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let ctx = expr::MapContext::default();
    if let Ok(t) = expr::parse_template(s) {
        let _ = expr::render(&t, &ctx);
        let _ = t.references(&expr::Scope::stage("s").group("g"));
    }
    if let Ok(e) = expr::parse_condition(s) {
        let _ = expr::evaluate(&e, &ctx);
    }
    let _ = expr::parse_runtime_input(s);
});
