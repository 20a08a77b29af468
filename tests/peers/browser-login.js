// Signs in through the edge's real login page in headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core, which brings no browser of its
// own) and prints one JSON line describing what the browser saw.
// Usage: node browser-login.js START_URL USER PASSWORD [PASSWORD ...]
//   Opens START_URL (a gated page, so the edge sends the browser to its login
//   page), then submits the form once per PASSWORD, in order, stopping as soon
//   as the browser leaves the login page. Each submission is one `attempts`
//   entry; the page the browser ends on is `finalUrl`/`finalBody`.
// Env: CHROMIUM overrides the browser binary.
// Exit 0 with the report whenever the browser could be driven; non-zero with a
// message on stderr when something unexpected happened (no browser, timeout...).
const { chromium } = require('playwright-core');

const [startUrl, user, ...passwords] = process.argv.slice(2);
if (!startUrl || !user || passwords.length === 0) {
  process.stderr.write('usage: node browser-login.js START_URL USER PASSWORD [PASSWORD ...]\n');
  process.exit(64);
}

const OVERALL_MS = 90000;
let browser;

const die = async (why) => {
  process.stderr.write(`browser-login: ${why}\n`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
};

const overall = setTimeout(() => die(`gave up after ${OVERALL_MS / 1000} s`), OVERALL_MS);

const isLoginPage = (url) => new URL(url).pathname === '/auth/login';

async function main() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(30000);

  // Every main-frame document response, redirects included, in order.
  const navigations = [];
  // The last non-redirect document response: the page being shown.
  let shown = null;
  page.on('response', (r) => {
    const req = r.request();
    if (req.resourceType() !== 'document' || r.frame() !== page.mainFrame()) return;
    navigations.push({ method: req.method(), url: r.url(), status: r.status() });
    if (r.status() < 300 || r.status() >= 400) shown = r;
  });
  // Script errors and CSP violations (Chromium reports those as console errors).
  const consoleErrors = [];
  page.on('console', (m) => {
    if (m.type() === 'error') {
      consoleErrors.push({ pageUrl: page.url(), source: m.location().url || null, text: m.text() });
    }
  });
  page.on('pageerror', (e) => {
    consoleErrors.push({ pageUrl: page.url(), source: 'pageerror', text: String(e) });
  });

  const cookies = async () =>
    (await context.cookies()).map((c) => ({
      name: c.name,
      path: c.path,
      httpOnly: c.httpOnly,
      sameSite: c.sameSite,
      secure: c.secure,
      session: c.expires === -1,
    }));
  const alertText = async () => {
    const alert = page.getByRole('alert');
    return (await alert.count()) > 0 ? (await alert.first().innerText()).trim() : null;
  };

  const first = await page.goto(startUrl, { waitUntil: 'load' });
  if (!first) return die(`no response for ${startUrl}`);
  const loginUrl = page.url();
  const loginStatus = first.status();
  const loginTitle = await page.title();

  const attempts = [];
  for (const password of passwords) {
    if (!isLoginPage(page.url())) break;
    await page.getByLabel('User name', { exact: true }).fill(user);
    await page.getByLabel('Password', { exact: true }).fill(password);
    // The page has no script: submitting is a plain form POST and a full navigation.
    const committed = page.waitForEvent('framenavigated', (f) => f === page.mainFrame());
    await page.getByRole('button', { name: 'Sign in' }).click();
    await committed;
    await page.waitForLoadState('load');
    attempts.push({
      url: page.url(),
      status: shown ? shown.status() : null,
      errorText: isLoginPage(page.url()) ? await alertText() : null,
      userField: isLoginPage(page.url())
        ? await page.getByLabel('User name', { exact: true }).inputValue()
        : null,
      cookies: await cookies(),
    });
  }

  const report = {
    loginUrl,
    loginStatus,
    loginTitle,
    attempts,
    finalUrl: page.url(),
    finalStatus: shown ? shown.status() : null,
    // As received; the DOM's text if Chromium no longer holds the body.
    finalBody: shown
      ? await shown.text().catch(() => page.evaluate(() => document.body.innerText))
      : null,
    navigations,
    consoleErrors,
    cookies: await cookies(),
  };
  await browser.close();
  clearTimeout(overall);
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

main().catch((e) => die(e && e.stack ? e.stack : e));
