//! The spec crate end to end: every stage and step type reads into the model, every validation rule reports
//! at the right line and column, hostile input is refused cleanly, and the model renders back to YAML that
//! reads to the same model.

use spec::{
    Action, Entity, ExecutionElement, Severity, Shell, StageType, StepSpec, StepType, Strategy, parse_bytes,
    parse_document,
};

fn doc(src: &str) -> spec::Document {
    parse_document("test.yaml", src.to_string())
}

fn everything() -> spec::Document {
    let d =
        spec::load_file(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/everything.yaml")))
            .expect("fixture readable");
    assert!(d.is_valid(), "{}", d.render_diagnostics());
    d
}

#[test]
fn examples_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    for f in ["build-test-deploy.yaml", "flaky-matrix.yaml", "independent-checks.yaml", "input-sets/release-2-1.yaml"] {
        let d = spec::load_file(&std::path::Path::new(dir).join(f)).unwrap();
        assert!(d.is_valid(), "{f}: {}", d.render_diagnostics());
        assert_eq!(d.warnings().count(), 0, "{f}: {}", d.render_diagnostics());
    }
}

#[test]
fn every_stage_and_step_type_reads_into_the_model() {
    let d = everything();
    assert_eq!(d.warnings().count(), 0, "{}", d.render_diagnostics());
    let p = d.pipeline().unwrap();
    assert_eq!(p.identifier.value, "everything");
    assert!(p.allow_stage_executions);
    assert_eq!(p.timeout.as_ref().unwrap().millis, Some(90 * 60 * 1000));
    assert_eq!(p.variables.len(), 3);
    let stages = p.all_stages();
    let types: Vec<StageType> = stages.iter().map(|s| s.stage_type).collect();
    assert_eq!(
        types,
        [StageType::Ci, StageType::Custom, StageType::Approval, StageType::Deployment, StageType::Deployment]
    );
    let groups: Vec<Vec<&str>> =
        p.stage_groups().iter().map(|g| g.iter().map(|s| s.identifier.as_str()).collect()).collect();
    assert_eq!(groups, vec![vec!["build"], vec!["smoke", "gate"], vec!["deploy"], vec!["legacy"]]);

    let mut step_types = Vec::new();
    for s in &stages {
        s.spec.execution.walk(|e, groups, rollback| {
            if let ExecutionElement::Step(st) = e {
                step_types.push((st.identifier.value.clone(), st.step_type, groups.len(), rollback));
            }
        });
    }
    let names: Vec<StepType> = step_types.iter().map(|s| s.1).collect();
    for t in [StepType::ShellScript, StepType::Run, StepType::Http, StepType::Wait, StepType::HarnessApproval] {
        assert!(names.contains(&t), "{t:?}");
    }
    assert!(step_types.iter().any(|s| s.0 == "pause" && s.2 == 2), "nested group depth: {step_types:?}");
    assert!(step_types.iter().any(|s| s.0 == "undo" && s.3), "rollback step");

    let build = p.stage("build").unwrap();
    assert_eq!(build.spec.clone_codebase, Some(false));
    assert!(build.spec.platform.is_some());
    let ExecutionElement::Step(compile) = &build.spec.execution.steps[0] else { panic!() };
    let StepSpec::Run(run) = &compile.spec else { panic!() };
    assert_eq!(run.shell, Some(Shell::Sh));
    assert_eq!(run.output_variables[0].name.value, "ARTIFACT");

    let smoke = p.stage("smoke").unwrap();
    let Some(Strategy::Matrix(m)) = &smoke.strategy else { panic!() };
    assert_eq!(m.axes.keys().collect::<Vec<_>>(), ["os", "node"]);
    assert_eq!(m.exclude.len(), 1);
    assert_eq!(m.max_concurrency, Some(2));
    let ExecutionElement::Step(ping) = &smoke.spec.execution.steps[0] else { panic!() };
    let Action::Retry(retry) = &ping.failure_strategies[0].on_failure.action else { panic!() };
    assert_eq!(retry.retry_count, 2);
    assert_eq!(retry.retry_intervals.iter().map(|d| d.millis.unwrap()).collect::<Vec<_>>(), [1000, 5000]);
    assert!(matches!(retry.on_retry_failure.action, Action::MarkAsFailure));

    let deploy = p.stage("deploy").unwrap();
    assert_eq!(deploy.spec.service.as_ref().unwrap().service_ref.as_ref().unwrap().value, "checkout");
    assert_eq!(deploy.spec.environment.as_ref().unwrap().infrastructure_definitions[0].identifier.value, "dev_cluster");
    assert!(matches!(deploy.strategy, Some(Strategy::Parallelism(ref n)) if n.value == 2));
    assert!(matches!(deploy.failure_strategies[0].on_failure.action, Action::StageRollback));
    let legacy = p.stage("legacy").unwrap();
    assert_eq!(legacy.spec.service_config.as_ref().unwrap().use_from_stage.as_ref().unwrap().stage.value, "deploy");
    assert_eq!(legacy.spec.infrastructure.as_ref().unwrap().use_from_stage.as_ref().unwrap().stage.value, "deploy");
    assert!(matches!(legacy.failure_strategies[0].on_failure.action, Action::PipelineRollback));
    assert!(matches!(legacy.failure_strategies[1].on_failure.action, Action::MarkAsSuccess));
    // Spans point at the source.
    assert_eq!(
        deploy.identifier.span.start.line,
        d.source.lines().position(|l| l.contains("identifier: deploy")).unwrap() as u32 + 1
    );
}

