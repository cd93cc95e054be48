// Drives Fjord's dashboard in headless Chromium for tests/e2e/dashboard.rs.
// Usage: node dashboard.mjs BASE_URL USER PASSWORD FUNCTION SCREENSHOT_DIR DEAD_CALL_ID
// Prints `READY <json>` once the function's row shows its figures, waits for a line on stdin
// (the test makes more calls meanwhile), prints `CHANGED <json>` once the row's figures change
// without a reload, opens the newest call's page and prints `CALL <json>`, then opens the dead
// call's page, re-drives it from there and prints `DEAD <json>`.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [base, user, password, fn, shots, dead] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const context = await browser.newContext({
    httpCredentials: { username: user, password },
    viewport: { width: 390, height: 844 }, // a phone
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const row = `#functions tr[data-function="${fn}"]`;
  const cell = (field) => page.textContent(`${row} [data-field="${field}"]`);
  const figures = async () => ({
    pending: await cell("pending"),
    p50: await cell("p50"),
    p99: await cell("p99"),
    finished_5m: await cell("finished_5m"),
    calls_per_second: await cell("calls_per_second"),
    workers: await cell("workers"),
    updated: await page.textContent("#updated"),
    chart_lines: await page.locator(`svg[data-chart="${fn}"] polyline`).count(),
    calls: await page.locator(`#calls tr[data-call-id]`).count(),
    wide: await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1),
    errors,
  });
  await page.goto(`${base}/ui/`);
  await page.waitForFunction(
    (sel) => { const c = document.querySelector(sel); return c && c.textContent.trim() !== "" && c.textContent !== "–"; },
    `${row} [data-field="p50"]`, { timeout: 30000 });
  // The calls table and the chart come from their own requests of the same refresh.
  await page.waitForFunction(
    (name) => document.querySelectorAll("#calls tr[data-call-id]").length > 0
      && document.querySelectorAll(`svg[data-chart="${name}"] polyline`).length === 2,
    fn, { timeout: 30000 });
  const first = await figures();
  // The status filter: only the dead call.
  await page.selectOption("#filter-status", "dead");
  await page.waitForFunction(
    () => [...document.querySelectorAll('#calls tr[data-call-id] [data-field="status"]')]
      .every((c) => c.textContent.trim() === "dead")
      && document.querySelectorAll("#calls tr[data-call-id]").length === 1,
    null, { timeout: 30000 });
  first.dead_only = await page.locator("#calls tr[data-call-id]").getAttribute("data-call-id");
  await page.selectOption("#filter-status", "");
  await page.waitForFunction(
    (n) => document.querySelectorAll("#calls tr[data-call-id]").length === n,
    first.calls, { timeout: 30000 });
  console.log("READY " + JSON.stringify(first));
  await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

  const lines = createInterface({ input: process.stdin });
  await new Promise((resolve) => lines.once("line", resolve));
  await page.waitForFunction(
    ([sel, before, calls]) => {
      const c = document.querySelector(sel);
      return c && c.textContent !== before
        && document.querySelectorAll("#calls tr[data-call-id]").length !== calls;
    },
    [`${row} [data-field="finished_5m"]`, first.finished_5m, first.calls], { timeout: 30000 });
  console.log("CHANGED " + JSON.stringify(await figures()));

  const link = page.locator(`#calls tr[data-call-id] a`).first();
  const id = await link.evaluate((a) => a.closest("tr").dataset.callId);
  await link.click();
  await page.waitForFunction(() => {
    const s = document.querySelector("#call-status");
    return s && s.offsetParent !== null && s.textContent.trim() !== "";
  }, null, { timeout: 30000 });
  const call = {
    id,
    hash: await page.evaluate(() => location.hash),
    status: (await page.textContent("#call-status")).trim(),
    attempts: (await page.textContent("#call-attempts")).trim(),
    download: await page.getAttribute("#download-result", "href").catch(() => null),
    overview_hidden: await page.evaluate(() => document.getElementById("overview").offsetParent === null),
    errors,
  };
  await page.screenshot({ path: `${shots}/call.png`, fullPage: true });
  console.log("CALL " + JSON.stringify(call));

  await page.goto(`${base}/ui/#/call/${dead}`);
  await page.waitForFunction(() => {
    const s = document.querySelector("#call-status");
    return s && s.textContent.trim() === "dead" && document.querySelector("#redrive");
  }, null, { timeout: 30000 });
  await page.waitForFunction(
    () => document.querySelectorAll("#callback-log tbody tr").length > 0, null, { timeout: 30000 });
  const callbackRows = await page.locator("#callback-log tbody tr").count();
  const firstOutcome = await page.textContent('#callback-log tbody tr [data-field="outcome"]');
  await page.screenshot({ path: `${shots}/dead-call.png`, fullPage: true });
  await page.click("#redrive");
  await page.waitForFunction(
    () => {
      const t = (document.querySelector("#redrive-result")?.textContent || "").trim();
      return t !== "" && !t.startsWith("Re-driving");
    }, null,
    { timeout: 30000 });
  console.log("DEAD " + JSON.stringify({
    callback_rows: callbackRows,
    first_outcome: firstOutcome,
    redrive: (await page.textContent("#redrive-result")).trim(),
    errors,
  }));
  lines.close();
} finally {
  await browser.close();
}
