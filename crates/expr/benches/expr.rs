//! Criterion benchmarks: parse one typical expression, and evaluate it against a value tree.

use criterion::{Criterion, criterion_group, criterion_main};
use expr::{MapContext, Scope, evaluate, parse_expression, parse_template, render};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let src = "pipeline.stages.build.spec.execution.steps.compile.output.outputVariables.artifact";
    let root: expr::Value = serde_json::json!({"pipeline": {"variables": {"version": "2.1.0"}, "stages": {"build": {"spec": {"execution": {"steps": {"compile": {"output": {"outputVariables": {"artifact": "checkout-2.1.0.tar.gz"}}}}}}}}}}).into();
    let ctx = MapContext { root, scope: Scope::stage("deploy"), ..Default::default() };
    let e = parse_expression(src).unwrap();
    c.bench_function("expr/parse_reference", |b| b.iter(|| parse_expression(black_box(src))));
    c.bench_function("expr/evaluate_reference", |b| b.iter(|| evaluate(black_box(&e), &ctx)));
    let cond = "pipeline.variables.version.startsWith('2') && pipeline.variables.version != '2.0.0'";
    let ce = parse_expression(cond).unwrap();
    c.bench_function("expr/parse_condition", |b| b.iter(|| parse_expression(black_box(cond))));
    c.bench_function("expr/evaluate_condition", |b| b.iter(|| evaluate(black_box(&ce), &ctx)));
    let t = parse_template("echo deploying <+pipeline.variables.version> to <+pipeline.stages.build.spec.execution.steps.compile.output.outputVariables.artifact>").unwrap();
    c.bench_function("expr/render_template", |b| b.iter(|| render(black_box(&t), &ctx)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
