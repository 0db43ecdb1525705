//! Behaviour of the expression language: every reference form, operators, methods, runtime-input modifiers,
//! static references with relative paths, unresolved references, and values-are-data.

use expr::{
    MapContext, Scope, Segment, Value, evaluate, evaluate_condition, parse_expression, parse_runtime_input,
    parse_template, references, render,
};

fn ctx() -> MapContext {
    let root: serde_json::Value = serde_json::json!({
        "pipeline": {
            "name": "Build Test Deploy", "identifier": "btd", "sequenceId": 7, "executionId": "01J",
            "variables": {"version": "2.1.0", "flag": "true", "n": "3", "csv": "a,b,c", "evil": "<+secrets.getValue(\"x\")>"},
            "stages": {
                "build": {
                    "status": "Success",
                    "variables": {"x": "1"},
                    "spec": {"execution": {"steps": {
                        "compile": {"output": {"outputVariables": {"artifact": "checkout-2.1.0.tar.gz"}}},
                        "grp": {"steps": {"inner": {"output": {"outputVariables": {"v": "deep"}}}}}
                    }}}
                }
            }
        },
        "matrix": {"os": "linux", "node": 20},
        "strategy": {"iteration": 1, "iterations": 4},
        "repeat": {"item": "eu"},
        "env": {"name": "dev", "identifier": "dev", "type": "PreProduction", "variables": {"log_level": "debug"}},
        "service": {"name": "checkout", "identifier": "checkout"},
        "serviceVariables": {"image": "reg/checkout:2.1.0"},
        "infra": {"namespace": "checkout-dev", "name": "dev cluster", "identifier": "dev_cluster"}
    });
    let mut c = MapContext { root: root.into(), scope: Scope::stage("build"), ..Default::default() };
    c.secrets.insert("token".into(), "s3cr3t".into());
    c
}

