// /sdk.js on a merchant's site, in a real browser: the click id from the landing URL is kept
// in a first-party cookie for the configured days, and Checkout reads it on a later page.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startBrowser, startHub } from './hub.mjs';

const CLICK = 'clk_01JB3Z3C5D7E9F1G3H5J7K9M1N';
let hub;
let browser;
let shop;
let shopUrl;

before(async () => {
  hub = await startHub();
  browser = await startBrowser();
  // The merchant's site, on another origin than the hub.
  shop = http.createServer((request, response) => {
    response.setHeader('content-type', 'text/html; charset=utf-8');
    response.end(`<!doctype html><title>shop</title>
      <script src="${hub.url}/sdk.js" data-days="7"></script>
      <p>${new URL(request.url, 'http://x').pathname}</p>`);
  });
  await new Promise((resolve) => shop.listen(0, '127.0.0.1', resolve));
  shopUrl = `http://127.0.0.1:${shop.address().port}`;
});

after(async () => {
  await browser?.stop();
  await hub?.stop();
  shop?.close();
});

test('the landing page keeps the click id for data-days and Checkout reads it later', async () => {
  const page = await browser.context.newPage();
  await page.goto(`${shopUrl}/landing?utm_source=blog&click_id=${CLICK}`);
  assert.equal(await page.evaluate(() => window.Switchyard.clickId()), CLICK);

  await page.goto(`${shopUrl}/checkout`);
  assert.equal(await page.evaluate(() => window.Switchyard.clickId()), CLICK);

  const [cookie] = (await browser.context.cookies(shopUrl)).filter((c) => c.name === 'sy_click_id');
  assert.equal(cookie.value, CLICK);
  assert.equal(cookie.sameSite, 'Lax');
  const days = (cookie.expires - Date.now() / 1000) / 86400;
  assert.ok(days > 6.9 && days <= 7, `kept for ${days} days`);
  await page.close();
});

test('a malformed click id is not kept and does not replace a good one', async () => {
  const page = await browser.context.newPage();
  await page.goto(`${shopUrl}/landing?click_id=clk_not-a-click%3Cscript%3E`);
  assert.equal(await page.evaluate(() => window.Switchyard.clickId()), CLICK);
  await browser.context.clearCookies();
  await page.goto(`${shopUrl}/landing?click_id=clk_01JB3Z3C5D7E9F1G3H5J7K9MIL`);
  assert.equal(await page.evaluate(() => window.Switchyard.clickId()), null);
  await page.close();
});

test('the script is small, cacheable JavaScript', async () => {
  const response = await fetch(`${hub.url}/sdk.js`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /^text\/javascript/);
  assert.match(response.headers.get('cache-control'), /max-age=\d+/);
  const body = await response.text();
  assert.ok(Buffer.byteLength(body) < 2048, `${Buffer.byteLength(body)} bytes`);
});
