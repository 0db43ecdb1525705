//! The planner on real pipelines: edges with their paths, propagation chains, closures, selections inside a
//! parallel block, reuse and supplied values, and the errors for bad selections.

use plan::{Action, Request, Source, Via, graph, plan};
use std::collections::BTreeMap;

fn load(yaml: &str) -> (spec::Pipeline, plan::Graph) {
    let doc = spec::parse_document("t.yaml", yaml.to_string());
    assert!(doc.is_valid(), "{}", doc.render_diagnostics());
    let p = doc.pipeline().unwrap().clone();
    let refs = spec::stage_references(&p, doc.body().unwrap(), &doc.texts());
    let g = graph(&p, &refs);
    (p, g)
}

fn example() -> (spec::Pipeline, plan::Graph) {
    load(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/build-test-deploy.yaml"))
            .unwrap(),
    )
}

const ARTIFACT: &str = "pipeline.stages.build.spec.execution.steps.compile.output.outputVariables.artifact";

#[test]
fn the_example_graph() {
    let (_, g) = example();
    let edges: Vec<(&str, &str, Via)> =
        g.edges.iter().map(|e| (e.stage.as_str(), e.depends_on.as_str(), e.via)).collect();
    assert_eq!(
        edges,
        [
            ("deploy_dev", "build", Via::Expression),
            ("deploy_prod", "build", Via::Expression),
            ("deploy_prod", "deploy_dev", Via::Propagation),
            ("smoke_dev", "deploy_dev", Via::Expression),
        ]
    );
    assert_eq!(g.edges[0].paths, [ARTIFACT]);
    assert_eq!(g.edges[0].at.iter().map(|s| s.start).collect::<Vec<_>>(), [spec::Pos { line: 90, col: 45 }]);
    assert!(g.deps("unit_tests").next().is_none(), "order alone is not a dependency");
    assert_eq!(
        g.closure(&["deploy_prod".into()]).into_iter().collect::<Vec<_>>(),
        ["build", "deploy_dev", "deploy_prod"]
    );
}

#[test]
fn propagation_chains_follow_transitively() {
    let dep = |id: &str, svc: &str| {
        format!(
            "    - stage:\n        name: {id}\n        identifier: {id}\n        type: Deployment\n        spec:\n          service:\n            {svc}\n          environment:\n            environmentRef: dev\n          execution:\n            steps:\n              - step:\n                  type: Wait\n                  name: w\n                  identifier: w\n                  spec:\n                    duration: 1s\n"
        )
    };
    let yaml = format!(
        "pipeline:\n  name: P\n  identifier: p\n  allowStageExecutions: true\n  stages:\n{}{}{}",
        dep("a", "serviceRef: s"),
        dep("b", "useFromStage:\n              stage: a"),
        dep("c", "useFromStage:\n              stage: b")
    );
    let (p, g) = load(&yaml);
    assert_eq!(g.closure(&["c".into()]).len(), 3);
    let pl = plan(&p, &g, &Request { selected: vec!["c".into()], ..Default::default() }).unwrap();
    assert!(!pl.satisfiable);
    assert_eq!(pl.unmet_dependencies[0].depends_on, "b");
    assert_eq!(pl.unmet_dependencies[0].paths, ["pipeline.stages.b.service"]);
    let pl = plan(&p, &g, &Request { selected: vec!["c".into()], with_deps: true, ..Default::default() }).unwrap();
    assert!(pl.satisfiable);
    assert_eq!(pl.run_stages(), ["a", "b", "c"]);
}

#[test]
fn independent_stages_and_parallel_blocks() {
    let (p, g) = load(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/independent-checks.yaml"))
            .unwrap(),
    );
    assert!(g.edges.is_empty());
    let pl = plan(&p, &g, &Request { selected: vec!["docs".into()], ..Default::default() }).unwrap();
    assert!(pl.satisfiable);
    let actions: Vec<(&str, Action)> = pl.stages.iter().map(|s| (s.identifier.as_str(), s.action)).collect();
    assert_eq!(actions, [("lint", Action::Skip), ("docs", Action::Run), ("license_scan", Action::Skip)]);
}

#[test]
fn reuse_and_supplied_values() {
    let (p, g) = example();
    let mut tree_src = serde_json::json!({"pipeline": {"stages": {
        "build": {"status": "Success", "spec": {"execution": {"steps": {"compile": {"output": {"outputVariables": {"artifact": "a.tgz"}}}}}}},
        "deploy_dev": {"status": "Success", "service": {"name": "checkout"}}
    }}});
    let statuses: BTreeMap<String, String> =
        [("build", "Success"), ("deploy_dev", "Success")].map(|(a, b)| (a.into(), b.into())).into();
    let source = Source {
        execution_id: "E1".into(),
        pipeline: "build_test_deploy".into(),
        statuses: statuses.clone(),
        tree: tree_src.clone().into(),
    };
    let pl =
        plan(&p, &g, &Request { selected: vec!["deploy_prod".into()], source: Some(source), ..Default::default() })
            .unwrap();
    assert!(pl.satisfiable, "{:?}", pl.unmet_dependencies);
    let reuse: Vec<(&str, Option<&str>)> = pl
        .stages
        .iter()
        .filter(|s| s.action == Action::Reuse)
        .map(|s| (s.identifier.as_str(), s.reused_from.as_deref()))
        .collect();
    assert_eq!(reuse, [("build", Some("E1")), ("deploy_dev", Some("E1"))]);
    assert_eq!(pl.seeds.len(), 2);
    // A failed stage cannot serve.
    tree_src["pipeline"]["stages"]["build"]["status"] = "Failed".into();
    let mut failed = statuses.clone();
    failed.insert("build".into(), "Failed".into());
    let source = Source {
        execution_id: "E2".into(),
        pipeline: "build_test_deploy".into(),
        statuses: failed,
        tree: tree_src.into(),
    };
    let pl =
        plan(&p, &g, &Request { selected: vec!["deploy_prod".into()], source: Some(source), ..Default::default() })
            .unwrap();
    assert!(!pl.satisfiable);
    assert_eq!(pl.unmet_dependencies[0].paths, [ARTIFACT]);
    assert!(pl.unmet_dependencies[0].note.as_deref().unwrap().contains("ended Failed"));
    // Supplied values; a status path is always known (Skipped).
    let supplied: BTreeMap<String, String> = [(ARTIFACT.to_string(), "x.tgz".to_string())].into();
    let pl = plan(&p, &g, &Request { selected: vec!["deploy_dev".into()], supplied, ..Default::default() }).unwrap();
    assert!(pl.satisfiable);
    assert_eq!(pl.seeds[0].path, ARTIFACT);
    let supplied: BTreeMap<String, String> = [("pipeline.stages.x.y".to_string(), "1".to_string())].into();
    let pl = plan(&p, &g, &Request { selected: vec!["unit_tests".into()], supplied, ..Default::default() }).unwrap();
    assert_eq!(pl.warnings.len(), 1);
}

#[test]
fn bad_selections() {
    let (p, g) = example();
    let e = plan(&p, &g, &Request { selected: vec!["deploy_prd".into()], ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("did you mean `deploy_prod`?"));
    let mut closed = p.clone();
    closed.allow_stage_executions = false;
    let e = plan(&closed, &g, &Request { selected: vec!["build".into()], ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("allowStageExecutions: true"));
    assert!(plan(&closed, &g, &Request::default()).unwrap().satisfiable, "a full run needs no permission");
    assert!(
        plan(&closed, &g, &Request { selected: vec!["build".into()], any_stage: true, ..Default::default() }).is_ok()
    );
}
