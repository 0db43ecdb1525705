//! Benchmark: `pipewright run` of a generated pipeline of 10 stages × 20 steps of `true` against the same DAG
//! as a Makefile run by `make -j2`, wall time over several runs (median), the per-step overhead, and the
//! peak RSS of the `pipewright` process. Every state change is persisted, as in any run. Steps run confined
//! (the default) and, in the same run, with `--step-isolation none`, to measure what isolation costs per step.
//! Run with `cargo bench -p pipewright --bench run_vs_make`.

use std::process::Command;
use std::time::{Duration, Instant};

const STAGES: usize = 10;
const STEPS: usize = 20;
const RUNS: usize = 5;

fn pipeline() -> String {
    let mut s = String::from("pipeline:\n  name: Bench\n  identifier: bench\n  stages:\n");
    for i in 0..STAGES {
        s.push_str(&format!(
            "    - stage:\n        name: s{i}\n        identifier: s{i}\n        type: Custom\n        spec:\n          execution:\n            steps:\n"
        ));
        for j in 0..STEPS {
            s.push_str(&format!(
                "              - step:\n                  type: ShellScript\n                  name: t{j}\n                  identifier: t{j}\n                  spec:\n                    shell: Sh\n                    source:\n                      type: Inline\n                      spec:\n                        script: \"true\"\n"
            ));
        }
    }
    s
}

fn makefile() -> String {
    let mut s = String::from(".PHONY: all\nall: s9_t19\n");
    let mut prev: Option<String> = None;
    for i in 0..STAGES {
        for j in 0..STEPS {
            let t = format!("s{i}_t{j}");
            s.push_str(&format!(
                ".PHONY: {t}\n{t}:{}\n\ttrue\n",
                prev.as_ref().map(|p| format!(" {p}")).unwrap_or_default()
            ));
            prev = Some(t);
        }
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn max_rss_kib_of_children() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).map_or(0, |u| u.max_rss())
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("pipeline.yaml"), pipeline()).expect("write pipeline");
    std::fs::write(dir.path().join("Makefile"), makefile()).expect("write Makefile");
    let bin = env!("CARGO_BIN_EXE_pipewright");

    let mut make_times = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let ok = Command::new("make")
            .args(["-s", "-j2", "-f", "Makefile", "all"])
            .current_dir(dir.path())
            .status()
            .expect("make");
        assert!(ok.success());
        make_times.push(t.elapsed());
    }
    let rss_before = max_rss_kib_of_children();
    // The default (steps confined by Landlock through the launcher, as the step user under root) and, in the
    // same run, `--step-isolation none`: the difference is what isolation costs per step spawn.
    let run = |isolation: &str, r: usize| {
        let t = Instant::now();
        let out = Command::new(bin)
            .args(["run", "pipeline.yaml", "--output", "json", "--step-isolation", isolation, "--state-dir"])
            .arg(dir.path().join(format!("state-{isolation}{r}")))
            .current_dir(dir.path())
            .output()
            .expect("pipewright");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        t.elapsed()
    };
    let mut pw_times = Vec::new();
    let mut bare_times = Vec::new();
    for r in 0..RUNS {
        pw_times.push(run("landlock", r));
        bare_times.push(run("none", r));
    }
    let rss = max_rss_kib_of_children();
    let (m, p, bare) = (median(make_times), median(pw_times), median(bare_times));
    let steps = (STAGES * STEPS) as f64;
    println!("DAG: {STAGES} stages x {STEPS} steps of `true`, median of {RUNS} runs");
    println!("make -j2:        {:>8.1} ms", m.as_secs_f64() * 1e3);
    println!("pipewright run:  {:>8.1} ms  ({:.2}x make)", p.as_secs_f64() * 1e3, p.as_secs_f64() / m.as_secs_f64());
    println!(
        "per-step:        {:>8.2} ms pipewright, {:.2} ms make, {:.2} ms overhead",
        p.as_secs_f64() * 1e3 / steps,
        m.as_secs_f64() * 1e3 / steps,
        (p.as_secs_f64() - m.as_secs_f64()) * 1e3 / steps
    );
    println!(
        "isolation:       {:>8.1} ms without (--step-isolation none); confinement (namespaces, own root, Landlock) costs {:.2} ms per step spawn ({:.2}x)",
        bare.as_secs_f64() * 1e3,
        (p.as_secs_f64() - bare.as_secs_f64()) * 1e3 / steps,
        p.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "peak RSS of pipewright: {:.1} MiB{}",
        rss as f64 / 1024.0,
        if rss_before >= rss { " (at most; a make child was larger)" } else { "" }
    );
}
