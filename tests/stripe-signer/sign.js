// Prints a Stripe-Signature header for the payload on stdin, made by Stripe's own library.
// Usage: node sign.js <secret> <unix timestamp>
const Stripe = require('stripe');

const [secret, timestamp] = process.argv.slice(2);
let payload = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { payload += chunk; });
process.stdin.on('end', () => {
  process.stdout.write(Stripe.webhooks.generateTestHeaderString({
    payload,
    secret,
    timestamp: Number(timestamp),
  }));
});
