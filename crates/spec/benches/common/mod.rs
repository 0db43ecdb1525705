//! The generated pipelines the spec benchmarks read.

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
