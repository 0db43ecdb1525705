//! Looping strategies expanded into iterations, as a pure function: a `matrix` (every combination of its
//! axes, less the `exclude`d ones), a `repeat` (over `items`, or `times` times) or a `parallelism` count
//! becomes the list of iterations the engine runs, each with its suffix (`id_0`, `id_1`, …) and the values
//! its expressions read (`<+matrix.axis>`, `<+repeat.item>`, `<+strategy.iteration>`,
//! `<+strategy.iterations>`). The engine evaluates the strategy's expressions first ([`items`] reads a
//! rendered value as a list) and hands the result here.

use expr::Value;
use std::collections::BTreeMap;

/// A looping strategy with its expressions evaluated.
#[derive(Debug, Clone, PartialEq)]
pub enum Looping {
    /// No strategy: the node runs once, without a suffix.
    Once,
    /// `parallelism: n`.
    Parallelism(usize),
    /// `repeat`: one iteration per item (`None` items for `times`).
    Repeat(Vec<Option<Value>>),
    /// `matrix`: the axes in order, and the combinations to leave out.
    Matrix {
        /// Axis name → its values.
        axes: Vec<(String, Vec<Value>)>,
        /// Partial combinations to exclude.
        exclude: Vec<BTreeMap<String, Value>>,
    },
}

/// One iteration of a looping node.
#[derive(Debug, Clone, PartialEq)]
pub struct Iteration {
    /// `Some(i)`: the node runs as `id_i`; `None`: as itself (no strategy).
    pub suffix: Option<usize>,
    /// The values its expressions read, on top of the node's own.
    pub local: BTreeMap<String, Value>,
    /// A matrix iteration's values, axis by axis as the YAML lists them (`jdk: 17, os: linux`): how it is
    /// shown.
    pub label: Option<String>,
}

/// What one iteration of a Deployment stage with several services or environments deploys: a service (none:
/// the stage's own `service`) to an environment's infrastructure (none: the stage's own `environment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The service's identifier.
    pub service: Option<String>,
    /// The environment's identifier and the infrastructure definition's.
    pub env: Option<(String, String)>,
}

impl Target {
    /// How the iteration is named: `checkout → dev / dev_cluster`.
    pub fn label(&self) -> String {
        match (&self.service, &self.env) {
            (Some(s), Some((e, i))) => format!("{s} → {e} / {i}"),
            (Some(s), None) => s.clone(),
            (None, Some((e, i))) => format!("{e} / {i}"),
            (None, None) => String::new(),
        }
    }
}

/// Every service deployed to every infrastructure of every environment, services outermost (as Harness
/// orders them). `services` empty: the stage's one service; `envs` empty: its one environment.
pub fn targets(services: &[String], envs: &[(String, Vec<String>)]) -> Vec<Target> {
    let services: Vec<Option<String>> =
        if services.is_empty() { vec![None] } else { services.iter().cloned().map(Some).collect() };
    let places: Vec<Option<(String, String)>> = if envs.is_empty() {
        vec![None]
    } else {
        envs.iter().flat_map(|(e, infras)| infras.iter().map(move |i| Some((e.clone(), i.clone())))).collect()
    };
    services.iter().flat_map(|s| places.iter().map(move |p| Target { service: s.clone(), env: p.clone() })).collect()
}

/// How far looping strategies may expand: counted before anything is expanded, so that a runtime input
/// feeding a matrix cannot make the engine materialise a billion iterations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Iterations of one node (a matrix's combinations before `exclude`, repeat items, parallelism).
    pub iterations: usize,
    /// Nodes one execution may create through its strategies (each iteration with the nodes inside it).
    pub nodes: usize,
    /// Stages (stage iterations included) one execution runs at once, whatever its parallel blocks and
    /// `maxConcurrency` say: each running stage holds a network of its own and its steps' processes. The
    /// others wait, `Queued`, for a slot.
    pub stages_at_once: usize,
}

/// The default of [`Limits::stages_at_once`].
pub const STAGES_AT_ONCE: usize = 32;

impl Default for Limits {
    fn default() -> Self {
        Limits { iterations: spec::MAX_ITERATIONS, nodes: 100_000, stages_at_once: STAGES_AT_ONCE }
    }
}

