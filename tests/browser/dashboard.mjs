// Drives the admin dashboard in headless Chromium: waits until the page
// shows what the Rust test (tests/dashboard.rs) set up, pauses and resumes
// an upstream with its button, then writes a screenshot. Usage: node dashboard.mjs ADMIN_URL EXPECT_JSON SCREENSHOT
import { chromium } from "playwright-core";

const [url, expectJson, screenshot] = process.argv.slice(2);
const expect = JSON.parse(expectJson);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  const cell = (row, cls) => `tr[data-route="${row}"] td.${cls}`;
  for (const [cls, want] of Object.entries(expect.route_counts)) {
    await page.waitForFunction(
      ([sel, want]) => document.querySelector(sel)?.textContent === want,
      [cell(expect.route, cls), String(want)],
      { timeout: 15000 },
    );
  }
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent === want,
    [`tr[data-upstream="${expect.upstream}"] td.running`, expect.running],
    { timeout: 15000 },
  );
  const failed = page.locator(`tr[data-job="${expect.failed_job}"]`);
  await failed.waitFor({ timeout: 15000 });
  const text = await failed.textContent();
  if (!text.includes(expect.failed_title)) throw new Error(`failed job row lacks its error: ${text}`);
  const href = await failed.locator("a").getAttribute("href");
  if (!href.endsWith(`/_jobs/${expect.failed_job}`)) throw new Error(`link to the job document: ${href}`);
  // The filter narrows the list to the failed job.
  await page.selectOption('select[name="status"]', "failed");
  await page.waitForFunction(() => {
    const rows = document.querySelectorAll("#jobs tr");
    return rows.length > 0 && [...rows].every((r) => r.dataset.status === "failed");
  }, null, { timeout: 15000 });
  await page.selectOption('select[name="status"]', "");
  await page.waitForFunction(
    (n) => document.querySelectorAll("#jobs tr").length >= n, expect.jobs, { timeout: 15000 });
  // The advisor's suggestion, with the route block to paste.
  const advised = `#advice tr[data-path="${expect.advised}"]`;
  await page.waitForSelector(advised, { timeout: 15000 });
  const block = await page.locator(`${advised} pre.config`).textContent();
  if (!block.includes('mode = "auto"') || !block.includes(`path = "${expect.advised}"`)) {
    throw new Error(`the suggested route: ${block}`);
  }
  // Pause the upstream with its button: the row says so, and so does the
  // admin API; then resume it.
  const upstreamRow = `tr[data-upstream="${expect.upstream}"]`;
  await page.click(`${upstreamRow} button.pause`);
  await page.waitForSelector(`${upstreamRow}.paused button.resume`, { timeout: 15000 });
  const listed = await page.evaluate(async () => (await (await fetch("upstreams")).json()).upstreams);
  if (!listed.some((u) => u.upstream === expect.upstream && u.paused)) {
    throw new Error("GET /upstreams does not show the pause: " + JSON.stringify(listed));
  }
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-paused.png"), fullPage: true });
  await page.click(`${upstreamRow} button.resume`);
  await page.waitForFunction(
    (sel) => { const r = document.querySelector(sel); return r && !r.classList.contains("paused") && r.querySelector("button.pause"); },
    upstreamRow, { timeout: 15000 });
  await page.screenshot({ path: screenshot, fullPage: true });
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  console.log("dashboard ok");
} finally {
  await browser.close();
}