fn eval(src: &str) -> Value {
    evaluate(&parse_expression(src).unwrap_or_else(|e| panic!("{src}: {e}")), &ctx())
        .unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

#[test]
fn every_reference_form_resolves() {
    assert_eq!(eval("pipeline.name"), s("Build Test Deploy"));
    assert_eq!(eval("pipeline.identifier"), s("btd"));
    assert_eq!(eval("pipeline.sequenceId"), Value::Int(7));
    assert_eq!(eval("pipeline.executionId"), s("01J"));
    assert_eq!(eval("pipeline.variables.version"), s("2.1.0"));
    assert_eq!(eval("pipeline.stages.build.variables.x"), s("1"));
    assert_eq!(eval("stage.variables.x"), s("1"));
    assert_eq!(eval("stage.status"), s("Success"));
    assert_eq!(eval("pipeline.stages.build.status"), s("Success"));
    let artifact = s("checkout-2.1.0.tar.gz");
    assert_eq!(eval("pipeline.stages.build.spec.execution.steps.compile.output.outputVariables.artifact"), artifact);
    assert_eq!(eval("execution.steps.compile.output.outputVariables.artifact"), artifact);
    assert_eq!(eval("steps.compile.output.outputVariables.artifact"), artifact);
    assert_eq!(eval("stage.spec.execution.steps.compile.output.outputVariables.artifact"), artifact);
    assert_eq!(eval("pipeline.stages.build.spec.execution.steps.grp.steps.inner.output.outputVariables.v"), s("deep"));
    assert_eq!(eval("matrix.os"), s("linux"));
    assert_eq!(eval("matrix.node"), Value::Int(20));
    assert_eq!(eval("strategy.iteration"), Value::Int(1));
    assert_eq!(eval("strategy.iterations"), Value::Int(4));
    assert_eq!(eval("repeat.item"), s("eu"));
    assert_eq!(eval("env.name"), s("dev"));
    assert_eq!(eval("env.type"), s("PreProduction"));
    assert_eq!(eval("env.variables.log_level"), s("debug"));
    assert_eq!(eval("service.name"), s("checkout"));
    assert_eq!(eval("serviceVariables.image"), s("reg/checkout:2.1.0"));
    assert_eq!(eval("infra.namespace"), s("checkout-dev"));
    assert_eq!(eval("secrets.getValue(\"token\")"), s("s3cr3t"));
    assert_eq!(eval("pipeline.variables['version']"), s("2.1.0"));
}

#[test]
fn relative_steps_inside_a_step_group_resolve_to_the_group() {
    let mut c = ctx();
    c.scope = Scope::stage("build").group("grp");
    let e = parse_expression("steps.inner.output.outputVariables.v").unwrap();
    assert_eq!(evaluate(&e, &c).unwrap(), s("deep"));
    let e = parse_expression("stepGroup.steps.inner.output.outputVariables.v").unwrap();
    assert_eq!(evaluate(&e, &c).unwrap(), s("deep"));
}

#[test]
fn literals_and_operators() {
    assert_eq!(eval("1 + 2 * 3"), Value::Int(7));
    assert_eq!(eval("(1 + 2) * 3"), Value::Int(9));
    assert_eq!(eval("7 % 4"), Value::Int(3));
    assert_eq!(eval("7 / 2"), Value::Int(3));
    assert_eq!(eval("7.0 / 2"), Value::Float(3.5));
    assert_eq!(eval("10 - 4 - 3"), Value::Int(3));
    assert_eq!(eval("-3 + 1"), Value::Int(-2));
    assert_eq!(eval("'a' + 'b'"), s("ab"));
    assert_eq!(eval("\"v\" + 1"), s("v1"));
    assert_eq!(eval("null"), Value::Null);
    assert_eq!(eval("true && false"), Value::Bool(false));
    assert_eq!(eval("true || false"), Value::Bool(true));
    assert_eq!(eval("!true"), Value::Bool(false));
    assert_eq!(eval("1 < 2"), Value::Bool(true));
    assert_eq!(eval("2 <= 2"), Value::Bool(true));
    assert_eq!(eval("3 > 2"), Value::Bool(true));
    assert_eq!(eval("3 >= 4"), Value::Bool(false));
    assert_eq!(eval("1 == 1 ? 'yes' : 'no'"), s("yes"));
    assert_eq!(eval("1 != 1 ? 'yes' : 'no'"), s("no"));
    assert_eq!(eval("pipeline.variables.n > 2"), Value::Bool(true));
    assert_eq!(eval("pipeline.variables.n == 3"), Value::Bool(true));
    assert_eq!(eval("pipeline.variables.flag == true"), Value::Bool(true));
    assert_eq!(eval("3 gt 2 and 1 lt 2"), Value::Bool(true));
    assert_eq!(eval("'abc' =~ 'a.c'"), Value::Bool(true));
    assert_eq!(eval("'x' =~ ['x', 'y']"), Value::Bool(true));
}

#[test]
fn string_and_list_methods() {
    assert_eq!(eval("pipeline.variables.version.contains('1.0')"), Value::Bool(true));
    assert_eq!(eval("pipeline.variables.version.startsWith('2')"), Value::Bool(true));
    assert_eq!(eval("pipeline.variables.version.endsWith('.0')"), Value::Bool(true));
    assert_eq!(eval("pipeline.variables.csv.split(',')"), Value::List(vec![s("a"), s("b"), s("c")]));
    assert_eq!(eval("pipeline.variables.csv.split(',')[1]"), s("b"));
    assert_eq!(eval("pipeline.variables.csv.split(',').length()"), Value::Int(3));
    assert_eq!(eval("pipeline.variables.csv.length()"), Value::Int(5));
    assert_eq!(eval("'abc'.toUpperCase()"), s("ABC"));
    assert_eq!(eval("'ABC'.toLowerCase()"), s("abc"));
    assert_eq!(eval("'  x '.trim()"), s("x"));
    assert_eq!(eval("'a-b-c'.replace('-', '+')"), s("a+b+c"));
    assert_eq!(eval("'abcdef'.substring(1, 3)"), s("bc"));
    assert_eq!(eval("'abcdef'.substring(4)"), s("ef"));
    assert_eq!(eval("'abcdef'.indexOf('cd')"), Value::Int(2));
    assert_eq!(eval("'abc'.indexOf('z')"), Value::Int(-1));
    assert_eq!(eval("'ab'.concat('cd')"), s("abcd"));
    assert_eq!(eval("'ab'.equals('ab')"), Value::Bool(true));
    assert_eq!(eval("pipeline.variables.csv.split(',').contains('b')"), Value::Bool(true));
    assert_eq!(eval("json.object('{\"a\": {\"b\": 2}}').a.b"), Value::Int(2));
    assert_eq!(eval("json.select('a.b', '{\"a\": {\"b\": 2}}')"), Value::Int(2));
}

#[test]
fn conditions_take_groups_as_operands() {
    let c = ctx();
    assert!(evaluate_condition("<+pipeline.variables.flag> == \"true\"", &c).unwrap());
    assert!(!evaluate_condition("<+pipeline.variables.flag> == \"false\"", &c).unwrap());
    assert!(evaluate_condition("<+pipeline.variables.n> > 2 && <+stage.status> == 'Success'", &c).unwrap());
    assert!(evaluate_condition("<+<+pipeline.variables.version>.startsWith('2')>", &c).unwrap());
    assert!(evaluate_condition("<+pipeline.variables.flag>", &c).unwrap());
}

#[test]
fn templates_mix_text_and_expressions() {
    let c = ctx();
    let t = parse_template("building <+pipeline.variables.version> for <+matrix.os>/<+matrix.node>!").unwrap();
    assert_eq!(render(&t, &c).unwrap(), "building 2.1.0 for linux/20!");
    // `>` after a segment is text: shell redirections stay.
    let t = parse_template("echo <+pipeline.variables.version> > out.txt").unwrap();
    assert_eq!(render(&t, &c).unwrap(), "echo 2.1.0 > out.txt");
    // Nested groups.
    let t = parse_template("<+<+pipeline.variables.version>.replace('.', '_')>").unwrap();
    assert_eq!(render(&t, &c).unwrap(), "2_1_0");
    let t = parse_template("<+ <+pipeline.variables.flag> == 'true' ? 'on' : 'off' >").unwrap();
    assert_eq!(render(&t, &c).unwrap(), "on");
    // Comparisons inside a group go in parentheses.
    let t = parse_template("<+(pipeline.variables.n > 2)>").unwrap();
    assert_eq!(render(&t, &c).unwrap(), "true");
    // A `>` in a string inside the group does not close it.
    let t = parse_template("<+'a>b'.length()>").unwrap();
    assert_eq!(render(&t, &c).unwrap(), "3");
    assert!(parse_template("plain text, no expressions").unwrap().is_literal());
}

#[test]
fn values_are_data_never_code() {
    let c = ctx();
    let t = parse_template("value=<+pipeline.variables.evil>").unwrap();
    assert_eq!(render(&t, &c).unwrap(), "value=<+secrets.getValue(\"x\")>");
}

#[test]
fn unresolved_reference_is_an_error_naming_the_path() {
    let c = ctx();
    let t = parse_template("deploy <+pipeline.stages.build.spec.execution.steps.compile.output.outputVariables.nope>")
        .unwrap();
    let err = render(&t, &c).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("pipeline.stages.build.spec.execution.steps.compile.output.outputVariables.nope"), "{msg}");
    assert!(matches!(err, expr::EvalError::Unresolved { .. }));
    let err = evaluate(&parse_expression("secrets.getValue('missing')").unwrap(), &c).unwrap_err();
    assert!(err.to_string().contains("missing"));
}