#[test]
fn model_renders_back_to_yaml_that_reads_the_same() {
    for path in [
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/everything.yaml"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/build-test-deploy.yaml"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/.harness/services/checkout.yaml"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/input-sets/release-2-1.yaml"),
    ] {
        let d = spec::load_file(std::path::Path::new(path)).unwrap();
        let once = d.entity.as_ref().unwrap().to_yaml();
        let again = doc(&once);
        assert!(again.is_valid(), "{path}:\n{once}\n{}", again.render_diagnostics());
        let twice = again.entity.as_ref().unwrap().to_yaml();
        assert_eq!(once, twice, "{path}");
    }
}

/// (yaml, expected severity, line, column, message fragment)
fn expect(src: &str, sev: Severity, line: u32, col: u32, fragment: &str) {
    let d = doc(src);
    let found = d.diagnostics.iter().find(|x| x.message.contains(fragment));
    let Some(found) = found else { panic!("no diagnostic containing {fragment:?}:\n{}", d.render_diagnostics()) };
    assert_eq!(found.severity, sev, "{}", d.render_diagnostics());
    assert_eq!((found.span.start.line, found.span.start.col), (line, col), "{}", d.render_diagnostics());
}

const HEAD: &str = "pipeline:\n  name: P\n  identifier: p\n";

fn stage(id: &str, body: &str) -> String {
    format!(
        "    - stage:\n        name: {id}\n        identifier: {id}\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: s\n                  identifier: s\n                  spec:\n                    shell: Sh\n                    source:\n                      type: Inline\n                      spec:\n                        script: {body}\n                    outputVariables:\n                      - name: out\n                        type: String\n                        value: out\n"
    )
}

