//! Criterion benchmark: parse and validate a generated 5,000-stage pipeline (each stage reads the previous
//! stage's output variable, so validation resolves 5,000 cross-stage references), next to the cost of the
//! YAML tree alone and of the YAML parser's event stream alone, which bound what parsing can reach.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

/// A pipeline of `n` stages; stage i reads stage i-1's output.
pub fn generate(n: usize) -> String {
    let mut s = String::from(
        "pipeline:\n  name: Big\n  identifier: big\n  allowStageExecutions: true\n  variables:\n    - name: version\n      type: String\n      value: <+input>.default(1.0.0)\n  stages:\n",
    );
    for i in 0..n {
        let read = if i == 0 {
            "<+pipeline.variables.version>".to_string()
        } else {
            format!("<+pipeline.stages.s{}.spec.execution.steps.step.output.outputVariables.out>", i - 1)
        };
        s.push_str(&format!(
            "    - stage:\n        name: Stage {i}\n        identifier: s{i}\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: Step\n                  identifier: step\n                  timeout: 1m\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: echo {read}; out=x\n                    outputVariables:\n                      - name: out\n                        type: String\n                        value: out\n"
        ));
    }
    s
}

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

criterion_group!(benches, bench);
criterion_main!(benches);
