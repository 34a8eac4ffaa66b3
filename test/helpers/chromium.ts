/**
 * Debian's Chromium, driven by playwright-core, for the browser tests: headless, no sandbox (tests
 * run as root in containers), nothing running in the background that could reach the network.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { type Browser, type BrowserContext, chromium } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";
export const haveChromium = existsSync(CHROMIUM);

/**
 * Whether a browser suite must be skipped: false when Chromium is there. Under CI=true a missing
 * Chromium is a failed test (.ci/run installs it), never a skip; elsewhere the suite is skipped
 * with a loud message. Returns the skip reason.
 */
export function chromiumMissing(suite: string): string | false {
  if (haveChromium) return false;
  if (process.env.CI === "true")
    test(`${suite}: chromium is installed at ${CHROMIUM}`, () =>
      assert.fail(`${CHROMIUM} is missing under CI=true: install Debian's chromium package (see .ci/run)`));
  else
    process.stderr.write(
      `\n*** SKIPPING ${suite}: ${CHROMIUM} is missing (apt-get install chromium). ***\n\n`,
    );
  return `${CHROMIUM} is missing`;
}

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export function launchChromium(
  profileDir: string,
  options: { viewport?: { width: number; height: number } } = {},
): Promise<BrowserContext> {
  return chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    ...options,
    timeout: 60_000,
  });
}

/** A browser whose contexts are separate people (each `newContext()` its own cookies). */
export function launchChromiumBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 60_000 });
}