#[test]
fn structural_errors_are_positioned() {
    use Severity::*;
    expect("pipeline:\n  name: P\n", Error, 2, 3, "missing required field `identifier`");
    expect(&format!("{HEAD}  timeout: banana\n  stages: []\n"), Error, 4, 12, "`banana` is not a duration");
    expect(&format!("{HEAD}  stages: []\n"), Error, 4, 11, "no stages");
    expect(
        &format!("{HEAD}  allowStageExecution: true\n  stages:\n{}", stage("a", "x")),
        Warning,
        4,
        3,
        "did you mean `allowStageExecutions`",
    );
    expect(
        &format!("{HEAD}  allowStageExecutions: maybe\n  stages:\n{}", stage("a", "x")),
        Error,
        4,
        25,
        "must be true or false",
    );
    let bad_type = stage("a", "x").replace("type: Custom", "type: Deploy");
    expect(&format!("{HEAD}  stages:\n{bad_type}"), Error, 8, 15, "unsupported stage type `Deploy`");
    let bad_step = stage("a", "x").replace("type: ShellScript", "type: Shell");
    expect(&format!("{HEAD}  stages:\n{bad_step}"), Error, 13, 25, "unsupported step type `Shell`");
    let bad_shell = stage("a", "x").replace("shell: Sh", "shell: Zsh");
    expect(&format!("{HEAD}  stages:\n{bad_shell}"), Error, 17, 28, "unsupported shell");
    let bad_id = stage("a", "x").replace("identifier: a", "identifier: 1a");
    expect(&format!("{HEAD}  stages:\n{bad_id}"), Error, 7, 21, "not a valid identifier");
    let reserved = stage("a", "x").replace("identifier: a", "identifier: class");
    expect(&format!("{HEAD}  stages:\n{reserved}"), Error, 7, 21, "reserved word");
    expect(
        &format!("{HEAD}  stages:\n{}{}", stage("a", "x"), stage("a", "y")),
        Error,
        28,
        21,
        "duplicate stage identifier `a`",
    );
    let dup_step = stage("a", "x").replace("            steps:\n", "            steps:\n              - step:\n                  type: Wait\n                  name: w\n                  identifier: s\n                  spec:\n                    duration: 1s\n");
    expect(&format!("{HEAD}  stages:\n{dup_step}"), Error, 21, 31, "duplicate step identifier `s`");
    let tabs = format!("{HEAD}  stages:\n\t- stage: {{}}\n");
    expect(&tabs, Error, 5, 1, "tab is used for indentation");
    expect("pipeline: [unclosed\n", Error, 2, 1, "invalid YAML");
    expect("pipelines:\n  name: x\n", Error, 1, 1, "did you mean `pipeline`");
    let step_when = stage("a", "x").replace(
        "                  type: ShellScript\n",
        "                  type: ShellScript\n                  when:\n                    pipelineStatus: Success\n",
    );
    expect(&format!("{HEAD}  stages:\n{step_when}"), Error, 15, 21, "uses `stageStatus`");
    let retry = stage("a", "x").replace("        spec:\n          execution", "        failureStrategies:\n          - onFailure:\n              errors: [Everything]\n              action:\n                type: Retry\n        spec:\n          execution");
    expect(&format!("{HEAD}  stages:\n{retry}"), Error, 11, 24, "unsupported error type `Everything`");
    expect(&format!("{HEAD}  stages:\n{retry}"), Error, 13, 17, "missing required field `spec`");
}

#[test]
fn use_from_stage_rules() {
    let dep = |id: &str, from: &str| {
        format!(
            "    - stage:\n        name: {id}\n        identifier: {id}\n        type: Deployment\n        spec:\n          service:\n            useFromStage:\n              stage: {from}\n          environment:\n            environmentRef: dev\n          execution:\n            steps:\n              - step:\n                  type: Wait\n                  name: w\n                  identifier: w\n                  spec:\n                    duration: 1s\n"
        )
    };
    let src = format!("{HEAD}  stages:\n{}{}", dep("a", "b"), dep("b", "a"));
    expect(&src, Severity::Error, 12, 22, "which runs after it");
    let src = format!("{HEAD}  stages:\n{}", dep("a", "nope"));
    expect(&src, Severity::Error, 12, 22, "names stage `nope`, which does not exist");
    let src = format!("{HEAD}  stages:\n{}{}", dep("alpha", "alpha"), dep("b", "alpah"));
    expect(&src, Severity::Error, 12, 22, "from itself");
    expect(&src, Severity::Error, 30, 22, "did you mean `alpha`");
    let src = format!("{HEAD}  stages:\n{}{}", stage("c", "x"), dep("d", "c"));
    expect(&src, Severity::Error, 33, 22, "is a Custom stage");
}

