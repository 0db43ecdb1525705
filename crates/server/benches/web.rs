//! Web UI benchmark: a real server on loopback over a SQLite store with 100,000 executions and a 200-stage
//! pipeline (parallel blocks, dependency edges from expressions), a browser-like session
//! (log-in form, cookie), and sequential requests — one at a time, so the figures are render and serve time
//! without queueing. Prints p50 / p99 for the pipeline page, the run dialog, the run dialog's plan panel and
//! the Execution History page, next to the baseline measured in the same run: the JSON API's history page.
//! Also the first load's weight (page, stylesheet, script), plain and gzip as transferred.
//! Run: `cargo bench -p pipewright-server --bench web` (`PW_BENCH_EXECUTIONS`, `PW_BENCH_STAGES`,
//! `PW_BENCH_REQUESTS` change the size).

mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A pipeline of `n` stages: every tenth position a parallel block of three; every third stage reads the
/// output of the one three before it.
fn big_pipeline(n: usize) -> String {
    let mut y = String::from(
        "pipeline:\n  name: Big\n  identifier: big\n  projectIdentifier: default\n  orgIdentifier: default\n  allowStageExecutions: true\n  variables:\n    - name: version\n      type: String\n      value: <+input>.default(1.0.0).regex(^[0-9.]+$)\n  stages:\n",
    );
    let stage = |i: usize, indent: &str| {
        let mut script = format!("echo stage {i}");
        if i >= 3 && i.is_multiple_of(3) {
            script.push_str(&format!(
                " <+pipeline.stages.s{}.spec.execution.steps.run.output.outputVariables.out>",
                i - 3
            ));
        }
        format!(
            "{indent}- stage:\n{indent}    name: Stage {i}\n{indent}    identifier: s{i}\n{indent}    type: Custom\n{indent}    spec:\n{indent}      execution:\n{indent}        steps:\n{indent}          - step:\n{indent}              type: ShellScript\n{indent}              name: run\n{indent}              identifier: run\n{indent}              spec:\n{indent}                shell: Bash\n{indent}                outputVariables:\n{indent}                  - name: out\n{indent}                    type: String\n{indent}                    value: out\n{indent}                source:\n{indent}                  type: Inline\n{indent}                  spec:\n{indent}                    script: out=1; {script}\n"
        )
    };
    let mut i = 0;
    while i < n {
        if i % 10 == 5 && i + 3 <= n {
            y.push_str("    - parallel:\n");
            for k in 0..3 {
                y.push_str(&stage(i + k, "        "));
            }
            i += 3;
        } else {
            y.push_str(&stage(i, "    "));
            i += 1;
        }
    }
    y
}

struct Sample {
    name: &'static str,
    lat: Vec<Duration>,
}