#[test]
fn parse_errors_are_positioned() {
    let e = parse_template("echo <+pipeline.variables.x").unwrap_err();
    assert!(e.message.contains("no closing `>`"), "{}", e.message);
    assert_eq!(e.offset, 5);
    let e = parse_template("<+>").unwrap_err();
    assert!(e.message.contains("empty expression"));
    let e = parse_expression("a +").unwrap_err();
    assert_eq!(e.offset, 3);
    let e = parse_expression("'open").unwrap_err();
    assert!(e.message.contains("unterminated string"));
    let e = parse_expression("a b").unwrap_err();
    assert!(e.message.contains("unexpected `b`"), "{}", e.message);
    let e = parse_expression(&"(".repeat(10_000)).unwrap_err();
    assert!(e.message.contains("deeper"));
    let e = parse_expression(&vec!["1"; 5000].join("+")).unwrap_err();
    assert!(e.message.contains("deeper"));
    let e = parse_expression(&"!".repeat(10_000)).unwrap_err();
    assert!(e.message.contains("deeper"));
}

#[test]
fn runtime_inputs_parse_with_every_modifier() {
    let i = parse_runtime_input("<+input>").unwrap().unwrap();
    assert_eq!(i, Default::default());
    let i = parse_runtime_input(r"<+input>.default(1.0.0).regex(^[0-9]+\.[0-9]+\.[0-9]+$)").unwrap().unwrap();
    assert_eq!(i.default.as_deref(), Some("1.0.0"));
    assert_eq!(i.regex.as_deref(), Some(r"^[0-9]+\.[0-9]+\.[0-9]+$"));
    let i = parse_runtime_input("<+input>.allowedValues(1,2,3).default(1)").unwrap().unwrap();
    assert_eq!(i.allowed_values, Some(vec!["1".into(), "2".into(), "3".into()]));
    assert_eq!(i.default.as_deref(), Some("1"));
    let i = parse_runtime_input("<+input>.allowedValues(\"a, b\", c\\,d , e).executionInput()").unwrap().unwrap();
    assert_eq!(i.allowed_values, Some(vec!["a, b".into(), "c,d".into(), "e".into()]));
    assert!(i.execution_input);
    let i = parse_runtime_input("<+input>.regex(^(dev|prod)$)").unwrap().unwrap();
    assert_eq!(i.regex.as_deref(), Some("^(dev|prod)$"));
    assert!(i.check("dev").is_ok());
    assert!(i.check("qa").is_err());
    assert_eq!(parse_runtime_input("plain").unwrap(), None);
    let t = parse_template("<+input>.default(x)").unwrap();
    assert!(matches!(t.segments.as_slice(), [Segment::Input(..)]));
    assert_eq!(t.runtime_input().unwrap().default.as_deref(), Some("x"));
}

