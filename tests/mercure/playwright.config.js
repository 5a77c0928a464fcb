// Runs one generation of Mercure's conformance suite (upstream/draft or upstream/pre-standard,
// chosen by MERCURE_SUITE) against a running hub at BASE_URL, in the Chromium CHROMIUM names
// (Debian's: Playwright drives it, it downloads no browser). The upstream configuration also
// runs Firefox and WebKit, which need Playwright's own builds of them: not installable here.
const { join } = require("node:path");

const suite = process.env.MERCURE_SUITE;
if (suite !== "draft" && suite !== "pre-standard") {
  throw new Error("MERCURE_SUITE must be draft or pre-standard");
}
if (!process.env.BASE_URL || !process.env.CHROMIUM) {
  throw new Error("BASE_URL (the hub's origin) and CHROMIUM (a chromium binary) are required");
}

module.exports = {
  testDir: join(__dirname, "upstream", suite),
  // The upstream suite's own bounds.
  timeout: 10 * 1000,
  expect: { timeout: 5000 },
  forbidOnly: true,
  retries: 0,
  workers: 1,
  reporter: [["list"], ["json", { outputFile: process.env.MERCURE_REPORT || "report.json" }]],
  use: {
    baseURL: process.env.BASE_URL,
    ignoreHTTPSErrors: true,
    browserName: "chromium",
    launchOptions: {
      executablePath: process.env.CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
    },
  },
};