#[test]
fn expression_errors_are_positioned_with_suggestions() {
    use Severity::*;
    let vars = "  variables:\n    - name: version\n      type: String\n      value: '1'\n";
    let two = |body_a: &str, body_b: &str| {
        format!("{HEAD}{vars}  stages:\n{}{}", stage("build", body_a), stage("deploy", body_b))
    };
    // Line 25 holds the first stage's script, line 46 the second's.
    expect(&two("echo <+pipeline.variables.versoin>", "x"), Error, 25, 40, "did you mean `version`");
    expect(&two("x", "echo <+pipeline.stages.biuld.status>"), Error, 46, 40, "did you mean `build`");
    expect(&two("echo <+pipeline.stages.deploy.status>", "x"), Error, 25, 40, "runs after it");
    expect(
        &two("x", "echo <+pipeline.stages.build.spec.execution.steps.s.output.outputVariables.uot>"),
        Error,
        46,
        40,
        "did you mean `out`",
    );
    expect(
        &two("x", "echo <+pipeline.stages.build.spec.execution.steps.t.status>"),
        Error,
        46,
        40,
        "step `t`, which does not exist",
    );
    expect(
        &two("x", "echo <+pipeline.stages.build.variables.nope>"),
        Error,
        46,
        40,
        "variable `nope` of stage `build`",
    );
    expect(&two("echo <+steps.s.output.outputVariables.nope>", "x"), Error, 25, 40, "output variable `nope`");
    expect(&two("echo <+matrix.os>", "x"), Error, 25, 40, "outside a matrix");
    expect(&two("echo <+repeat.item>", "x"), Error, 25, 40, "outside a repeat");
    expect(&two("echo <+strategy.iteration>", "x"), Error, 25, 40, "outside a looping strategy");
    expect(&two("echo <+pipeline.variables.version", "x"), Error, 25, 38, "no closing `>`");
    expect(&two("echo <+1 +>", "x"), Error, 25, 43, "invalid expression");
    expect(&two("echo <+foo.bar>", "x"), Warning, 25, 40, "unknown expression root `foo`");
    expect(&two("echo <+service.name>", "x"), Warning, 25, 40, "only set in Deployment stages");
    expect(&two("<+input>.regex([a-z)", "x"), Error, 25, 48, "not a valid regular expression");
    expect(&two("<+input>.allowedValues()", "x"), Error, 25, 55, "at least one value");
    expect(&two("x <+input>", "x"), Error, 25, 35, "whole field value");
    let ok = two(
        "echo <+pipeline.variables.version> <+steps.s.output.outputVariables.out>",
        "echo <+pipeline.stages.build.spec.execution.steps.s.output.outputVariables.out>",
    );
    let d = doc(&ok);
    assert!(d.is_valid() && d.warnings().count() == 0, "{}", d.render_diagnostics());
    // A block script reports the line inside the block.
    let block =
        two("|\n                          echo ok\n                          echo <+pipeline.variables.nope>", "x");
    expect(&block, Error, 27, 34, "`nope`");
}