#[test]
fn malformed_runtime_inputs_are_errors() {
    for (src, want) in [
        ("<+input>.regex([a-z)", "not a valid regular expression"),
        ("<+input>.allowedValues()", "at least one value"),
        ("<+input>.allowedValues(a,,b)", "empty value"),
        ("<+input>.default(x", "no closing `)`"),
        ("<+input>.defualt(x)", "unknown runtime input modifier"),
        ("<+input>.default(a).default(b)", "given twice"),
        ("<+input>.allowedValues(a,b).default(c)", "not one of the allowed values"),
        ("<+input>.regex(^[0-9]+$).default(abc)", "does not match"),
        ("<+input>.executionInput(x)", "takes no arguments"),
        ("prefix <+input>", "whole field value"),
        ("<+input> suffix", "unexpected text"),
    ] {
        let err = match parse_runtime_input(src) {
            Err(e) => e.message,
            Ok(_) => match parse_template(src) {
                Err(e) => e.message,
                Ok(t) => panic!("{src} parsed: {t:?}"),
            },
        };
        assert!(err.contains(want), "{src}: {err}");
    }
}

#[test]
fn references_resolve_relative_forms() {
    let scope = Scope::stage("deploy").group("g1");
    let t = parse_template(
        "<+pipeline.stages.build.spec.execution.steps.compile.output.outputVariables.artifact> <+stage.variables.r> \
         <+execution.steps.a.output.outputVariables.x> <+steps.b.output.outputVariables.y> \
         <+pipeline.variables.v.toUpperCase()> <+matrix.os> <+secrets.getValue(\"tok\")> <+json.object(<+env.name>).x>",
    )
    .unwrap();
    let refs: Vec<String> = t.references(&scope).into_iter().map(|r| r.path).collect();
    assert_eq!(
        refs,
        vec![
            "pipeline.stages.build.spec.execution.steps.compile.output.outputVariables.artifact",
            "pipeline.stages.deploy.variables.r",
            "pipeline.stages.deploy.spec.execution.steps.a.output.outputVariables.x",
            "pipeline.stages.deploy.spec.execution.steps.g1.steps.b.output.outputVariables.y",
            "pipeline.variables.v",
            "matrix.os",
            "secrets.tok",
            "env.name",
        ]
    );
    let r = &t.references(&scope)[0];
    assert_eq!(r.stage(), Some("build"));
    assert_eq!(r.root(), "pipeline");
    // Spans point into the original string.
    let src = "echo <+pipeline.stages.a.status>";
    let t = parse_template(src).unwrap();
    let r = &t.references(&Scope::default())[0];
    assert_eq!(&src[r.span.clone()], "pipeline.stages.a.status");
    let e = parse_expression("a.b ? c.d : e").unwrap();
    let refs: Vec<String> = references(&e, &Scope::default()).into_iter().map(|r| r.path).collect();
    assert_eq!(refs, vec!["a.b", "c.d", "e"]);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn template_parser_never_panics(s in "\\PC{0,80}") {
            let _ = parse_template(&s);
        }

        #[test]
        fn expression_parser_never_panics_on_expression_like_text(
            s in "[a-z<+>()\\[\\]!&|=~.,'\"0-9 ?:*/%-]{0,60}"
        ) {
            if let Ok(e) = parse_expression(&s) {
                let _ = evaluate(&e, &ctx());
            }
            let _ = parse_runtime_input(&format!("<+input>{s}"));
        }

        #[test]
        fn literal_text_round_trips(s in "[^<]{0,60}") {
            let t = parse_template(&s).unwrap();
            prop_assert_eq!(render(&t, &ctx()).unwrap(), s);
        }

        #[test]
        fn integer_arithmetic_matches_rust(a in -1000i64..1000, b in -1000i64..1000) {
            prop_assert_eq!(eval(&format!("{a} + {b}")), Value::Int(a + b));
            prop_assert_eq!(eval(&format!("{a} * {b}")), Value::Int(a * b));
            prop_assert_eq!(eval(&format!("{a} - {b}")), Value::Int(a - b));
            prop_assert_eq!(eval(&format!("({a} < {b})")), Value::Bool(a < b));
        }

        #[test]
        fn string_values_are_never_reparsed(v in "\\PC{0,40}") {
            let mut c = ctx();
            c.root = serde_json::json!({"pipeline": {"variables": {"x": v.clone()}}}).into();
            let t = parse_template("<+pipeline.variables.x>").unwrap();
            prop_assert_eq!(render(&t, &c).unwrap(), v);
        }
    }
}

/// A `<+…>` nested inside a name of a path is evaluated first and spliced in (`gr<+…>` → `grp`); its own
/// references are reported, and the path reads statically without it.
#[test]
fn nested_expressions_splice_into_a_path() {
    let c = ctx();
    let t = expr::parse_template(
        "<+pipeline.stages.build.spec.execution.steps.gr<+pipeline.variables.csv.substring(0, 0)>p.steps.inner.output.outputVariables.v>",
    )
    .unwrap();
    assert_eq!(expr::render(&t, &c).unwrap(), "deep");
    let e =
        parse_expression("pipeline.stages.build.spec.execution.steps.g<+pipeline.variables.n>.steps.t.status").unwrap();
    let refs: Vec<String> = expr::references(&e, &Scope::default()).into_iter().map(|r| r.path).collect();
    assert!(refs.contains(&"pipeline.variables.n".to_string()), "{refs:?}");
    assert!(refs.contains(&"pipeline.stages.build.spec.execution.steps.g.steps.t.status".to_string()), "{refs:?}");
    // Unbalanced: a clear error, not a panic.
    assert!(parse_expression("pipeline.stages.a<+pipeline.variables.n.steps").is_err());
}