/// How many iterations a strategy has before `exclude` (the product of the axes, never materialised).
pub fn count(l: &Looping) -> u128 {
    match l {
        Looping::Once => 1,
        Looping::Parallelism(n) => *n as u128,
        Looping::Repeat(items) => items.len() as u128,
        Looping::Matrix { axes, .. } => axes.iter().fold(1u128, |n, (_, v)| n.saturating_mul(v.len() as u128)),
    }
}

/// How many nodes one run of `els` creates (steps and step groups, parallel blocks looked through); nested
/// strategies count once here and are counted again when they expand.
pub fn nodes_within(els: &[spec::ExecutionElement]) -> usize {
    els.iter()
        .map(|e| match e {
            spec::ExecutionElement::Step(_) => 1,
            spec::ExecutionElement::StepGroup(g) => 1 + nodes_within(&g.steps),
            spec::ExecutionElement::Parallel(p) => nodes_within(p),
        })
        .sum()
}

/// The nodes `count` iterations of `per_iteration` nodes each add to an execution that has `used` of its
/// budget of `limit` already, or why they do not fit: decided before anything is expanded, so that a
/// strategy over the budget costs nothing.
pub fn admit(count: u128, per_iteration: usize, used: usize, limit: usize) -> Result<usize, LoopError> {
    let more = count.saturating_mul(per_iteration.max(1) as u128);
    match usize::try_from(more) {
        Ok(more) if used.saturating_add(more) <= limit => Ok(more),
        _ => Err(LoopError::TooManyNodes { limit }),
    }
}

/// Why a strategy has no iterations to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoopError {
    /// Every combination was excluded.
    #[error("the matrix has no combinations left after `exclude`")]
    NothingLeft,
    /// The strategy has more iterations than a node may have.
    #[error(
        "the looping strategy has {count} iterations, more than the {limit} a node may have; use fewer values (a server sets the limit with --max-iterations)"
    )]
    TooMany {
        /// Its iterations (before `exclude`).
        count: u128,
        /// The limit.
        limit: usize,
    },
    /// The execution's strategies together create more nodes than one execution may have.
    #[error(
        "the looping strategies of this execution would create more than {limit} nodes; use fewer iterations (a server sets the limit with --max-nodes)"
    )]
    TooManyNodes {
        /// The limit.
        limit: usize,
    },
}

/// The iterations of a strategy, each with `local` plus what its iteration reads; refused when the strategy
/// counts more than `max` iterations.
pub fn expand(l: &Looping, local: &BTreeMap<String, Value>, max: usize) -> Result<Vec<Iteration>, LoopError> {
    let count = count(l);
    if count > max as u128 {
        return Err(LoopError::TooMany { count, limit: max });
    }
    let with = |mut vars: BTreeMap<String, Value>, i: usize, n: usize| {
        vars.insert(
            "strategy".into(),
            Value::Map(BTreeMap::from([
                ("iteration".to_string(), Value::Int(i as i64)),
                ("iterations".to_string(), Value::Int(n as i64)),
                // The suffix of the iteration's identifier (`build_0`): `<+strategy.identifierPostFix>`.
                ("identifierPostFix".to_string(), Value::String(format!("_{i}"))),
            ])),
        );
        Iteration { suffix: Some(i), local: vars, label: None }
    };
    Ok(match l {
        Looping::Once => vec![Iteration { suffix: None, local: local.clone(), label: None }],
        Looping::Parallelism(n) => (0..*n).map(|i| with(local.clone(), i, *n)).collect(),
        Looping::Repeat(items) => {
            let n = items.len();
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let mut vars = local.clone();
                    if let Some(item) = item {
                        vars.insert("repeat".into(), Value::Map(BTreeMap::from([("item".to_string(), item.clone())])));
                    }
                    with(vars, i, n)
                })
                .collect()
        }
        Looping::Matrix { axes, exclude } => {
            let mut combos: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new()];
            for (axis, values) in axes {
                combos = combos
                    .iter()
                    .flat_map(|c| {
                        values.iter().map(move |v| {
                            let mut c = c.clone();
                            c.insert(axis.clone(), v.clone());
                            c
                        })
                    })
                    .collect();
            }
            combos.retain(|c| {
                !exclude.iter().any(|ex| ex.iter().all(|(k, v)| c.get(k).is_some_and(|cv| cv.loose_eq(v))))
            });
            if combos.is_empty() {
                return Err(LoopError::NothingLeft);
            }
            let n = combos.len();
            combos
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let label = axes
                        .iter()
                        .filter_map(|(axis, _)| c.get(axis).map(|v| format!("{axis}: {v}")))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let mut vars = local.clone();
                    vars.insert("matrix".into(), Value::Map(c));
                    Iteration { label: Some(label), ..with(vars, i, n) }
                })
                .collect()
        }
    })
}

