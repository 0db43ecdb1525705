// The web UI, end to end, in headless Chromium (playwright-core, Debian's chromium). Started by
// tests/browser.rs, which runs a real `pipewright serve` and sets up the data; the flows here are the ones a
// release engineer follows: log in, turn on selective execution, run one stage, run a dependent stage with
// what it needs, watch a log line arrive, re-run a stage from the history, retry, approve — and a viewer who
// may not run anything. Every wait is for something on the page; nothing sleeps.
import { chromium } from "playwright-core";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const base = process.env.BASE_URL;
const gates = process.env.GATES;
const shots = process.env.SCREENSHOTS;
const P = "/orgs/default/projects/checkout";
let failures = 0;

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok - ${name}`);
  } catch (e) {
    failures += 1;
    await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
    console.log(`  at ${page.url()}`);
    console.log(`not ok - ${name}\n  ${String(e.stack || e).split("\n").join("\n  ")}`);
    throw e;
  }
}

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function login(page, user, password) {
  await page.goto(`${base}/`);
  await page.waitForURL(/\/login/);
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL(`${base}/`);
}

/** Press Tab until `locator` has the focus (it must be reachable by keyboard), and check the focus shows. */
async function tabTo(page, locator, max = 80) {
  const el = await locator.elementHandle();
  for (let i = 0; i < max; i++) {
    await page.keyboard.press("Tab");
    if (await el.evaluate((e) => e === document.activeElement)) {
      const outline = await el.evaluate((e) => getComputedStyle(e).outlineStyle);
      assert(outline !== "none", "the focus is visible");
      return;
    }
  }
  throw new Error(`not reachable with Tab: ${locator}`);
}

/** Wait until the execution page shows a final status (the page reloads itself at the end). */
async function waitFinal(page, status) {
  await page.locator(`#execution[data-final="true"] #exec-status .badge`).waitFor({ timeout: 60_000 });
  const shown = await page.locator("#exec-status .badge").textContent();
  assert(shown === status, `expected ${status}, the page shows ${shown}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(e.message));

try {
  await check("log in with the form, and a wrong password is refused", async () => {
    await page.goto(`${base}${P}`);
    await page.waitForURL(/\/login\?next=/);
    await page.getByLabel("User name").fill("admin");
    await page.getByLabel("Password").fill("not-the-password");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByText("Wrong user name or password.").waitFor();
    await page.getByLabel("Password").fill(process.env.ADMIN_PASSWORD);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(`${base}${P}`);
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === "pw_session");
    assert(session && session.httpOnly && session.sameSite === "Strict", "HttpOnly, SameSite=Strict session cookie");
  });

  await check("navigate organizations → projects → pipelines with breadcrumbs", async () => {
    await page.goto(`${base}/`);
    await page.getByRole("link", { name: "Default" }).first().click();
    await page.getByRole("link", { name: "Checkout" }).click();
    await page.getByRole("link", { name: "Build Test Deploy" }).click();
    await page.waitForURL(`${base}${P}/pipelines/build_test_deploy`);
    const crumbs = await page.locator("nav[aria-label=Breadcrumb] li").allTextContents();
    assert(crumbs.join(" / ") === "Organizations / Default / Checkout / Build Test Deploy", crumbs.join(" / "));
    // The graph: five stages, the dependency arcs labelled with what they carry.
    assert((await page.locator("svg.stage-graph g.stage").count()) === 5, "five stages drawn");
    const labels = await page.locator("svg.stage-graph g.dep text").allTextContents();
    assert(labels.includes("artifact") && labels.includes("url") && labels.some((l) => l.startsWith("service")), labels.join(","));
  });

  await check("with selective execution off, Stages is disabled and says why", async () => {
    await page.getByRole("link", { name: "Run", exact: true }).click();
    await page.waitForURL(/\/run$/);
    assert(await page.getByLabel("Stages", { exact: true }).isDisabled(), "Stages radio disabled");
    await page.getByText("this pipeline does not allow selective stage executions").waitFor();
  });

  await check("Advanced Options → Allow selective stage(s) executions writes allowStageExecutions", async () => {
    await page.goto(`${base}${P}/pipelines/build_test_deploy`);
    await page.getByText("Advanced Options").click();
    await page.getByLabel("Yes").check();
    await page.locator("details.advanced").getByRole("button", { name: "Save" }).click();
    await page.getByText(/Saved as version 2/).waitFor();
    const yaml = await page.getByLabel("Pipeline YAML").inputValue();
    assert(yaml.includes("allowStageExecutions: true") && !yaml.includes("allowStageExecutions: false"), "YAML updated");
    assert(yaml.includes("# A release pipeline"), "comments kept");
    await shot(page, "pipeline");
  });

  await check("the YAML editor lists problems with line and column and keeps the text", async () => {
    const area = page.getByLabel("Pipeline YAML");
    const yaml = await area.inputValue();
    await area.fill(yaml.replace("type: Custom", "type: Custon"));
    await page.locator("form[action$='/yaml']").getByRole("button", { name: "Save" }).click();
    await page.getByText("The YAML was not saved:").waitFor();
    const problem = await page.locator(".problems li").first().textContent();
    assert(/Line \d+, column \d+/.test(problem) && problem.includes("Custon"), problem);
    assert((await page.locator(".problems mark").first().textContent()).includes("Custon"), "line highlighted");
    assert((await page.getByLabel("Pipeline YAML").inputValue()).includes("Custon"), "text kept");
  });

  let unitRun;
  await check("run only an independent stage", async () => {
    await page.goto(`${base}${P}/pipelines/build_test_deploy/run`);
    await page.getByLabel("Stages", { exact: true }).check();
    await page.getByLabel("Unit Tests").check();
    await page.locator('#plan tr[data-stage="unit_tests"][data-action="run"]').waitFor();
    await page.locator('#plan tr[data-stage="build"][data-action="skip"]').waitFor();
    await page.getByRole("button", { name: "Run Pipeline" }).click();
    await page.waitForURL(/\/executions\/[0-9A-Z]+$/);
    unitRun = page.url();
    await waitFinal(page, "Success");
    const stages = await page.locator("section.stage-detail h3").allTextContents();
    assert(stages.length === 5, `five stage sections, got ${stages.length}`);
    assert(stages.find((s) => s.startsWith("Unit Tests")).includes("Success"), "unit tests succeeded");
    assert(stages.find((s) => s.startsWith("Build")).includes("Skipped"), "build skipped");
  });

  await check("keyboard only: Run → Stages → tick a stage → Run Pipeline", async () => {
    await page.goto(`${base}${P}/pipelines/build_test_deploy`);
    await tabTo(page, page.getByRole("link", { name: "Run", exact: true }));
    await page.keyboard.press("Enter");
    await page.waitForURL(/\/run$/);
    await tabTo(page, page.getByLabel("All Stages"));
    await page.keyboard.press("ArrowRight");
    assert(await page.getByLabel("Stages", { exact: true }).isChecked(), "arrow keys choose Stages");
    await tabTo(page, page.getByLabel("Build"));
    await page.keyboard.press("Space");
    await page.locator('#plan tr[data-stage="build"][data-action="run"]').waitFor();
    await tabTo(page, page.getByRole("button", { name: "Run Pipeline" }));
    await page.keyboard.press("Enter");
    await page.waitForURL(/\/executions\/[0-9A-Z]+$/);
    await waitFinal(page, "Success");
  });

  let depRun;
  await check("tick a dependent stage, see what it needs, run it with its dependency", async () => {
    await page.goto(`${base}${P}/pipelines/build_test_deploy/run`);
    await page.getByLabel("Stages", { exact: true }).check();
    await page.getByLabel("Deploy Dev").check();
    const need = page.locator('fieldset.need[data-need="build"]');
    await need.waitFor();
    const text = await need.textContent();
    assert(text.includes("pipeline.stages.build.spec.execution.steps.compile.output.outputVariables.artifact"), text);
    await page.getByText("Not ready:").waitFor();
    await shot(page, "run-dialog-needs");
    await need.getByLabel("Also run build").check();
    await page.locator('#plan tr[data-stage="build"][data-action="run"]').waitFor();
    await page.locator('#plan tr[data-stage="deploy_dev"][data-action="run"]').waitFor();
    // An input set fills the inputs it gives (the dialog says so); typing overrides it.
    const version = page.getByLabel("pipeline.variables.version");
    await page.getByLabel("release 2.1").check();
    await page.locator('label[for="input-pipeline-variables-version"]').getByText("from the input set").waitFor();
    assert((await version.inputValue()) === "2.1.0", "the input set's version");
    // The version input is checked in the browser against its regex before anything is sent.
    await version.fill("not-a-version");
    await page.getByRole("button", { name: "Run Pipeline" }).click();
    assert(!(await version.evaluate((i) => i.validity.valid)), "regex refused in the browser");
    assert(page.url().endsWith("/run"), "nothing was submitted");
    await version.fill("2.4.1");
    await page.locator('#plan tr[data-stage="deploy_dev"]').waitFor();
    await shot(page, "run-dialog");
    await page.getByRole("button", { name: "Run Pipeline" }).click();
    await page.waitForURL(/\/executions\/[0-9A-Z]+$/);
    depRun = page.url();
    await waitFinal(page, "Success");
    const log = await page.locator("pre[data-log-node]").first().textContent();
    assert(log.includes("building version 2.4.1"), log);
    const inputs = await page.locator("section[aria-labelledby=inputs-h] tbody").textContent();
    assert(/replicas\s*2\s*input set release_2_1/.test(inputs.replace(/\s+/g, " ")), inputs);
  });

  await check("watch a log line arrive while the step is still running", async () => {
    await page.goto(`${base}${P}/pipelines/live_logs/run`);
    await page.getByRole("button", { name: "Run Pipeline" }).click();
    await page.waitForURL(/\/executions\/[0-9A-Z]+$/);
    await page.locator("pre[data-log-node]").getByText("first line").waitFor({ timeout: 30_000 });
    const status = await page.locator("#exec-status .badge").textContent();
    assert(status === "Running", `still running when the line arrived (${status})`);
    assert(!(await page.locator("pre[data-log-node]").first().textContent()).includes("released"), "not released yet");
    writeFileSync(join(gates, "release"), "go");
    await waitFinal(page, "Success");
    assert((await page.locator("pre[data-log-node]").first().textContent()).includes("released"), "the rest of the log");
  });

  await check("re-run one stage from the history; the reused stage links to its source", async () => {
    await page.goto(`${base}${P}/pipelines/build_test_deploy`);
    await page.getByRole("link", { name: "Execution History" }).click();
    await page.waitForURL(/\/executions\?pipeline=build_test_deploy/);
    await shot(page, "history");
    const depId = depRun.split("/").pop();
    await page.locator(`a[href="/executions/${depId}"]`).click();
    await page.waitForURL(depRun);
    await page.getByRole("link", { name: "Re-run Stage" }).first().click();
    await page.getByLabel("Deploy Dev").check();
    await page.locator('#plan tr[data-stage="build"][data-action="reuse"]').waitFor();
    await page.getByRole("button", { name: "Re-run" }).click();
    await page.waitForURL((u) => /\/executions\/[0-9A-Z]+$/.test(u.pathname) && !u.pathname.endsWith(depId));
    await waitFinal(page, "Success");
    const reused = page.locator("#stage-build .reused a");
    assert((await reused.textContent()) === depId, "reused from the execution it re-ran");
    assert((await page.locator("ol.chain li").count()) >= 2, "the chain is shown");
    await shot(page, "execution");
    await reused.click();
    await page.waitForURL(depRun);
  });

  await check("retry a failed execution from the failed stage", async () => {
    await page.goto(`${base}${P}/pipelines/flaky_deploy/run`);
    await page.getByRole("button", { name: "Run Pipeline" }).click();
    await page.waitForURL(/\/executions\/[0-9A-Z]+$/);
    const failed = page.url();
    await waitFinal(page, "Failed");
    writeFileSync(join(gates, "fixed"), "yes");
    await page.getByRole("button", { name: "Retry" }).click();
    await page.waitForURL((u) => u.href !== failed && /\/executions\/[0-9A-Z]+$/.test(u.pathname));
    await waitFinal(page, "Success");
    assert((await page.locator("#stage-prepare .reused").count()) === 1, "prepare reused, not run again");
    assert((await page.locator("pre[data-log-node]").last().textContent()).includes("deployed bundle-"), "the reused output");
  });

  await check("approve a waiting approval", async () => {
    await page.goto(`${base}${P}/pipelines/gated_release/run`);
    await page.getByRole("button", { name: "Run Pipeline" }).click();
    await page.waitForURL(/\/executions\/[0-9A-Z]+$/);
    // The page follows the stream: once the step waits, the approval form appears without a manual reload.
    const approve = page.getByRole("button", { name: "Approve" });
    await approve.waitFor({ timeout: 30_000 });
    await shot(page, "approval");
    await page.getByLabel("Comment").fill("ship it");
    await approve.click();
    await waitFinal(page, "Success");
  });

  await check("a failed step waits for a person: Mark as Success", async () => {
    await page.goto(`${base}${P}/pipelines/smoke_check/run`);
    await page.getByRole("button", { name: "Run Pipeline" }).click();
    await page.waitForURL(/\/executions\/[0-9A-Z]+$/);
    const mark = page.getByRole("button", { name: "Mark as Success" });
    await mark.waitFor({ timeout: 30_000 });
    await page.getByText("Manual intervention: curl failed").waitFor();
    await mark.click();
    await waitFinal(page, "Success");
    assert((await page.locator('[data-node] .badge', { hasText: "Success" }).count()) >= 1, "the step marked Success");
  });

  await check("a run asks for runtime inputs while it goes (.executionInput())", async () => {
    await page.goto(`${base}${P}/pipelines/canary_release/run`);
    await page.getByText("asked while the run goes").first().waitFor();
    await page.getByRole("button", { name: "Run Pipeline" }).click();
    await page.waitForURL(/\/executions\/[0-9A-Z]+$/);
    // The page follows the stream: when the stage asks, its form appears without a manual reload.
    await page.getByRole("heading", { name: "Runtime inputs needed: Canary" }).waitFor({ timeout: 30_000 });
    await shot(page, "execution-input");
    await page.getByLabel("pipeline.stages.canary.variables.traffic_percent").selectOption("10");
    await page.getByRole("button", { name: "Submit" }).click();
    const ticket = page.getByLabel(/CHANGE_TICKET/);
    await ticket.waitFor({ timeout: 30_000 });
    await ticket.fill("CHG-77");
    await page.getByRole("button", { name: "Submit" }).click();
    await waitFinal(page, "Success");
    await page.getByText("given by admin at").first().waitFor();
  });

  await check("dark theme from the system setting", async () => {
    await page.emulateMedia({ colorScheme: "dark" });
    await page.goto(`${base}${P}/pipelines/build_test_deploy`);
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert(bg !== "rgb(247, 248, 250)", `dark background, got ${bg}`);
    await shot(page, "pipeline-dark");
    await page.emulateMedia({ colorScheme: "light" });
  });

  await check("admin pages: a secret's value is write-only, a new token is shown once", async () => {
    await page.goto(`${base}${P}`);
    await page.getByRole("link", { name: "Project Settings" }).click();
    await page.getByRole("link", { name: "Secrets" }).click();
    await page.getByLabel("Identifier", { exact: true }).fill("registry_password");
    await page.getByLabel("Name", { exact: true }).fill("Registry password");
    await page.getByLabel("Value", { exact: true }).fill("s3cr3t-value-xyz");
    await page.getByRole("button", { name: "Save" }).click();
    await page.getByRole("cell", { name: "Registry password", exact: true }).waitFor();
    assert(!(await page.content()).includes("s3cr3t-value-xyz"), "the value is never shown");
    await page.getByRole("link", { name: "Access Control" }).click();
    await page.getByRole("link", { name: "API Tokens" }).click();
    await page.getByLabel("Name", { exact: true }).fill("laptop");
    await page.getByRole("button", { name: "Create token" }).click();
    const token = await page.getByLabel("New token").inputValue();
    assert(token.startsWith("pw_"), token);
    await shot(page, "tokens");
    await page.goto(`${base}/access/tokens`);
    assert(!(await page.content()).includes(token), "shown once");
    assert((await page.getByRole("cell", { name: "laptop", exact: true }).count()) === 1, "listed by name");
  });

  await check("a viewer sees no Run button, and a forged run is refused", async () => {
    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL(/\/login/);
    await login(page, process.env.VIEWER, process.env.VIEWER_PASSWORD);
    await page.goto(`${base}${P}/pipelines/build_test_deploy`);
    await page.getByRole("link", { name: "Execution History" }).waitFor();
    assert((await page.getByRole("link", { name: "Run", exact: true }).count()) === 0, "no Run button");
    assert((await page.locator("details.advanced").count()) === 0, "no Advanced Options");
    const csrf = await page.locator('meta[name="csrf-token"]').getAttribute("content");
    const forged = await page.request.post(`${base}${P}/pipelines/build_test_deploy/run`, {
      form: { csrf, scope: "all" },
      maxRedirects: 0,
    });
    assert(forged.status() === 403, `forged run: ${forged.status()}`);
    const noCsrf = await page.request.post(`${base}${P}/pipelines/build_test_deploy/settings`, {
      form: { allowStageExecutions: "false" },
      maxRedirects: 0,
    });
    assert(noCsrf.status() === 403, `no CSRF token: ${noCsrf.status()}`);
    await page.goto(unitRun);
    assert((await page.getByRole("link", { name: "Re-run" }).count()) === 0, "no Re-run for a viewer");
  });

  await check("logging out ends the session on the server", async () => {
    const before = (await context.cookies()).find((c) => c.name === "pw_session").value;
    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL(/\/login/);
    const resp = await page.request.get(`${base}/api/v1/auth/whoami`, { headers: { Authorization: `Bearer ${before}` } });
    assert(resp.status() === 401, `the old session's token still works: ${resp.status()}`);
  });

  await check("usable on a 390 px wide screen", async () => {
    const small = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const p = await small.newPage();
    await login(p, "admin", process.env.ADMIN_PASSWORD);
    await p.goto(`${base}${P}/pipelines/build_test_deploy/run`);
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 0, `the run dialog overflows by ${overflow}px`);
    await p.screenshot({ path: join(shots, "phone-run-dialog.png"), fullPage: true });
    for (const path of [`${P}/pipelines/build_test_deploy`, `${P}/executions`, depRun.replace(base, "")]) {
      await p.goto(`${base}${path}`);
      const over = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert(over <= 0, `${path} overflows by ${over}px`);
    }
    await p.screenshot({ path: join(shots, "phone-execution.png"), fullPage: true });
    await small.close();
  });

  assert(errors.length === 0, `script errors on the pages: ${errors.join("; ")}`);
  console.log("all browser checks passed");
} catch {
  process.exitCode = 1;
} finally {
  await browser.close();
}
if (failures) process.exitCode = 1;