#[test]
fn hostile_input_is_refused_cleanly() {
    // 50 MB file.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; 50 * 1024 * 1024]).unwrap();
    let d = spec::load_file(&big).unwrap();
    assert!(d.diagnostics[0].message.contains("at most 16 MiB"), "{:?}", d.diagnostics);
    // 10,000 levels of nesting.
    let deep = format!("pipeline: {}{}", "[".repeat(10_000), "]".repeat(10_000));
    let m = &doc(&deep).diagnostics[0].message;
    assert!(m.contains("deeper than") || m.contains("recursion limit"), "{m}");
    let deep_block: String = (0..10_000).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    assert!(!doc(&deep_block).is_valid());
    // Billion laughs.
    let mut bomb = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let mut prev = 'a';
    for c in 'b'..='j' {
        bomb.push_str(&format!(
            "{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = c;
    }
    bomb.push_str("pipeline: *j\n");
    let d = doc(&bomb);
    assert!(d.diagnostics[0].message.contains("billion laughs"), "{:?}", d.diagnostics);
    // Non-UTF-8.
    let d = parse_bytes("x.yaml", b"pipeline:\n  name: caf\xe9\n".to_vec());
    assert_eq!((d.diagnostics[0].span.start.line, d.diagnostics[0].span.start.col), (2, 12));
    assert!(d.diagnostics[0].message.contains("not valid UTF-8"));
    // A runtime-input error next to a multi-byte character (found by fuzzing).
    let d = doc(
        "pipeline:\n  name: P\n  identifier: p\n  variables:\n    - name: v\n      type: String\n      value: <+input>.default\u{74b}rue).allowedValues(true,false)\n  stages: []\n",
    );
    assert!(!d.is_valid());
    let _ = d.render_diagnostics();
    // Empty file, a scalar, two documents.
    assert!(doc("").diagnostics[0].message.contains("empty"));
    assert!(!doc("just text").is_valid());
    assert!(doc("pipeline: {}\n---\npipeline: {}\n").diagnostics[0].message.contains("second YAML document"));
}

#[test]
fn entity_files_are_recognised() {
    for (src, kind) in [
        (
            "service:\n  name: s\n  identifier: s\n  serviceDefinition:\n    type: Kubernetes\n    spec:\n      variables:\n        - name: image\n          type: String\n          value: x\n",
            "service",
        ),
        ("environment:\n  name: e\n  identifier: e\n  type: Production\n", "environment"),
        (
            "infrastructureDefinition:\n  name: i\n  identifier: i\n  environmentRef: e\n  type: KubernetesDirect\n  spec:\n    namespace: n\n",
            "infrastructureDefinition",
        ),
        ("inputSet:\n  name: i\n  identifier: i\n  pipeline:\n    identifier: p\n", "inputSet"),
        ("overlayInputSet:\n  name: o\n  identifier: o\n  inputSetReferences: [a, b]\n", "overlayInputSet"),
    ] {
        let d = doc(src);
        assert!(d.is_valid(), "{kind}: {}", d.render_diagnostics());
        assert_eq!(d.entity.as_ref().unwrap().kind(), kind);
    }
    let d = doc("environment:\n  name: e\n  identifier: e\n  type: Staging\n");
    assert!(d.diagnostics[0].message.contains("unsupported environment type `Staging`"));
    let Some(Entity::Service(s)) = doc("service:\n  name: s\n  identifier: s\n  serviceDefinition:\n    type: K\n    spec:\n      variables:\n        - name: image\n          type: String\n          value: x\n").entity else { panic!() };
    assert_eq!(s.variables[0].name.value, "image");
}

#[test]
fn durations_parse_as_harness_writes_them() {
    use spec::duration::parse_millis;
    assert_eq!(parse_millis("10m"), Ok(600_000));
    assert_eq!(parse_millis("1h30m"), Ok(5_400_000));
    assert_eq!(parse_millis("1d"), Ok(86_400_000));
    assert_eq!(parse_millis("500ms"), Ok(500));
    assert_eq!(parse_millis("1w 2d"), Ok(9 * 86_400_000));
    assert!(parse_millis("10").unwrap_err().contains("without a unit"));
    assert!(parse_millis("10y").unwrap_err().contains("unknown unit"));
    assert!(parse_millis("banana").is_err());
}

#[test]
fn schema_describes_the_pipeline() {
    let s = spec::pipeline_schema();
    let text = s.to_string();
    assert!(s["properties"]["pipeline"].is_object(), "{text}");
    for key in [
        "allowStageExecutions",
        "failureStrategies",
        "useFromStage",
        "outputVariables",
        "rollbackSteps",
        "HarnessApproval",
    ] {
        assert!(text.contains(key), "schema lacks {key}");
    }
}

mod props {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = super::doc(&s);
        }

        #[test]
        fn yaml_like_text_never_panics(s in "(pipeline|stages|stage|step|  |- |: |\\[|\\]|\\{|\\}|<\\+|>|&a |\\*a|\n|identifier|x){0,60}") {
            let _ = super::doc(&s);
        }
    }
}

#[test]
fn accepted_fields_are_kept_and_unknown_ones_are_said_to_be_ignored() {
    let overlay =
        doc("overlayInputSet:\n  name: o\n  identifier: o\n  pipelineIdentifier: p\n  inputSetReferences: [a, b]\n");
    assert!(overlay.entity.as_ref().unwrap().to_yaml().contains("pipelineIdentifier: p"));
    let matrix = format!(
        "{HEAD}  stages:\n{}",
        stage("a", "echo <+matrix.os>").replace(
            "        spec:\n          execution",
            "        strategy:\n          matrix:\n            os: [linux]\n            nodeName: <+matrix.os>\n        spec:\n          execution"
        )
    );
    let d = doc(&matrix);
    assert!(d.is_valid(), "{}", d.render_diagnostics());
    let yaml = d.entity.as_ref().unwrap().to_yaml();
    assert!(yaml.contains("nodeName: <+matrix.os>"), "{yaml}");
    let unknown = doc(&format!("{HEAD}  fixedInputsOnRerun: true\n  stages:\n{}", stage("a", "x")));
    assert!(unknown.warnings().any(|w| w.message.contains("`fixedInputsOnRerun` in the pipeline is ignored")));
}