/// A rendered axis or `items` value read as a list: a list as it is; text holding a JSON array as that array;
/// other text split at commas (`a, b, c`); anything else as a list of one.
pub fn items(v: Value) -> Vec<Value> {
    match v {
        Value::List(l) => l,
        Value::String(s) => match serde_json::from_str::<serde_json::Value>(&s) {
            Ok(serde_json::Value::Array(a)) => a.into_iter().map(Value::from).collect(),
            _ => s.split(',').map(|x| Value::String(x.trim().to_string())).collect(),
        },
        other => vec![other],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_budget_is_decided_before_expanding() {
        let cases = [
            (10, 2, 0, 100, Ok(20)),
            (50, 2, 0, 100, Ok(100)),
            (50, 2, 1, 100, Err(LoopError::TooManyNodes { limit: 100 })),
            // 5000 stage iterations fit, each one's 5000 step iterations do not once a few have run.
            (5000, 1, 99_000, 100_000, Err(LoopError::TooManyNodes { limit: 100_000 })),
            (u128::MAX, 3, 0, usize::MAX, Err(LoopError::TooManyNodes { limit: usize::MAX })),
            (1, 0, 0, 1, Ok(1)),
        ];
        for (count, per, used, limit, want) in cases {
            assert_eq!(admit(count, per, used, limit), want, "{count} × {per} with {used} of {limit}");
        }
    }

    #[test]
    fn targets_are_services_times_infrastructures() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let e = |v: &[(&str, &[&str])]| v.iter().map(|(e, i)| (e.to_string(), s(i))).collect::<Vec<_>>();
        type Case<'a> = (Vec<String>, Vec<(String, Vec<String>)>, &'a [&'a str]);
        let cases: &[Case] = &[
            (s(&["api", "web"]), vec![], &["api", "web"]),
            (vec![], e(&[("dev", &["k1", "k2"]), ("qa", &["k3"])]), &["dev / k1", "dev / k2", "qa / k3"]),
            (
                s(&["api", "web"]),
                e(&[("dev", &["k1"]), ("qa", &["k3"])]),
                &["api → dev / k1", "api → qa / k3", "web → dev / k1", "web → qa / k3"],
            ),
            (s(&["api"]), e(&[("dev", &[])]), &[]),
        ];
        for (services, envs, want) in cases {
            let got: Vec<String> = targets(services, envs).iter().map(Target::label).collect();
            assert_eq!(got, *want, "{services:?} {envs:?}");
        }
    }

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }

    /// The iterations as `suffix: matrix / repeat values, iteration of iterations`.
    fn show(its: &[Iteration]) -> Vec<String> {
        its.iter()
            .map(|it| {
                let vars: Vec<String> = it
                    .local
                    .iter()
                    .filter(|(k, _)| *k != "strategy")
                    .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
                    .collect();
                let st = &it.local.get("strategy");
                let pos = st.map_or(String::new(), |m| {
                    format!(
                        " {}/{}",
                        serde_json::to_string(m.get("iteration").unwrap()).unwrap(),
                        serde_json::to_string(m.get("iterations").unwrap()).unwrap()
                    )
                });
                format!("{:?}:{}{pos}", it.suffix, vars.join(" "))
            })
            .collect()
    }

    /// A case: its name, the strategy, the iterations it expands to (as [`show`] writes them) or the error.
    type Case = (&'static str, Looping, Result<Vec<&'static str>, LoopError>);

    #[test]
    fn expansions() {
        let base = BTreeMap::from([("service".to_string(), s("checkout"))]);
        let matrix = |exclude: Vec<BTreeMap<String, Value>>| Looping::Matrix {
            axes: vec![
                ("db".into(), vec![s("postgres"), s("mysql")]),
                ("shard".into(), vec![Value::Int(1), Value::Int(2)]),
            ],
            exclude,
        };
        let cases: Vec<Case> = vec![
            ("no strategy", Looping::Once, Ok(vec![r#"None:service="checkout""#])),
            (
                "parallelism",
                Looping::Parallelism(2),
                Ok(vec![r#"Some(0):service="checkout" 0/2"#, r#"Some(1):service="checkout" 1/2"#]),
            ),
            ("parallelism 0 runs nothing", Looping::Parallelism(0), Ok(vec![])),
            (
                "repeat items",
                Looping::Repeat(vec![Some(s("eu")), Some(s("us"))]),
                Ok(vec![
                    r#"Some(0):repeat={"item":"eu"} service="checkout" 0/2"#,
                    r#"Some(1):repeat={"item":"us"} service="checkout" 1/2"#,
                ]),
            ),
            ("repeat times", Looping::Repeat(vec![None]), Ok(vec![r#"Some(0):service="checkout" 0/1"#])),
            (
                "matrix: every combination, first axis slowest",
                matrix(vec![]),
                Ok(vec![
                    r#"Some(0):matrix={"db":"postgres","shard":1} service="checkout" 0/4"#,
                    r#"Some(1):matrix={"db":"postgres","shard":2} service="checkout" 1/4"#,
                    r#"Some(2):matrix={"db":"mysql","shard":1} service="checkout" 2/4"#,
                    r#"Some(3):matrix={"db":"mysql","shard":2} service="checkout" 3/4"#,
                ]),
            ),
            (
                "matrix: exclude a partial combination (numbers match their text)",
                matrix(vec![BTreeMap::from([("db".to_string(), s("mysql")), ("shard".to_string(), s("2"))])]),
                Ok(vec![
                    r#"Some(0):matrix={"db":"postgres","shard":1} service="checkout" 0/3"#,
                    r#"Some(1):matrix={"db":"postgres","shard":2} service="checkout" 1/3"#,
                    r#"Some(2):matrix={"db":"mysql","shard":1} service="checkout" 2/3"#,
                ]),
            ),
            (
                "matrix: exclude everything",
                matrix(vec![
                    BTreeMap::from([("db".to_string(), s("postgres"))]),
                    BTreeMap::from([("db".to_string(), s("mysql"))]),
                ]),
                Err(LoopError::NothingLeft),
            ),
            ("parallelism over the limit", Looping::Parallelism(11), Err(LoopError::TooMany { count: 11, limit: 10 })),
            (
                "repeat over the limit",
                Looping::Repeat(vec![None; 11]),
                Err(LoopError::TooMany { count: 11, limit: 10 }),
            ),
            (
                "a matrix is counted before exclude",
                Looping::Matrix {
                    axes: vec![("a".into(), vec![s("1"); 4]), ("b".into(), vec![s("2"); 3])],
                    exclude: vec![BTreeMap::from([("a".to_string(), s("1"))])],
                },
                Err(LoopError::TooMany { count: 12, limit: 10 }),
            ),
        ];
        for (name, l, want) in cases {
            let got = expand(&l, &base, 10).map(|its| show(&its));
            let want = want.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_billion_combinations_are_counted_not_built() {
        let axis = |n: usize| (0..n).map(|i| Value::Int(i as i64)).collect::<Vec<_>>();
        let l = Looping::Matrix {
            axes: vec![("x".into(), axis(1000)), ("y".into(), axis(1000)), ("z".into(), axis(1000))],
            exclude: vec![],
        };
        assert_eq!(count(&l), 1_000_000_000);
        let limit = Limits::default().iterations;
        assert_eq!(expand(&l, &BTreeMap::new(), limit), Err(LoopError::TooMany { count: 1_000_000_000, limit }));
        // Axes whose product overflows are counted as the largest number, still refused.
        let huge = Looping::Matrix { axes: (0..20).map(|i| (format!("a{i}"), axis(1000))).collect(), exclude: vec![] };
        assert_eq!(count(&huge), u128::MAX);
    }

    #[test]
    fn items_of_rendered_values() {
        let cases: Vec<(Value, Vec<Value>)> = vec![
            (Value::List(vec![s("a"), s("b")]), vec![s("a"), s("b")]),
            (s(r#"["eu", "us"]"#), vec![s("eu"), s("us")]),
            (s("eu, us ,ap"), vec![s("eu"), s("us"), s("ap")]),
            (s("single"), vec![s("single")]),
            (Value::Int(3), vec![Value::Int(3)]),
        ];
        for (v, want) in cases {
            assert_eq!(items(v.clone()), want, "{v:?}");
        }
    }
}
