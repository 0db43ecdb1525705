//! Criterion benchmarks: plan a selection on a generated 5,000-stage pipeline with ~20,000 cross-stage
//! references, and the `--with-deps` closure on a 5,000-stage chain. Parsing is not measured here (see the
//! spec crate's benchmark); the graph and the plan are.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

/// Stage i reads the outputs of stages i-1 … i-4 (about 20,000 references in all).
fn generate(n: usize) -> String {
    let mut s = String::from("pipeline:\n  name: Big\n  identifier: big\n  allowStageExecutions: true\n  stages:\n");
    for i in 0..n {
        let reads: Vec<String> = (1..=4)
            .filter(|d| *d <= i)
            .map(|d| format!("<+pipeline.stages.s{}.spec.execution.steps.step.output.outputVariables.out>", i - d))
            .collect();
        s.push_str(&format!(
            "    - stage:\n        name: s{i}\n        identifier: s{i}\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: step\n                  identifier: step\n                  spec:\n                    shell: Sh\n                    source:\n                      type: Inline\n                      spec:\n                        script: echo {} ; out=1\n                    outputVariables:\n                      - name: out\n                        type: String\n                        value: out\n",
            reads.join(" ")
        ));
    }
    s
}

fn bench(c: &mut Criterion) {
    let doc = spec::parse_document("big.yaml", generate(5_000));
    assert!(doc.is_valid());
    let p = doc.pipeline().unwrap().clone();
    let refs = spec::stage_references(&p, doc.body().unwrap(), &doc.texts());
    assert!(refs.len() > 19_000, "{}", refs.len());
    let req = plan::Request { selected: vec!["s4999".into(), "s2500".into()], ..Default::default() };
    let mut g = c.benchmark_group("plan");
    g.sample_size(20);
    g.bench_function("graph_and_plan_5000_stages_20000_refs", |b| {
        b.iter(|| {
            let graph = plan::graph(&p, black_box(&refs));
            plan::plan(&p, &graph, black_box(&req)).unwrap()
        })
    });
    let graph = plan::graph(&p, &refs);
    g.bench_function("plan_only_5000_stages", |b| b.iter(|| plan::plan(&p, &graph, black_box(&req)).unwrap()));
    g.bench_function("with_deps_closure_5000_chain", |b| b.iter(|| graph.closure(black_box(&["s4999".to_string()]))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
