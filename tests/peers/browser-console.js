// Drives the edge's built-in console in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core) and prints one JSON report.
// Usage: node browser-console.js BASE_URL USER PASSWORD
//   Opens BASE_URL/console/ (the edge sends the browser to its sign-in page),
//   signs in, waits for the agent cards and the live stream, runs the agent
//   "demo" (the built-in demo flow) and the agent "hooked" (a test webhook;
//   the test posts its events), waits for each run's `done` to appear live,
//   reloads, and reads the history and the replayed log again.
// Env: CHROMIUM overrides the browser binary; SCREENSHOT=path saves a PNG of
// the console after the runs.
const { chromium } = require('playwright-core');

const [base, user, password] = process.argv.slice(2);
if (!base || !user || !password) {
  process.stderr.write('usage: node browser-console.js BASE_URL USER PASSWORD\n');
  process.exit(64);
}

const OVERALL_MS = 100000;
let browser;
const die = async (why) => {
  process.stderr.write(`browser-console: ${why}\n`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
};
setTimeout(() => die(`gave up after ${OVERALL_MS / 1000} s`), OVERALL_MS).unref();

async function card(page, agent) {
  const sel = `#agent-${agent}`;
  return {
    status: await page.getAttribute(sel, 'data-status'),
    log: await page.$$eval(`${sel} .log li`, (els) => els.map((e) => ({ type: e.dataset.type, run: e.dataset.run || null, text: e.textContent }))),
    runs: await page.$$eval(`${sel} .runs tbody tr`, (els) => els.map((e) => ({ run: e.dataset.run, status: e.dataset.status }))),
    result: (await page.textContent(`${sel} .result`)).trim(),
  };
}

async function main() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push({ url: page.url(), text: m.text() }); });
  page.on('pageerror', (e) => consoleErrors.push({ url: page.url(), text: String(e) }));

  await page.goto(`${base}/console/`, { waitUntil: 'load' });
  const loginUrl = page.url();
  await page.getByLabel('User name', { exact: true }).fill(user);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await Promise.all([page.waitForURL(`${base}/console/`), page.getByRole('button', { name: 'Sign in' }).click()]);
  await page.waitForSelector('#agent-demo');
  await page.waitForSelector('#agent-hooked');
  await page.waitForSelector('#stream-state[data-state=open]');
  const who = (await page.textContent('#who')).trim();
  const agents = await page.$$eval('.card', (els) => els.map((e) => e.dataset.agent));

  await page.click('#agent-demo .run');
  await page.waitForSelector('#agent-demo .log li[data-type=started]');
  const demoWhileRunning = await page.getAttribute('#agent-demo', 'data-status');
  await page.waitForSelector('#agent-demo .log li[data-type=step]');
  await page.waitForSelector('#agent-demo .log li[data-type=done]');
  await page.waitForSelector('#agent-demo .runs tbody tr[data-status=done]');
  const demo = await card(page, 'demo');
  demo.whileRunning = demoWhileRunning;

  await page.click('#agent-hooked .run');
  await page.waitForSelector('#agent-hooked .log li[data-type=done]');
  await page.waitForSelector('#agent-hooked .runs tbody tr[data-status=done]');
  const hooked = await card(page, 'hooked');
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });

  await page.reload({ waitUntil: 'load' });
  await page.waitForSelector('#agent-demo .runs tbody tr[data-status=done]');
  await page.waitForSelector('#agent-demo .log li[data-type=done]');
  await page.waitForSelector('#agent-hooked .log li[data-type=done]');
  const afterReload = { demo: await card(page, 'demo'), hooked: await card(page, 'hooked') };

  const report = { loginUrl, finalUrl: page.url(), who, agents, demo, hooked, afterReload, consoleErrors };
  await browser.close();
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exit(0);
}

main().catch((e) => die(e && e.stack ? e.stack : e));
