// Starts the real `switchyard` binary (SWITCHYARD_BIN) on a fresh SQLite database and a free
// port, and Debian's Chromium through playwright-core with a fresh profile.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export async function startHub() {
  const bin = process.env.SWITCHYARD_BIN;
  if (!bin) throw new Error('set SWITCHYARD_BIN to the switchyard binary');
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-browser-'));
  const child = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--log', 'info'], {
    env: { PATH: process.env.PATH, DATABASE_URL: `sqlite:${join(dir, 'hub.db')}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const url = await new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`the hub did not start: ${seen}`)), 30000);
    child.stderr.on('data', (chunk) => {
      seen += chunk;
      const found = /switchyard listening.*?addr=(\S+)/.exec(seen.replace(/\x1b\[[0-9;]*m/g, ''));
      if (found) {
        clearTimeout(timer);
        resolve(`http://${found[1]}`);
      }
    });
    child.on('exit', (code) => reject(new Error(`the hub exited (${code}): ${seen}`)));
  });
  return {
    url,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function startBrowser() {
  const profile = mkdtempSync(join(tmpdir(), 'switchyard-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
    ],
  });
  return {
    context,
    async stop() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
