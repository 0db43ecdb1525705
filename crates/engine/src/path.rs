//! Where a node is, made in one place: [`NodePath`] gives a node's store path (`build_0.tests.unit_1`), its
//! place in the value tree that expressions read (`pipeline.stages.build_0.spec.execution.steps.tests.steps
//! .unit_1`), and the YAML owner its `.executionInput()` fields name (`pipeline.stages.build.spec.execution
//! .steps.tests.steps.unit`, without iteration suffixes).

/// One level of a path: an element's identifier and, for an iteration of its looping strategy, its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seg {
    /// The identifier the YAML gives.
    pub id: String,
    /// The iteration (`id_0`, `id_1`, …).
    pub iteration: Option<usize>,
}

impl Seg {
    /// An element, not an iteration.
    pub fn new(id: &str) -> Seg {
        Seg { id: id.to_string(), iteration: None }
    }

    /// The identifier the node has: `id`, or `id_i` for iteration `i`.
    pub fn name(&self) -> String {
        match self.iteration {
            Some(i) => format!("{}_{i}", self.id),
            None => self.id.clone(),
        }
    }
}

/// A node's place: its stage (iteration), whether it is in the rollback steps, and the step groups and step
/// below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePath {
    /// The stage.
    pub stage: Seg,
    /// In the stage's `rollbackSteps`.
    pub rollback: bool,
    /// Step groups, then the step; empty for the stage itself.
    pub inner: Vec<Seg>,
}

impl NodePath {
    /// A stage, or an iteration of it.
    pub fn stage(id: &str, iteration: Option<usize>) -> NodePath {
        NodePath { stage: Seg { id: id.to_string(), iteration }, rollback: false, inner: Vec::new() }
    }

    /// The stage's rollback steps.
    pub fn rollback(&self) -> NodePath {
        NodePath { stage: self.stage.clone(), rollback: true, inner: Vec::new() }
    }

    /// An element inside this one (a step group, a step), or an iteration of it.
    pub fn child(&self, id: &str, iteration: Option<usize>) -> NodePath {
        let mut p = self.clone();
        p.inner.push(Seg { id: id.to_string(), iteration });
        p
    }

    /// The path stored with the node: identifiers with their iteration suffixes, joined by `.`, `rollback`
    /// after the stage for its rollback steps.
    pub fn store(&self) -> String {
        let mut out = self.stage.name();
        if self.rollback {
            out.push_str(".rollback");
        }
        for s in &self.inner {
            out.push('.');
            out.push_str(&s.name());
        }
        out
    }

    /// Where its values are in the tree expressions read.
    pub fn tree(&self) -> Vec<String> {
        let mut p = vec!["pipeline".to_string(), "stages".into(), self.stage.name()];
        if self.inner.is_empty() && !self.rollback {
            return p;
        }
        p.extend(["spec".to_string(), "execution".to_string()]);
        if self.inner.is_empty() {
            // A pipeline rollback's node of the stage: its rollback steps as a whole.
            p.push("rollbackSteps".into());
        }
        for (i, s) in self.inner.iter().enumerate() {
            p.push(match (i, self.rollback) {
                (0, true) => "rollbackSteps".into(),
                _ => "steps".into(),
            });
            p.push(s.name());
        }
        p
    }

    /// The YAML path of the element (no iteration suffixes): what `.executionInput()` fields name as their
    /// owner.
    pub fn owner(&self) -> String {
        let mut out = format!("pipeline.stages.{}", self.stage.id);
        if self.inner.is_empty() {
            return out;
        }
        out.push_str(if self.rollback { ".spec.execution.rollbackSteps" } else { ".spec.execution.steps" });
        for (i, s) in self.inner.iter().enumerate() {
            if i > 0 {
                out.push_str(".steps");
            }
            out.push('.');
            out.push_str(&s.id);
        }
        out
    }

    /// A stored path read back, each level taken as the identifier it shows (an iteration's suffix stays in
    /// it): enough for the tree, whose paths carry the suffixes too.
    pub fn from_store(path: &str) -> NodePath {
        let mut parts = path.split('.');
        let stage = Seg::new(parts.next().unwrap_or_default());
        let mut rest: Vec<&str> = parts.collect();
        let rollback = rest.first() == Some(&"rollback");
        if rollback {
            rest.remove(0);
        }
        NodePath { stage, rollback, inner: rest.into_iter().map(Seg::new).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_path_three_spellings() {
        let build = NodePath::stage("build", Some(0));
        let cases = [
            (NodePath::stage("build", None), "build", "pipeline.stages.build", "pipeline.stages.build"),
            (build.clone(), "build_0", "pipeline.stages.build_0", "pipeline.stages.build"),
            (
                build.child("tests", None).child("unit", Some(1)),
                "build_0.tests.unit_1",
                "pipeline.stages.build_0.spec.execution.steps.tests.steps.unit_1",
                "pipeline.stages.build.spec.execution.steps.tests.steps.unit",
            ),
            (
                NodePath::stage("deploy", None).child("canary", Some(2)).child("verify", None),
                "deploy.canary_2.verify",
                "pipeline.stages.deploy.spec.execution.steps.canary_2.steps.verify",
                "pipeline.stages.deploy.spec.execution.steps.canary.steps.verify",
            ),
            (
                NodePath::stage("deploy", None).rollback(),
                "deploy.rollback",
                "pipeline.stages.deploy.spec.execution.rollbackSteps",
                "pipeline.stages.deploy",
            ),
            (
                NodePath::stage("deploy", None).rollback().child("undo", None),
                "deploy.rollback.undo",
                "pipeline.stages.deploy.spec.execution.rollbackSteps.undo",
                "pipeline.stages.deploy.spec.execution.rollbackSteps.undo",
            ),
            (
                NodePath::stage("deploy", None).rollback().child("g", None).child("undo", None),
                "deploy.rollback.g.undo",
                "pipeline.stages.deploy.spec.execution.rollbackSteps.g.steps.undo",
                "pipeline.stages.deploy.spec.execution.rollbackSteps.g.steps.undo",
            ),
        ];
        for (p, store, tree, owner) in cases {
            assert_eq!(p.store(), store);
            assert_eq!(p.tree().join("."), tree, "{store}");
            assert_eq!(p.owner(), owner, "{store}");
            // Read back from the store, it lands at the same place in the tree.
            assert_eq!(NodePath::from_store(store).tree(), p.tree(), "{store}");
        }
    }
}