impl Sample {
    fn pct(&self, p: f64) -> f64 {
        self.lat[((self.lat.len() as f64 * p) as usize).min(self.lat.len() - 1)].as_secs_f64() * 1000.0
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let n = env("PW_BENCH_EXECUTIONS", 100_000);
    let stages = env("PW_BENCH_STAGES", 200) as usize;
    let requests = env("PW_BENCH_REQUESTS", 300) as usize;
    let dir = tempfile::tempdir().unwrap();
    let store = common::seeded(dir.path(), n).await;

    let password = "bench-password-1";
    let config = server::Config {
        admin_password: Some(password.into()),
        lease: Duration::from_secs(30 * 86_400),
        ..server::Config::new(dir.path().to_path_buf())
    };
    let (app, _) = server::start(store.clone(), config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve(app, listener, async {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // An API token (the baseline) and a web session, as a person gets them.
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let yaml = big_pipeline(stages);
    let r = client
        .post(format!("{base}/api/v1/orgs/default/projects/default/pipelines"))
        .bearer_auth(&token)
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let page = client.get(format!("{base}/login")).send().await.unwrap();
    let login_cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| v.to_str().ok()?.strip_prefix("pw_login_csrf=")?.split(';').next().map(String::from))
        .unwrap();
    let r = client
        .post(format!("{base}/login"))
        .header("cookie", format!("pw_login_csrf={login_cookie}"))
        .form(&[("csrf", login_cookie.as_str()), ("username", "admin"), ("password", password), ("next", "/")])
        .send()
        .await
        .unwrap();
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| v.to_str().ok()?.strip_prefix("pw_session=")?.split(';').next().map(String::from))
        .unwrap();
    let cookie = format!("pw_session={session}");
    let home = client.get(format!("{base}/")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    let at = home.find("name=\"csrf-token\" content=\"").unwrap() + 27;
    let csrf = home[at..at + 64].to_string();

    let pipeline = format!("{base}/orgs/default/projects/default/pipelines/big");
    let plan_form: Vec<(String, String)> = vec![
        ("csrf".into(), csrf.clone()),
        ("scope".into(), "stages".into()),
        ("stage".into(), format!("s{}", stages - 1)),
        ("stage".into(), "s150".into()),
        ("need.s147".into(), "run".into()),
    ];
    let mut samples = Vec::new();
    for (name, kind) in [
        ("baseline: JSON API history page (50 of 100k)", 0),
        ("pipeline page (200 stages)", 1),
        ("run dialog (200 stages)", 2),
        ("run dialog plan panel (POST)", 3),
        ("Execution History page (50 of 100k)", 4),
        ("Execution History, pipeline + status filters", 5),
        ("JSON API history, pipeline + status filters", 6),
    ] {
        let mut lat = Vec::with_capacity(requests);
        for i in 0..requests + 10 {
            let req = match kind {
                0 => client.get(format!("{base}/api/v1/orgs/default/projects/default/executions")).bearer_auth(&token),
                1 => client.get(&pipeline).header("cookie", &cookie),
                2 => client.get(format!("{pipeline}/run")).header("cookie", &cookie),
                3 => client.post(format!("{pipeline}/plan")).header("cookie", &cookie).form(&plan_form),
                4 => client.get(format!("{base}/orgs/default/projects/default/executions")).header("cookie", &cookie),
                5 => client
                    .get(format!("{base}/orgs/default/projects/default/executions?pipeline=bench&status=Queued"))
                    .header("cookie", &cookie),
                _ => client
                    .get(format!("{base}/api/v1/orgs/default/projects/default/executions?pipeline=bench&status=Queued"))
                    .bearer_auth(&token),
            };
            let t = Instant::now();
            let r = req.send().await.unwrap();
            assert!(r.status().is_success(), "{name}: {}", r.status());
            let _ = r.bytes().await.unwrap();
            if i >= 10 {
                lat.push(t.elapsed());
            }
        }
        lat.sort();
        samples.push(Sample { name, lat });
    }
    let base_p50 = samples[0].pct(0.5);
    for s in &samples {
        println!(
            "{:<48} p50 {:>7.2} ms  p99 {:>7.2} ms  ({:.2}× the baseline's p50)",
            s.name,
            s.pct(0.5),
            s.pct(0.99),
            s.pct(0.5) / base_p50
        );
    }

    // The first load: the pipeline page, the stylesheet and the script, plain and gzip.
    let mut plain = 0;
    let mut gzip = 0;
    for url in [pipeline.clone(), format!("{base}/assets/app.css"), format!("{base}/assets/app.js")] {
        let full = client.get(&url).header("cookie", &cookie).send().await.unwrap().bytes().await.unwrap().len();
        let r = client.get(&url).header("cookie", &cookie).header("accept-encoding", "gzip").send().await.unwrap();
        let zipped = r.bytes().await.unwrap().len();
        plain += full;
        gzip += zipped;
    }
    println!(
        "first load of the pipeline page (page + CSS + JS): {:.1} KB plain, {:.1} KB transferred with gzip",
        plain as f64 / 1024.0,
        gzip as f64 / 1024.0
    );
    let _ = stop_tx.send(());
    let _ = serving.await;
}
