//! Criterion benchmark: parse and validate a generated 5,000-stage pipeline (each stage reads the previous
//! stage's output variable, so validation resolves 5,000 cross-stage references), next to the cost of the
//! YAML tree alone and of the YAML parser's event stream alone, which bound what parsing can reach. Also:
//! template resolution of a pipeline with 200 template references (stage templates that use a step
//! template), alone and with parsing and validation.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

mod common;
use common::generate;

fn bench(c: &mut Criterion) {
    let src = generate(5_000);
    let doc = spec::parse_document("big.yaml", src.clone());
    assert!(doc.is_valid(), "{}", doc.render_diagnostics());
    let mut g = c.benchmark_group("spec");
    g.sample_size(20);
    g.bench_function("parse_validate_5000_stages", |b| {
        b.iter(|| spec::parse_document("big.yaml", black_box(src.clone())))
    });
    // The floor: the YAML tree alone, and the YAML parser's events alone (no tree at all).
    g.bench_function("yaml_tree_5000_stages", |b| b.iter(|| spec::yaml::load(black_box(&src))));
    g.bench_function("yaml_events_5000_stages", |b| {
        b.iter(|| saphyr_parser::Parser::new_from_str(black_box(&src)).count())
    });
    g.finish();
}

const STAGE_TEMPLATE: &str = "template:\n  name: Deploy\n  identifier: deploy\n  versionLabel: v1\n  type: Stage\n  projectIdentifier: p\n  orgIdentifier: o\n  spec:\n    type: Custom\n    spec:\n      execution:\n        steps:\n          - step:\n              name: Apply\n              identifier: apply\n              template:\n                templateRef: account.apply\n                versionLabel: v1\n    variables:\n      - name: target\n        type: String\n        value: <+input>\n";
const STEP_TEMPLATE: &str = "template:\n  name: Apply\n  identifier: apply\n  versionLabel: v1\n  type: Step\n  spec:\n    type: ShellScript\n    timeout: 1m\n    spec:\n      shell: Bash\n      source:\n        type: Inline\n        spec:\n          script: echo applying to <+stage.variables.target>\n";

/// A pipeline of `n` stages, each a reference to the stage template (which references the step template).
fn templated(n: usize) -> String {
    let mut s =
        String::from("pipeline:\n  name: T\n  identifier: t\n  projectIdentifier: p\n  orgIdentifier: o\n  stages:\n");
    for i in 0..n {
        s.push_str(&format!(
            "    - stage:\n        name: S{i}\n        identifier: s{i}\n        template:\n          templateRef: deploy\n          versionLabel: v1\n          templateInputs:\n            type: Custom\n            variables:\n              - name: target\n                type: String\n                value: cluster-{i}\n"
        ));
    }
    s
}

fn bench_templates(c: &mut Criterion) {
    let mut lib = spec::template::Library::default();
    lib.add("deploy.yaml", STAGE_TEMPLATE.to_string());
    lib.add("apply.yaml", STEP_TEMPLATE.to_string());
    // 100 stage references, each bringing one step reference: 200 references.
    let src = templated(100);
    let doc = spec::parse_document_with("t.yaml", src.clone(), Some(&lib));
    assert!(doc.is_valid(), "{}", doc.render_diagnostics());
    assert_eq!(doc.uses.len(), 2);
    let root = spec::yaml::load(&src).unwrap();
    let body = root.get("pipeline").unwrap().clone();
    let mut g = c.benchmark_group("templates");
    g.sample_size(30);
    g.bench_function("resolve_200_references", |b| {
        b.iter(|| spec::template::resolve(black_box(&body), Some(&lib), &spec::template::Kind::Pipeline))
    });
    g.bench_function("parse_resolve_validate_200_references", |b| {
        b.iter(|| spec::parse_document_with("t.yaml", black_box(src.clone()), Some(&lib)))
    });
    g.finish();
}

criterion_group!(benches, bench, bench_templates);
criterion_main!(benches);