/// A big pipeline is read and checked on several threads: the stages, the problems and the references come
/// out as a single thread would give them.
#[test]
fn a_big_pipeline_reads_the_same_as_a_small_one() {
    let mut s = String::from("pipeline:\n  name: Big\n  identifier: big\n  stages:\n");
    let n = 700;
    for i in 0..n {
        let read = match i {
            0 => "x".to_string(),
            // Reads a stage that runs later: an error, at this stage's line.
            300 => "<+pipeline.stages.s500.spec.execution.steps.step.output.outputVariables.out>".to_string(),
            _ => format!("<+pipeline.stages.s{}.spec.execution.steps.step.output.outputVariables.out>", i - 1),
        };
        let extra = if i == 650 { "        colour: blue\n" } else { "" };
        s.push_str(&format!(
            "    - stage:\n        name: Stage {i}\n        identifier: s{i}\n        type: Custom\n{extra}        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: Step\n                  identifier: step\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: echo {read}; out=x\n                    outputVariables:\n                      - name: out\n                        type: String\n                        value: out\n"
        ));
    }
    let doc = spec::parse_document("big.yaml", s.clone());
    let msgs: Vec<(u32, String)> = doc.diagnostics.iter().map(|d| (d.span.start.line, d.message.clone())).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[0].1.contains("reads stage `s500`, which runs after it"), "{msgs:?}");
    assert!(msgs[1].1.contains("unknown key `colour`"), "{msgs:?}");
    assert!(msgs[0].0 < msgs[1].0);
    let lines: Vec<&str> = s.lines().collect();
    assert!(lines[msgs[1].0 as usize - 1].contains("colour"));
    // The stages in order, and every cross-stage reference found.
    let p = doc
        .entity
        .as_ref()
        .and_then(|e| match e {
            spec::Entity::Pipeline(p) => Some(p),
            _ => None,
        })
        .unwrap();
    let ids: Vec<String> = p.all_stages().iter().map(|s| s.identifier.value.clone()).collect();
    assert_eq!(ids, (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>());
    let refs = spec::stage_references(p, doc.body().unwrap(), &doc.texts());
    assert_eq!(refs.len(), n - 1);
    assert!(refs.windows(2).all(|w| w[0].span.start < w[1].span.start), "references in file order");
}

#[test]
fn a_step_runs_under_its_own_delegate_selectors_else_its_stage_s_else_the_pipeline_s() {
    let d = doc("pipeline:
  name: p
  identifier: p
  delegateSelectors: [linux]
  stages:
    - stage:
        name: a
        identifier: a
        type: Custom
        delegateSelectors: []
        spec:
          execution:
            steps:
              - step: {type: ShellScript, name: own, identifier: own, spec: {shell: Bash, delegateSelectors: [gpu], source: {type: Inline, spec: {script: x}}}}
              - step: {type: ShellScript, name: none, identifier: none, spec: {shell: Bash, source: {type: Inline, spec: {script: x}}}}
    - stage:
        name: b
        identifier: b
        type: Custom
        delegateSelectors: [arm, big]
        spec:
          execution:
            steps:
              - step: {type: ShellScript, name: s, identifier: s, spec: {shell: Bash, source: {type: Inline, spec: {script: x}}}}
");
    let p = d.pipeline().unwrap();
    let stages = p.all_stages();
    let steps = |i: usize| -> Vec<&spec::Step> {
        stages[i]
            .spec
            .execution
            .steps
            .iter()
            .filter_map(|e| match e {
                ExecutionElement::Step(s) => Some(&**s),
                _ => None,
            })
            .collect()
    };
    let names = |l: &[spec::Str]| l.iter().map(|v| v.value.clone()).collect::<Vec<_>>();
    let a = steps(0);
    assert_eq!(names(p.delegate_selectors(stages[0], a[0])), ["gpu"], "the step's own");
    assert_eq!(names(p.delegate_selectors(stages[0], a[1])), ["linux"], "an empty stage list counts as none");
    assert_eq!(names(p.delegate_selectors(stages[1], steps(1)[0])), ["arm", "big"], "the stage's");
}
